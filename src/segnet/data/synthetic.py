"""Procedural darkfield microscopy images: the built-in data for the demo and the tests.

Each sample imitates a darkfield photograph of a blood smear with its per-pixel label mask
(0 background, 1 erythrocyte, 2 spirochete), following what the real data set shows:

* **Background**: darkfield lights only what scatters, so the field is nearly black with a
  blue cast. The condenser lights it unevenly, imitated by a smooth random illumination field
  (a coarse random grid upsampled with a cubic spline). Some photographs are overexposed,
  so the background level varies from near-black to dull grey-blue.
* **Erythrocytes** (label 1): a red blood cell scatters at its edge, so in focus it is a disc
  with a thin bright white-cyan rim and a darker, bluish interior; some show a bright central
  fleck. Out of focus (or seen flat) it is a fully bright, soft blob. Crenated cells have a
  spiky, wavy outline (the radius is modulated around the disc). Cells may touch and may be
  cut off by the image border. The mask covers the whole disc, rim included.
* **Spirochetes** (label 2): thin helical bacteria. Each is a gently curving backbone with a
  short-wavelength sinusoidal wiggle across it (the helix seen from the side), drawn as a
  one-pixel line softened to a 2-3 px bright filament. The mask is that line dilated to
  about 3 px, so the label covers exactly the visible filament. Spirochetes are drawn over
  cells and keep their label where they cross one.
* **Debris** (unlabelled, background): bright specks of a pixel or two, and faint, large,
  out-of-focus blobs, so that "bright" alone does not mean "object".
* **Camera**: a per-image colour balance (blueish, cyan or greenish-white, as the real
  photographs vary), a slight optical blur and sensor noise.

Sizes scale with the image: cell radii are ``size/20 .. size/10`` of the shorter side, so a
256x256 image holds 3-12 cells of radius 13-26 px and 0-4 spirochetes, giving class pixel
frequencies close to the real data (about 86% background, 13% cells, 1% spirochetes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from segnet.core.errors import SegnetError
from segnet.data.pairs import MASK_FOLDERS, write_pair

BACKGROUND, ERYTHROCYTE, SPIROCHETE = 0, 1, 2

# Colour balances seen in the real photographs (R, G, B gains): blueish, cyan, greenish-white.
_COLOUR_BALANCES = np.array(
    [
        [0.80, 0.92, 1.00],
        [0.70, 0.95, 1.00],
        [0.90, 1.00, 0.88],
        [0.95, 0.97, 1.00],
    ]
)
# Hue of each element before the colour balance is applied.
_BACKGROUND_HUE = np.array([0.35, 0.50, 1.00])
_RIM_HUE = np.array([0.85, 0.97, 1.00])
_INTERIOR_HUE = np.array([0.30, 0.40, 1.00])
_SPIROCHETE_HUE = np.array([0.80, 1.00, 0.85])
_DEBRIS_HUE = np.array([0.85, 1.00, 0.80])


def _illumination(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative lighting field around 1 (uneven condenser illumination)."""
    coarse = rng.uniform(0.55, 1.25, size=(4, 4))
    field = ndimage.zoom(coarse, (height / 4, width / 4), order=3, mode="nearest")
    return np.clip(field, 0.3, None)


def _place_cells(height: int, width: int, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """Centres and radii of 3-12 cells that may touch but barely overlap."""
    scale = min(height, width)
    wanted = int(rng.integers(3, 13))
    cells: list[tuple[float, float, float]] = []
    for _ in range(wanted * 8):
        if len(cells) == wanted:
            break
        radius = rng.uniform(scale / 20, scale / 10)
        # Centres may lie slightly outside the frame: real fields cut cells at the border.
        cy = rng.uniform(-0.3 * radius, height + 0.3 * radius)
        cx = rng.uniform(-0.3 * radius, width + 0.3 * radius)
        if all(np.hypot(cy - y, cx - x) > 0.92 * (radius + r) for y, x, r in cells):
            cells.append((cy, cx, radius))
    return cells


def _draw_cell(
    cy: float,
    cx: float,
    radius: float,
    rim: np.ndarray,
    interior: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Add one erythrocyte's rim and interior light to the layers and label its disc."""
    height, width = mask.shape
    margin = radius * 1.3 + 3
    y0, y1 = max(int(cy - margin), 0), min(int(cy + margin) + 1, height)
    x0, x1 = max(int(cx - margin), 0), min(int(cx + margin) + 1, width)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dy, dx = yy - cy, xx - cx
    theta = np.arctan2(dy, dx)
    # Slight ellipticity, and for crenated cells an outline of sharp outward spikes.
    ellipse = 1 + rng.uniform(0, 0.12) * np.cos(2 * (theta - rng.uniform(0, np.pi)))
    if rng.random() < 0.3:
        lobes = int(rng.integers(9, 18))
        spikes = (1 - np.abs(np.sin(lobes / 2 * (theta + rng.uniform(0, np.pi))))) ** 3
        outline = 1 + rng.uniform(0.06, 0.14) * spikes
    else:
        outline = 1.0
    edge = radius * ellipse * outline
    signed = np.hypot(dy, dx) - edge  # distance to the outline in pixels, negative inside
    rim_width = rng.uniform(0.7, 1.5)
    mask[y0:y1, x0:x1][signed <= rim_width] = ERYTHROCYTE

    if rng.random() < 0.15:
        # Out of focus or lying flat: a broad glowing rim around a bright blue body.
        glow = rng.uniform(2.0, 4.0)
        rim[y0:y1, x0:x1] += rng.uniform(0.6, 1.0) * np.exp(-0.5 * ((signed + glow) / glow) ** 2)
        interior[y0:y1, x0:x1] += rng.uniform(0.3, 0.6) / (1 + np.exp(signed / glow))
        return
    # The rim scatters unevenly around the cell, so its brightness varies with the angle.
    unevenness = 1 + sum(rng.uniform(0, 0.25) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (1, 2, 3))
    rim_light = rng.uniform(0.6, 1.0) * np.exp(-0.5 * (signed / rim_width) ** 2) * unevenness
    rim[y0:y1, x0:x1] += rim_light
    body = signed < 0
    interior[y0:y1, x0:x1] += rng.uniform(0.0, 0.12) * body
    if rng.random() < 0.35:
        # A bright central fleck, as in cells lit through their dimple.
        fleck = np.exp(-0.5 * (np.hypot(dy, dx) / (radius * rng.uniform(0.2, 0.45))) ** 2)
        interior[y0:y1, x0:x1] += rng.uniform(0.3, 0.8) * fleck * body


def _slow_wave(steps: np.ndarray, period: float, rng: np.random.Generator) -> np.ndarray:
    """A sine of the given period along a filament, with a random phase."""
    return np.sin(2 * np.pi * steps / period + rng.uniform(0, 2 * np.pi))


def _spirochete_line(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean image of a one-pixel helical filament along a gently curving backbone."""
    scale = min(height, width)
    length = rng.uniform(0.25, 0.65) * scale
    step = 0.4
    steps = np.arange(0, length, step)
    heading = (
        rng.uniform(0, 2 * np.pi)
        + rng.uniform(-1.5, 1.5) * steps / length
        + rng.uniform(0, 0.8) * _slow_wave(steps, rng.uniform(0.5, 1.5) * length, rng)
    )
    spine_y = rng.uniform(0, height) + np.cumsum(np.sin(heading)) * step
    spine_x = rng.uniform(0, width) + np.cumsum(np.cos(heading)) * step
    # The helix seen from the side: a wiggle across the backbone whose wavelength and
    # amplitude drift along the body, so it is not a perfect sine.
    wavelength = rng.uniform(5.0, 10.0) * (1 + 0.3 * _slow_wave(steps, length, rng))
    amplitude = rng.uniform(0.8, 2.0) * (1 + 0.4 * _slow_wave(steps, length / 1.7, rng))
    wiggle = amplitude * np.sin(np.cumsum(2 * np.pi * step / wavelength))
    ys = np.rint(spine_y + wiggle * np.cos(heading)).astype(np.intp)
    xs = np.rint(spine_x - wiggle * np.sin(heading)).astype(np.intp)
    keep = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    line = np.zeros((height, width), dtype=bool)
    line[ys[keep], xs[keep]] = True
    return line


def _debris(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Unlabelled light: small bright specks and a few faint, large out-of-focus blobs."""
    specks = np.zeros((height, width))
    # Some smears are littered with specks, others nearly clean.
    count = int(rng.integers(0, 4 + height * width // rng.choice([2000, 600, 150])))
    speck_rows, speck_cols = rng.integers(0, height, count), rng.integers(0, width, count)
    specks[speck_rows, speck_cols] = rng.uniform(0.3, 1.5, count)
    haze = np.zeros((height, width))
    count = int(rng.integers(0, 4))
    haze[rng.integers(0, height, count), rng.integers(0, width, count)] = 1.0
    blob_sigma = min(height, width) / 25
    # Scaling by sigma squared gives each blob a peak of about 0.03-0.1 whatever its size.
    haze = ndimage.gaussian_filter(haze, blob_sigma) * blob_sigma**2 * rng.uniform(0.2, 0.6)
    return ndimage.gaussian_filter(specks, 0.7) + haze


def generate_sample(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return (image HxWx3 uint8 RGB, mask HxW uint8 with values 0/1/2).

    One synthetic darkfield photograph and its label mask (0 background, 1 erythrocyte,
    2 spirochete); see the module docstring for what each element imitates. All randomness
    comes from ``rng``, so the same generator state gives the same sample.
    """
    if height < 1 or width < 1:
        raise SegnetError(f"synthetic image size must be positive, got {height}x{width}")
    mask = np.zeros((height, width), dtype=np.uint8)
    rim = np.zeros((height, width))
    interior = np.zeros((height, width))
    for cy, cx, radius in _place_cells(height, width, rng):
        _draw_cell(cy, cx, radius, rim, interior, mask, rng)

    spirochetes = np.zeros((height, width))
    for _ in range(int(rng.integers(0, 5))):
        line = _spirochete_line(height, width, rng)
        spirochetes += rng.uniform(0.4, 0.9) * line
        mask[ndimage.binary_dilation(line, iterations=1)] = SPIROCHETE
    # Softening the one-pixel line gives the 2-3 px filament the label covers.
    # The gain restores the peak brightness that the blur spreads out.
    spirochetes = ndimage.gaussian_filter(spirochetes, rng.uniform(0.6, 0.9)) * 2.2

    debris = _debris(height, width, rng)
    background = rng.uniform(0.03, 0.25) * _illumination(height, width, rng)
    image = (
        background[..., None] * _BACKGROUND_HUE
        + rim[..., None] * _RIM_HUE
        + interior[..., None] * _INTERIOR_HUE
        + spirochetes[..., None] * _SPIROCHETE_HUE
        + debris[..., None] * _DEBRIS_HUE
    )
    balance = _COLOUR_BALANCES[rng.integers(len(_COLOUR_BALANCES))] * rng.uniform(0.9, 1.1, 3)
    image = image * balance * rng.uniform(0.85, 1.2)
    image = ndimage.gaussian_filter(image, (rng.uniform(0.3, 0.9),) * 2 + (0,))
    image += rng.normal(0.0, rng.uniform(0.005, 0.03), image.shape)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), mask


def write_dataset(out_dir: str | Path, count: int = 40, size: int = 256, seed: int = 0) -> Path:
    """Write ``count`` synthetic samples in the public dataset's layout and return ``out_dir``.

    Files are ``out_dir/images/NNN.png`` (RGB) and ``out_dir/masks/NNN.png`` (RGB, three
    identical channels holding the class index), numbered from 001 and zero-padded to three
    digits (more when ``count`` > 999). Every image is exactly ``size`` x ``size``. The output is
    deterministic for a given seed, and image k does not depend on ``count``.
    """
    if count < 0:
        raise SegnetError(f"synthetic dataset count must be >= 0, got {count}")
    if size < 1:
        raise SegnetError(f"synthetic image size must be positive, got {size}")
    out_dir = Path(out_dir)
    for folder in ("images", MASK_FOLDERS[0]):  # made even for count 0
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    digits = max(3, len(str(count)))
    # One child seed per file, so a sample is the same whatever the count.
    for number, child in enumerate(np.random.SeedSequence(seed).spawn(count), start=1):
        image, mask = generate_sample(size, size, np.random.default_rng(child))
        write_pair(out_dir, f"{number:0{digits}d}", image, mask)
    return out_dir
