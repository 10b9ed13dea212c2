"""hepgan.bench"""
