"""hepgan.physics"""
