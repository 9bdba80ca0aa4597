"""ghmdet: Gradient Harmonized single-stage detection experiment suite."""

__version__ = "0.1.0"
