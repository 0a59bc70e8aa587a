"""Write a dataset's splits as labelled folders of links: the split `segnet train` makes, or the fine-tuning one.

    python tools/split_folders.py --data ../shared/darkfield --seed 0 --out SEED0
    python tools/split_folders.py --data ../shared/darkfield --last 60 --out LOWMAG

The first makes ``SEED0/train/{images,masks}`` and ``SEED0/test/{images,masks}``: links to the images and
masks of ``--data``, divided by :func:`segnet.data.pairs.split_pairs` with the training defaults' held-out
share and the given seed (so ``SEED0/test`` holds the images a run with ``--seed 0`` validates on). The
README's per-split figures (peers, results) train on ``SEED/train`` with ``--val-fraction 0`` and score
``SEED/test`` with ``--split all``.

``--last N`` makes the fine-tuning split of the built-in model's card instead: ``base`` (every image but
the last N by file name), and the last N alternately into ``tune`` (the first, third, ...) and ``test``;
in the public darkfield dataset the last 60 are mostly low magnification. Nothing is copied; an
existing ``--out`` is refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from segnet.data.pairs import Pair, find_pairs, split_pairs
from segnet.plan.config import TrainConfig

SIDES = ("train", "test")
FINE_TUNING_SIDES = ("base", "tune", "test")


def link_pairs(pairs: list[Pair], folder: Path) -> None:
    """Link each pair's image and mask into ``folder``, keeping the source's folder and file names."""
    for pair in pairs:
        for source in (pair.image, pair.mask):
            target = folder / source.parent.name / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source.resolve())


def main() -> None:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/darkfield"), help="labelled folder to split")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the split (as segnet train --seed)")
    parser.add_argument(
        "--val-fraction", type=float, default=defaults.val_fraction, help="held-out share (as segnet train)"
    )
    parser.add_argument(
        "--last", type=int, help="the fine-tuning split instead: base/, and the last N for tune/ and test/"
    )
    parser.add_argument("--out", type=Path, required=True, help="new folder for the split's folders")
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} already exists; choose a new folder")
    pairs = find_pairs(args.data)
    if args.last is not None:
        if not 2 <= args.last < len(pairs):
            parser.error(f"--last must be from 2 to {len(pairs) - 1} (the data has {len(pairs)} images)")
        last = pairs[-args.last :]
        sides = dict(zip(FINE_TUNING_SIDES, (pairs[: -args.last], last[0::2], last[1::2]), strict=True))
    else:
        sides = dict(zip(SIDES, split_pairs(pairs, args.val_fraction, args.seed), strict=True))
    for side, members in sides.items():
        link_pairs(members, args.out / side)
        print(f"{args.out / side}: {len(members)} images")


if __name__ == "__main__":
    main()
