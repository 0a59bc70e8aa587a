"""How a segmentation looks in napari: the layers' names, colours and hover text (widget and reader alike).

The classes layer uses the project's class colours (:func:`segnet.predict.class_palette`:
erythrocytes red, spirochetes green), the background transparent so the darkfield image shows
through, and names each pixel's class on hover. The objects layer draws each counted object's
outline in its own colour over it, so split touching cells can be told apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from segnet.data.palette import class_palette
from segnet.predict.pictures import UNCERTAINTY_COLORMAP

CLASSES_SUFFIX, OBJECTS_SUFFIX, UNCERTAINTY_SUFFIX = " classes", " objects", " uncertainty"
CLASSES_OPACITY = 0.5  # the cells' own darkfield rim stays visible under the class colour
OBJECT_CONTOUR_PX = 2  # the widget draws objects as outlines (napari sets this on a layer, not in add_labels)


def classes_layer(
    mask: np.ndarray, class_names: Sequence[str], image_name: str
) -> tuple[np.ndarray, dict[str, Any], str]:
    """The class mask as napari layer data: ``(data, keyword arguments, "labels")``."""
    # pandas and napari come with the viewer, not with segnet
    import pandas as pd
    from napari.utils.colormaps import DirectLabelColormap

    colours: dict[int | None, Any] = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for index, rgb in enumerate(class_palette(len(class_names))[1:], start=1):
        colours[index] = (*(rgb / 255.0), 1.0)
    features = pd.DataFrame({"index": range(len(class_names)), "class": list(class_names)})
    kwargs = {
        "name": image_name + CLASSES_SUFFIX,
        "colormap": DirectLabelColormap(color_dict=colours),
        "features": features,
        "opacity": CLASSES_OPACITY,
    }
    return mask, kwargs, "labels"


def objects_layer(
    labels: np.ndarray, object_classes: Sequence[int], class_names: Sequence[str], image_name: str
) -> tuple[np.ndarray, dict[str, Any], str]:
    """The object label image as napari layer data; hovering an object names its id and class."""
    # pandas comes with the viewer, not with segnet
    import pandas as pd

    features = pd.DataFrame(
        {"index": range(len(object_classes) + 1), "class": [class_names[0], *(class_names[c] for c in object_classes)]}
    )
    return labels, {"name": image_name + OBJECTS_SUFFIX, "features": features}, "labels"


def uncertainty_layer(entropy: np.ndarray, num_classes: int, image_name: str) -> tuple[np.ndarray, dict[str, Any], str]:
    """Predictive entropy as an image, black (certain) to bright at ``log(C)``, the largest entropy."""

    top = math.log(num_classes) if num_classes > 1 else 1.0
    kwargs = {
        "name": image_name + UNCERTAINTY_SUFFIX,
        "colormap": UNCERTAINTY_COLORMAP,
        "contrast_limits": (0.0, top),
        "blending": "additive",
        "visible": False,
    }
    return entropy, kwargs, "image"
