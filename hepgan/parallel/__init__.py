"""hepgan.parallel"""
