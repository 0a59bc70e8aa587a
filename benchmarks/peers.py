"""Side by side with what a lab would use instead: the same images, the same budget, the same scorer.

    python benchmarks/peers.py --train TRAIN --test TEST --budget 60                  # every peer installed
    python benchmarks/peers.py --train TRAIN --test TEST --budget 60 --install-nnunet # nnU-Net v2 too

TRAIN and TEST are two labelled folders in segnet's layout (``images/`` and ``masks/``). Each peer
trains on all TRAIN images for the same wall-clock budget on this machine, then predicts every TEST
image at its full size, with test-time augmentation as the tool does by default and without; the
predicted masks are scored by ``segnet score``'s code (:mod:`segnet.evaluate.score`) into ``OUT/PEER/scores``
(``segnet report OUT/PEER/scores`` draws them). The peers:

``segnet``      segnet's defaults (``segnet train --time-budget``; every TRAIN image trains, none is held
                out, so best.pt is the last epoch), calibrated as ``segnet train`` does; predicted as
                ``segnet predict`` does (TTA by default).
``segnet-basic`` the same with ``--model segnet-basic``, the paper's SegNet-Basic (the default before the U-Net).
``notebook``    the notebook segnet grew from, as benchmarks/real_darkfield.py trains it (256x256 resized
                images, Adam lr 0.01, 1 - frequency class weights), stopped at the budget; no TTA.
``monai-unet``  MONAI's ``BasicUNet`` inside segnet's recipe: registered as a model of this process
                (:func:`segnet.model.register_model`), then trained, calibrated and predicted exactly as
                ``segnet``, so only the network differs. Needs MONAI where this runs: ``make peers-venv``
                makes ``.venv-peers`` (segnet and MONAI; never segnet's own ``.venv``); run this script
                with ``.venv-peers/bin/python``.
``nnunet``      nnU-Net v2 as its users run it, in its own virtual environment (``--nnunet-venv``;
                created with ``--install-nnunet``, never segnet's): the TRAIN folder converted to its raw
                format (RGB PNG ``_0000`` images, label PNGs), ``nnUNetv2_plan_and_preprocess``, the
                ``2d`` configuration trained on fold ``all`` until the budget ends
                (benchmarks/nnunet_budget_trainer.py), ``nnUNetv2_predict`` (mirroring TTA by default).

Preparing the data (segnet's checks and decoding, the notebook's resizing, nnU-Net's planning and
preprocessing) is outside the budget, as ``--time-budget`` counts from the first training step.
A peer that is not installed is skipped, saying why. Measured per peer: training images per second
(training samples, crops or patches, per second of training), prediction images per second and the
peak resident memory of prediction. Prediction runs in a fresh process per pass, so its memory is
the prediction's alone (``ru_maxrss`` of that process): for segnet, the notebook and the MONAI U-Net
the images per second are timed inside it from the model loaded to the last mask written; for
nnU-Net they are the wall time of its ``nnUNetv2_predict`` command (its start-up and own
preprocessing included, as a user waits for them). Each peer's result goes to ``OUT/PEER/result.json``;
the table and ``OUT/peers.json`` hold every peer measured into OUT for the same folders, budget and
device, by this run or an earlier one (``--peers`` runs some, so the comparison can span sessions),
each with the hardware line of the run that measured it; ``OUT/peers.md`` is the table in Markdown.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import nnunet_budget_trainer
import numpy as np
import torch
from nnunet_budget_trainer import BUDGET_VARIABLE, TRAINER_NAME, TRAINING_FILE
from notebook_segnet import NOTEBOOK_MODEL, register_notebook_segnet
from PIL import Image
from real_darkfield import predict_notebook, train_notebook

from segnet.core.distributed import resolve_device
from segnet.core.hardware import report_hardware
from segnet.core.readback import read_json_as
from segnet.core.runfiles import BEST_CHECKPOINT, HISTORY_FILE
from segnet.data.pairs import find_pairs, image_files, read_image, read_mask
from segnet.evaluate.metrics import EvaluationMetrics
from segnet.evaluate.score import ScoreSettings, make_folder, save_prediction, score_masks
from segnet.evaluate.tables import format_score, text_table
from segnet.model.networks import build_model, register_model
from segnet.model.options import DEFAULT_INFERENCE
from segnet.model.predictor import Predictor
from segnet.plan.config import TrainConfig, load_config
from segnet.plan.spec import ModelSpec
from segnet.train.loop import train

MONAI_MODEL = "monai-basicunet"
MONAI_POOLINGS = 4  # BasicUNet halves its input four times
NOTEBOOK_WEIGHTS = "notebook.pt"
TIMING_FILE = "timing.json"
PREDICTIONS = {True: "predictions", False: "predictions_no_tta"}
SCORES_FOLDER = "scores"
SUMMARY_FILE = "peers.json"
MARKDOWN_FILE = "peers.md"
RESULT_FILE = "result.json"
NNUNET_DATASET_ID = 932  # nnU-Net asks for ids of 500 and above for one's own datasets
NNUNET_DATASET = f"Dataset{NNUNET_DATASET_ID}_SegnetPeers"
NNUNET_CHECKPOINT = "checkpoint_final.pth"
NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
"""nnU-Net's three folders, named by the environment variables that point it at them."""


@dataclass(frozen=True)
class Comparison:
    """What makes results comparable: the same folders, budget and device. Results measured by earlier
    runs into the same OUT for the same comparison are tabled beside this run's (one peer per run fits
    a working session); each keeps the hardware line of the run that measured it."""

    train: str
    test: str
    budget_minutes: float
    device: str


@dataclass
class PeerResult:
    """One row of the table: a peer's scores and speeds (``None``: not measured or undefined)."""

    peer: str
    scores: EvaluationMetrics
    training_images_per_second: float
    prediction_images_per_second: float
    prediction_images_per_second_no_tta: float | None
    peak_prediction_mb: float
    comparison: Comparison
    hardware: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the scores in the layout of ``metrics.json``."""
        entry = {field.name: getattr(self, field.name) for field in fields(self)}
        return entry | {"scores": self.scores.to_dict(), "comparison": asdict(self.comparison)}


@dataclass(frozen=True)
class Bench:
    """What every peer gets: the folders, the budget, the device, the base config and the output folder."""

    train: Path
    test: Path
    budget: float
    device: str
    config: TrainConfig
    out: Path
    nnunet_venv: Path
    install_nnunet: bool

    def work(self, peer: str) -> Path:
        return make_folder(self.out / peer)

    @property
    def comparison(self) -> Comparison:
        return Comparison(str(self.train.resolve()), str(self.test.resolve()), self.budget, self.device)


# ------------------------------------------------------------------------------------------------
# The peers: each trains, then predicts a folder of images in a fresh process
# ------------------------------------------------------------------------------------------------


class Peer:
    """A tool to compare: :meth:`missing` says why it cannot run here (``None``: it can)."""

    name = ""
    default_tta = True

    def missing(self, bench: Bench) -> str | None:
        return None

    def train(self, bench: Bench) -> float:
        """Train on ``bench.train`` within the budget; return training images per second."""
        raise NotImplementedError

    def predict(self, bench: Bench, out: Path, tta: bool) -> tuple[float, float]:
        """Write one class mask per ``bench.test`` image into ``out`` in a fresh process (``peers.py
        predict``, timed inside it); return images per second and the process's peak memory in MB."""
        command = [sys.executable, __file__, "predict", self.name, str(bench.work(self.name)), str(bench.test / "images"), str(out),
                   "--device", bench.device, "--tta" if tta else "--no-tta"]  # fmt: skip
        _, peak = run_measured(command)
        timing = json.loads((out / TIMING_FILE).read_text())
        (out / TIMING_FILE).unlink()  # only masks stay in the folder segnet score reads
        return timing["images"] / timing["seconds"], peak


class SegnetPeer(Peer):
    """segnet's defaults, for the budget."""

    name = "segnet"
    model: str | None = None  # None: the --config's model, else segnet's default

    def train(self, bench: Bench) -> float:
        overrides = {"data": str(bench.train), "out": str(bench.work(self.name) / "run"), "time_budget": bench.budget, "val_fraction": 0.0,
                     "device": bench.device} | ({"model": self.model} if self.model else {})  # fmt: skip
        config = load_config(None, {**bench.config.to_dict(), **overrides})
        run = train(config, overwrite=True)
        with (run / HISTORY_FILE).open(newline="") as handle:
            history = list(csv.DictReader(handle))
        return len(history) * len(find_pairs(bench.train)) / sum(float(row["epoch_seconds"]) for row in history)


class SegnetBasicPeer(SegnetPeer):
    """segnet's recipe with the paper's SegNet-Basic, its default model until the U-Net beat it."""

    name = "segnet-basic"
    model = "segnet-basic"


class MonaiPeer(SegnetPeer):
    """MONAI's BasicUNet in segnet's recipe."""

    name = "monai-unet"
    model = MONAI_MODEL

    def missing(self, bench: Bench) -> str | None:
        try:
            register_monai()
        except ImportError:
            return "MONAI is not installed where this runs (pip install monai; it is no dependency of segnet)"
        return None


class NotebookPeer(Peer):
    """The notebook recipe of benchmarks/real_darkfield.py, for the budget."""

    name = "notebook"
    default_tta = False

    def train(self, bench: Bench) -> float:
        classes = list(bench.config.classes)
        model, trained = train_notebook(
            find_pairs(bench.train), classes, resolve_device(bench.device), budget_minutes=bench.budget
        )
        torch.save({"classes": classes, "weights": model.state_dict()}, bench.work(self.name) / NOTEBOOK_WEIGHTS)
        return trained["images_per_second"]


def register_monai() -> None:
    """Make MONAI's BasicUNet a segnet model of this process (ImportError without MONAI)."""
    from monai.networks.nets import BasicUNet

    register_model(
        MONAI_MODEL,
        MONAI_POOLINGS,
        lambda in_channels, classes: BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=classes),
    )


class NnunetPeer(Peer):
    """nnU-Net v2 in its own virtual environment, trained for the budget (module docstring)."""

    name = "nnunet"

    @staticmethod
    def tool(bench: Bench, name: str) -> str:
        """A command of nnU-Net's virtual environment."""
        return str(bench.nnunet_venv / "bin" / name)

    def missing(self, bench: Bench) -> str | None:
        venv = bench.nnunet_venv
        if bench.install_nnunet and not Path(self.tool(bench, "nnUNetv2_train")).is_file():
            print(f"installing nnU-Net v2 into {venv} (about 6 GB)", flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([self.tool(bench, "pip"), "install", "nnunetv2"], check=True)
        if not Path(self.tool(bench, "nnUNetv2_train")).is_file():
            return f"nnU-Net v2 is not installed in {venv} (--install-nnunet creates that environment and installs it, about 6 GB)"
        return None

    def environment(self, bench: Bench) -> dict[str, str]:
        """This process's environment, with nnU-Net's folders under ``OUT/nnunet``."""
        return {**os.environ, **{folder: str(make_folder(bench.work(self.name) / folder)) for folder in NNUNET_FOLDERS}}

    def train(self, bench: Bench) -> float:
        env = self.environment(bench)
        self.convert(bench, Path(env[NNUNET_FOLDERS[0]]) / NNUNET_DATASET)
        self.add_trainer(bench)
        subprocess.run([self.tool(bench, "nnUNetv2_plan_and_preprocess"), "-d", str(NNUNET_DATASET_ID), "-c", "2d", "--verify_dataset_integrity"],
                       env=env, check=True)  # fmt: skip
        env[BUDGET_VARIABLE] = str(60 * bench.budget)
        subprocess.run([self.tool(bench, "nnUNetv2_train"), str(NNUNET_DATASET_ID), "2d", "all", "-tr", TRAINER_NAME, "-device", self.device(bench)],
                       env=env, check=True)  # fmt: skip
        training = json.loads(next(Path(env[NNUNET_FOLDERS[2]]).rglob(TRAINING_FILE)).read_text())
        return training["samples"] / training["seconds"]

    def predict(self, bench: Bench, out: Path, tta: bool) -> tuple[float, float]:
        env = self.environment(bench)
        command = [self.tool(bench, "nnUNetv2_predict"), "-i", str(Path(env[NNUNET_FOLDERS[0]]) / NNUNET_DATASET / "imagesTs"), "-o", str(out),
                   "-d", str(NNUNET_DATASET_ID), "-c", "2d", "-f", "all", "-tr", TRAINER_NAME, "-chk", NNUNET_CHECKPOINT,
                   "-device", self.device(bench), *([] if tta else ["--disable_tta"])]  # fmt: skip
        seconds, peak = run_measured(command, env)
        for extra in out.glob("*.json"):  # its plans and dataset.json beside the masks
            extra.unlink()
        return len(find_pairs(bench.test)) / seconds, peak

    @staticmethod
    def device(bench: Bench) -> str:
        return resolve_device(bench.device).type  # nnU-Net takes cpu, cuda or mps

    @staticmethod
    def convert(bench: Bench, dataset: Path) -> None:
        """TRAIN and TEST in nnU-Net's raw format: ``imagesTr/STEM_0000.png`` (RGB), ``labelsTr/STEM.png``,
        ``imagesTs/STEM_0000.png`` and ``dataset.json``."""
        classes, palette = list(bench.config.classes), bench.config.palette_by_index()
        for pair in find_pairs(bench.train):
            save_image(read_image(pair.image), make_folder(dataset / "imagesTr") / f"{pair.stem}_0000.png")
            save_prediction(
                read_mask(pair.mask, len(classes), palette), make_folder(dataset / "labelsTr") / f"{pair.stem}.png"
            )
        for pair in find_pairs(bench.test):
            save_image(read_image(pair.image), make_folder(dataset / "imagesTs") / f"{pair.stem}_0000.png")
        labels = {
            "background" if index == 0 else name: index for index, name in enumerate(classes)
        }  # nnU-Net's label 0 is "background"
        description = {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": labels, "numTraining": len(find_pairs(bench.train)),
                       "file_ending": ".png"}  # fmt: skip
        (dataset / "dataset.json").write_text(json.dumps(description, indent=1))

    def add_trainer(self, bench: Bench) -> None:
        """Copy nnunet_budget_trainer.py where nnU-Net looks for trainers, in its own environment."""
        found = subprocess.run([self.tool(bench, "python"), "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
                               check=True, capture_output=True, text=True)  # fmt: skip
        source = Path(nnunet_budget_trainer.__file__)
        (Path(found.stdout.strip()) / "training" / "nnUNetTrainer" / source.name).write_text(source.read_text())


PEER_TYPES = (SegnetPeer, SegnetBasicPeer, NotebookPeer, MonaiPeer, NnunetPeer)
"""Every peer, in the order they run and are tabled."""
PEERS = tuple(peer.name for peer in PEER_TYPES)


def save_image(image: np.ndarray, path: Path) -> None:
    """Write an RGB image as PNG."""
    Image.fromarray(image).save(path)


# ------------------------------------------------------------------------------------------------
# Prediction, in a process of its own (``peers.py predict ...``)
# ------------------------------------------------------------------------------------------------


def predict_folder(peer: str, work: Path, images: Path, out: Path, device: str, tta: bool) -> None:
    """Predict every image of ``images`` into ``out/STEM.png`` with a trained peer; time it into ``out/timing.json``."""
    if peer == NotebookPeer.name:
        saved = torch.load(work / NOTEBOOK_WEIGHTS, weights_only=True)
        register_notebook_segnet()
        model = build_model(ModelSpec(NOTEBOOK_MODEL, len(saved["classes"])))
        model.load_state_dict(saved["weights"])
        on = resolve_device(device)
        model = model.eval().to(on)
        segment: Callable = lambda image: predict_notebook(model, image, on)  # noqa: E731
    else:
        if peer == MonaiPeer.name:
            register_monai()
        predictor = Predictor.from_checkpoint(
            work / "run" / BEST_CHECKPOINT, DEFAULT_INFERENCE.replace(device=device, tta=tta)
        )
        segment = predictor.predict
    make_folder(out)
    paths = image_files(images)
    started = time.perf_counter()
    for path in paths:
        save_prediction(segment(read_image(path)), out / f"{path.stem}.png")
    (out / TIMING_FILE).write_text(json.dumps({"images": len(paths), "seconds": time.perf_counter() - started}))


def run_measured(command: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ``command`` to its end; its wall seconds and its peak resident memory in MB (``ru_maxrss``)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[0]} failed (exit status {process.returncode}): {' '.join(command)}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------------


def measure_peer(peer: Peer, bench: Bench, hardware: dict[str, Any]) -> PeerResult:
    """Train ``peer``, predict the test images with and without TTA (each in a fresh process), score the
    default; the result is also written to ``OUT/PEER/result.json``."""
    print(f"\n== {peer.name}: training for {bench.budget:g} min ==", flush=True)
    training_speed = peer.train(bench)
    speeds, memory = {}, {}
    for tta in dict.fromkeys((peer.default_tta, False)):  # the tool's default first; without TTA where that has it
        speeds[tta], memory[tta] = peer.predict(bench, bench.work(peer.name) / PREDICTIONS[tta], tta)
    scores = score_masks(bench.test, bench.work(peer.name) / PREDICTIONS[peer.default_tta], bench.work(peer.name) / SCORES_FOLDER,
                         ScoreSettings.from_config(bench.config), log=print, progress=False)  # fmt: skip
    result = PeerResult(
        peer.name,
        scores,
        training_speed,
        speeds[peer.default_tta],
        speeds[False] if peer.default_tta else None,
        memory[peer.default_tta],
        bench.comparison,
        hardware,
    )
    (bench.work(peer.name) / RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=1))
    return result


def measured_results(bench: Bench) -> list[PeerResult]:
    """Every peer's result in ``OUT`` for this run's comparison (this run's and earlier runs'), in table order."""
    results = []
    for name in PEERS:
        path = bench.out / name / RESULT_FILE
        if path.is_file() and (result := read_json_as(path, "peer result", PeerResult)).comparison == bench.comparison:
            results.append(result)
    return results


def comparison_rows(results: Sequence[PeerResult], settings: ScoreSettings) -> tuple[list[str], list[list[str]]]:
    """The peers side by side (header, rows): mean and per-class IoU, the thin class's objects and
    presence, speeds, memory."""
    names = settings.class_names
    focus = names[settings.roles.thin[0] if settings.roles.thin else settings.roles.counted[-1]]
    header = ["peer", "mean IoU", *(f"IoU {name}" for name in names), f"{focus} obj recall", "obj precision", "obj F1",
              "img sensitivity", "img specificity", "train img/s", "predict img/s", "without TTA", "predict peak MB"]  # fmt: skip
    rows = []
    for result in results:
        scores = result.scores
        objects, presence = scores.objects[focus], scores.presence[focus]
        rows.append([
            result.peer, format_score(scores.mean_iou), *(format_score(scores.per_class[name].iou) for name in names),
            *map(format_score, (objects.recall, objects.precision, objects.f1)),
            format_score(presence.sensitivity), format_score(presence.specificity),
            format_score(result.training_images_per_second, 2), format_score(result.prediction_images_per_second, 2),
            format_score(result.prediction_images_per_second_no_tta, 2), f"{result.peak_prediction_mb:.0f}",
        ])  # fmt: skip
    return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The table in Markdown, as the README shows it."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "predict":
        predict_folder(args.peer, args.work, args.images, args.out, args.device, args.tta)
        return
    hardware = report_hardware(print, args.device)
    config = load_config(args.config)
    bench = Bench(
        args.train, args.test, args.budget, args.device, config, args.out, args.nnunet_venv, args.install_nnunet
    )
    peers = {peer.name: peer() for peer in PEER_TYPES}
    skipped = {name: reason for name in args.peers if (reason := peers[name].missing(bench)) is not None}
    for name, reason in skipped.items():
        print(f"skipping {name}: {reason}", flush=True)
    for name in args.peers:
        if name not in skipped:
            measure_peer(peers[name], bench, hardware)
    results = measured_results(bench)
    header, rows = comparison_rows(results, ScoreSettings.from_config(config))
    table = text_table(header, rows) if results else "no peer ran"
    (make_folder(args.out) / MARKDOWN_FILE).write_text(markdown_table(header, rows))
    summary = {**asdict(bench.comparison), "results": [result.to_dict() for result in results],
               "skipped": skipped}  # fmt: skip
    (make_folder(args.out) / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    print(f"\n{len(find_pairs(args.test))} test images, {args.budget:g} min of training each on {args.device}\n{table}")
    for line in dict.fromkeys(result.hardware["line"] for result in results):
        print(f"{', '.join(result.peer for result in results if result.hardware['line'] == line)}: {line}")
    print(f"\nsummary: {args.out / SUMMARY_FILE}; scores per peer: {args.out}/PEER/{SCORES_FOLDER}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    worker = commands.add_parser(
        "predict", help="(used by the benchmark) predict a folder with a trained peer, in a process of its own"
    )
    worker.add_argument("peer", choices=[name for name in PEERS if name != NnunetPeer.name])
    for name in ("work", "images", "out"):
        worker.add_argument(name, type=Path)
    worker.add_argument("--device", default="cpu")
    worker.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--train", type=Path, help="labelled folder the peers train on (images/, masks/)")
    parser.add_argument("--test", type=Path, help="labelled folder the peers are scored on")
    parser.add_argument(
        "--budget", type=float, default=60.0, help="wall-clock minutes of training per peer (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/peers"), help="output folder (default: %(default)s)")
    parser.add_argument(
        "--peers",
        nargs="*",
        choices=PEERS,
        default=list(PEERS),
        help="peers to run (default: all; none: only table the peers OUT holds for this comparison)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto, for every peer (default: %(default)s)")
    parser.add_argument("--config", type=Path, help="segnet YAML config: classes, roles, palette, and segnet's options")
    parser.add_argument(
        "--nnunet-venv",
        type=Path,
        default=Path("runs/peers_venv"),
        help="nnU-Net's own virtual environment (default: %(default)s)",
    )
    parser.add_argument(
        "--install-nnunet",
        action="store_true",
        help="create --nnunet-venv and pip install nnunetv2 into it (about 6 GB)",
    )
    args = parser.parse_args(argv)
    if args.command is None and (args.train is None or args.test is None):
        parser.error("--train and --test are required")
    return args


if __name__ == "__main__":
    main()
