"""eclip: product representations from e-commerce catalogues (e-CLIP, CIKM 2022)."""

__version__ = "0.1.0"
