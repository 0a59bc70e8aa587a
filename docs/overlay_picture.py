"""Write docs/overlay.png, the README's first picture: a synthetic darkfield field and what
``segnet predict`` makes of it with the built-in model (the overlay it writes, unchanged), side by side.

    python docs/overlay_picture.py

A synthetic image (``segnet.data.synthetic``, the field of docs/napari.png), since the real darkfield
images stay out of the repository; the overlay is the file ``segnet predict`` writes, made by the
command itself in a temporary folder.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from segnet.core.runfiles import PICTURES
from segnet.data.synthetic import generate_sample

OUT = Path(__file__).parent / "overlay.png"
FIELD_SEED, HEIGHT, WIDTH = 7, 360, 480
GAP = 8  # pixels between the two pictures


def main(out: Path = OUT) -> None:
    with tempfile.TemporaryDirectory() as folder:
        field = Path(folder) / "field.png"
        Image.fromarray(generate_sample(HEIGHT, WIDTH, np.random.default_rng(FIELD_SEED))[0]).save(field)
        subprocess.run(
            [sys.executable, "-m", "segnet", "predict", str(field), "--out", folder, "--overwrite"], check=True
        )
        overlay = Image.open(Path(folder) / f"field_{PICTURES[1]}.png").convert("RGB")  # STEM_overlay.png
        picture = Image.new("RGB", (2 * WIDTH + GAP, HEIGHT), "white")
        picture.paste(Image.open(field).convert("RGB"), (0, 0))
        picture.paste(overlay, (WIDTH + GAP, 0))
    picture.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
