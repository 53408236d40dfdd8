"""The stable public path of the PPM (DESIGN.md); the code is pipeline.models.ppm."""

from pipeline.models.ppm import PPM

__all__ = ["PPM"]
