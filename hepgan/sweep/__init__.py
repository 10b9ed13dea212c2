"""hepgan.sweep"""
