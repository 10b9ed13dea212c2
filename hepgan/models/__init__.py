"""hepgan.models"""
