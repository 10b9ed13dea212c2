"""hepgan.data"""
