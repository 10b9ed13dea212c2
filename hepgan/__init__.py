"""hepgan: fast calorimeter simulation with 3D GANs (the CERN 3DGAN family) in JAX."""

__version__ = "0.1.0"
