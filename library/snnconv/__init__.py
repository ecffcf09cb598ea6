"""snnconv: ANN-to-SNN conversion library."""
__version__ = "0.1.0"
