"""hepgan.cli"""
