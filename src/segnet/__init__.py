"""SegNet for darkfield microscopy: segment and count red blood cells and spirochetes."""

__version__ = "0.1.0"
