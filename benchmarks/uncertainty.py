"""Is Monte Carlo dropout uncertainty high where the model is wrong? Measured on held-out images.

    segnet train --data ../shared/darkfield --out runs/uncertainty/bayesian-segnet-basic \\
        --model bayesian-segnet-basic --epochs 12 --val-every 6
    python benchmarks/uncertainty.py --checkpoint runs/uncertainty/bayesian-segnet-basic/best.pt \\
        --data ../shared/darkfield --mc-samples 8

Each held-out image of the run's split.json is predicted with ``--mc-samples`` stochastic passes
(Bayesian SegNet: dropout kept on at test time). Per pixel, the predictive entropy of the
averaged softmax is the uncertainty. The table compares its mean over the wrongly and the rightly
labelled pixels (the baseline), per true class and overall, and gives the AUROC of entropy as a
detector of wrong pixels (0.5: no better than chance). The same model's entropy on pure-noise
images of the same sizes shows what an input unlike the training data gets.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from segnet.core.hardware import report_hardware
from segnet.data.pairs import load_pair, select_pairs
from segnet.model.options import InferenceOptions
from segnet.model.predictor import Predictor
from segnet.predict.pictures import predictive_entropy

AUROC_SAMPLE = 2_000_000  # pixels drawn (uniformly, seeded) for the AUROC: sorting every pixel is slow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="a bayesian-* run's best.pt (its folder holds split.json)"
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/darkfield"))
    parser.add_argument("--mc-samples", type=int, default=8, help="stochastic passes per image (default: %(default)s)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, help="JSON results file (default: next to the checkpoint)")
    args = parser.parse_args()
    hardware = report_hardware(print, args.device)

    predictor = Predictor.from_checkpoint(
        args.checkpoint, InferenceOptions(device=args.device, tta=False, mc_samples=args.mc_samples, diameter=None)
    )
    pairs = select_pairs(args.data, "val", args.checkpoint.parent)
    num_classes = predictor.num_classes
    rng = np.random.default_rng(0)
    entropies, wrongs, truths, noise_means, image_means = [], [], [], [], []
    for pair in tqdm(pairs, desc="MC dropout", unit="image"):
        image, truth = load_pair(pair, num_classes)
        proba = predictor.predict_proba(image)
        entropy = predictive_entropy(proba)
        entropies.append(entropy.ravel())
        wrongs.append((proba.argmax(0) != truth).ravel())
        truths.append(truth.ravel())
        image_means.append(float(entropy.mean()))
        noise = rng.integers(0, 256, size=image.shape, dtype=np.uint8)
        noise_means.append(float(predictive_entropy(predictor.predict_proba(noise)).mean()))
    entropy, wrong, truth = np.concatenate(entropies), np.concatenate(wrongs), np.concatenate(truths)

    def row(name: str, selected: np.ndarray) -> dict:
        wrong_here, entropy_here = wrong[selected], entropy[selected]
        sample = rng.choice(entropy_here.size, size=min(AUROC_SAMPLE, entropy_here.size), replace=False)
        both = wrong_here[sample].any() and not wrong_here[sample].all()
        return {
            "pixels": int(selected.sum()),
            "wrong_fraction": float(wrong_here.mean()),
            "entropy_wrong": float(entropy_here[wrong_here].mean()) if wrong_here.any() else None,
            "entropy_right": float(entropy_here[~wrong_here].mean()) if (~wrong_here).any() else None,
            "auroc": float(roc_auc_score(wrong_here[sample], entropy_here[sample])) if both else None,
            "name": name,
        }

    rows = [row("all pixels", np.ones_like(wrong))]
    rows += [row(f"true {name}", truth == index) for index, name in enumerate(predictor.class_names)]
    print(
        f"\n{len(pairs)} held-out images, {args.mc_samples} MC samples; predictive entropy in nats (max ln {num_classes} = {np.log(num_classes):.3f})"
    )
    print(f"{'pixels':<18}{'wrong %':>9}{'H wrong':>10}{'H right':>10}{'ratio':>8}{'AUROC':>8}")
    for r in rows:
        ratio = (
            r["entropy_wrong"] / r["entropy_right"]
            if r["entropy_wrong"] is not None and r["entropy_right"]
            else float("nan")
        )
        fmt = lambda v: f"{v:.3f}" if v is not None else "-"  # noqa: E731
        print(
            f"{r['name']:<18}{100 * r['wrong_fraction']:>9.2f}{fmt(r['entropy_wrong']):>10}{fmt(r['entropy_right']):>10}{ratio:>8.2f}{fmt(r['auroc']):>8}"
        )
    print(
        f"mean entropy per image: held-out images {np.mean(image_means):.3f}, uniform noise of the same sizes {np.mean(noise_means):.3f}"
    )
    out = args.out or args.checkpoint.parent / "uncertainty.json"
    out.write_text(
        json.dumps(
            {
                "hardware": hardware,
                "mc_samples": args.mc_samples,
                "images": len(pairs),
                "rows": rows,
                "mean_entropy_images": float(np.mean(image_means)),
                "mean_entropy_noise": float(np.mean(noise_means)),
            },
            indent=1,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
