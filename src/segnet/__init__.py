"""SegNet for darkfield microscopy: segment and count red blood cells and spirochetes."""

__version__ = "0.1.0"

DEFAULT_CLASSES: tuple[str, ...] = ("background", "erythrocyte", "spirochete")
MIN_AREA = 30
"""Objects smaller than this many pixels are not counted (segnet.counting; the CLI's --min-area default)."""
