"""hepgan.train"""
