"""Write docs/napari.png (or the path given after the model), the README's picture of the plugin: the built-in model on a synthetic field.

Run under an X display (``xvfb-run -a python docs/napari_screenshot.py``); a synthetic image,
since the real darkfield images stay out of the repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
import numpy as np
from PIL import Image
from qtpy.QtCore import QEventLoop, QTimer

from segnet.data.synthetic import generate_sample
from segnet.model.builtin import DEFAULT_BUILTIN_MODEL
from segnet.napari.widget import SegmentWidget

OUT = Path(__file__).parent / "napari.png"
WIDTH = 900  # pixels of the saved picture; the README shows it at this size


def main(model: str = DEFAULT_BUILTIN_MODEL, out: str | Path = OUT) -> None:
    viewer = napari.Viewer(title="segnet", show=True)
    viewer.window.resize(1300, 760)
    viewer.add_image(generate_sample(360, 480, np.random.default_rng(7))[0], name="field")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="segnet: Segment", area="right")
    widget.model_edit.setText(model)
    loop = QEventLoop()
    widget.finished.connect(loop.quit)
    widget.start()
    loop.exec()
    viewer.reset_view()
    QTimer.singleShot(500, loop.quit)  # let the canvas draw the new layers
    loop.exec()
    picture = Image.fromarray(viewer.screenshot(canvas_only=False)[..., :3])
    picture.thumbnail((WIDTH, WIDTH))
    picture.save(out, optimize=True)  # RGB: a 256-colour palette turned the few spirochete pixels grey
    viewer.close()
    print(f"{out}: {picture.size[0]}x{picture.size[1]}, {Path(out).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main(*sys.argv[1:])
