"""Faults: broken datasets, kill -9, full disks, mismatched or hostile checkpoints, out of memory, Ctrl-C.

Every fault must end in a one-line error naming the file and what to do, and must never cost work
already saved: checkpoints are either as before or fully written.
"""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import tiny_config, train_args
from PIL import Image

import segnet.model.builtin
import segnet.model.checkpoint
import segnet.model.networks
import segnet.train.loop as training
import segnet.train.runfolder as runfolder
from segnet.cli import main
from segnet.core import runfiles
from segnet.core.errors import CheckpointError, SegnetError, is_out_of_memory, out_of_memory
from segnet.core.outputs import TEMPORARY_NAME, atomic_write
from segnet.core.runfiles import (
    BEST_CHECKPOINT,
    BEST_METRICS_FILE,
    CONFIG_FILE,
    CURVES_FILE,
    FINGERPRINT_FILE,
    HISTORY_FILE,
    LAST_CHECKPOINT,
    PLAN_FILE,
    RUN_FILES,
    SPLIT_FILE,
)
from segnet.data.synthetic import write_dataset
from segnet.model.checkpoint import FORMAT_VERSION, Checkpoint
from segnet.model.options import InferenceOptions

PLAIN = InferenceOptions(device="cpu", tta=False, diameter=None)  # the network's own pass


def quiet(*args, **kwargs) -> None:
    pass


def temporaries(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if TEMPORARY_NAME.match(path.name)) if folder.is_dir() else []


def error_line(capsys) -> str:
    """The CLI's error, checked to be one line, last on stderr (after progress bars), without a traceback."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines and [line for line in lines if line.startswith("segnet:")] == lines[-1:], (
        err
    )
    return lines[-1]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Eight 32x32 synthetic pairs, 001..008."""
    return write_dataset(tmp_path / "data", count=8, size=32, seed=1)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """(data, run folder) of a finished one-epoch run."""
    data = write_dataset(tmp_path_factory.mktemp("data"), count=8, size=32, seed=1)
    run = tmp_path_factory.mktemp("run")
    training.train(tiny_config(data, run), overwrite=True, progress_log=quiet)
    return data, run


# ------------------------------------------------------------------------------------------------
# A broken dataset: refused with its problems listed, or trained without them (--skip-bad)


def break_dataset(data: Path) -> None:
    """Twelve problems: a truncated image, a mask value outside the classes, ten masks without images."""
    image = data / "images" / "002.png"
    image.write_bytes(image.read_bytes()[:60])
    Image.fromarray(np.full((32, 32), 7, dtype=np.uint8)).save(data / "masks" / "005.png")
    for index in range(10):
        Image.new("L", (32, 32)).save(data / "masks" / f"extra{index:02d}.png")


@pytest.mark.slow
def test_train_refuses_a_broken_dataset_and_lists_its_problems(data, tmp_path, capsys):
    break_dataset(data)
    run = tmp_path / "run"
    with pytest.raises(SegnetError) as error:
        training.train(tiny_config(data, run), progress_log=quiet)
    lines = str(error.value).splitlines()
    assert lines[0] == f"{data}: 12 problems in the dataset; fix them, or pass --skip-bad to train without those pairs:"
    assert any("002.png: unreadable or truncated image" in line for line in lines)
    assert any("005.png: mask values [7] are outside the 3 classes" in line for line in lines)
    assert len(lines) == 1 + 10 + 1 and lines[-1] == f"  and 2 more; run segnet check {data} to list them all"
    assert not (run / LAST_CHECKPOINT).exists()

    assert main(train_args(data, run)) == 1
    err = capsys.readouterr().err
    assert f"segnet: error: {data}: 12 problems in the dataset" in err and "Traceback" not in err


@pytest.mark.slow
def test_skip_bad_trains_on_the_pairs_without_problems_and_names_the_others(data, tmp_path):
    break_dataset(data)
    run = tmp_path / "run"
    lines = []
    training.train(tiny_config(data, run, skip_bad=True), progress_log=lines.append)
    report = next(line for line in lines if line.startswith("--skip-bad"))
    assert report.startswith("--skip-bad: training on the 6 pairs without problems; left out because of 12 problems:")
    assert "002.png" in report and "005.png" in report
    split = json.loads((run / SPLIT_FILE).read_text())
    assert sorted(split["train"] + split["val"]) == ["001", "003", "004", "006", "007", "008"]
    assert Checkpoint.load(run / LAST_CHECKPOINT).setting("skip_bad") is True


@pytest.mark.slow
def test_a_dataset_with_nothing_usable_is_one_line(tmp_path):
    (tmp_path / "data" / "masks").mkdir(parents=True)
    with pytest.raises(SegnetError, match=r"data: no images/ folder") as error:
        training.train(tiny_config(tmp_path / "data", tmp_path / "run", skip_bad=True), progress_log=quiet)
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------------
# kill -9 at random moments


KILLS = 10
HANG_SECONDS = 300  # only a guard against a hung child: the test waits for events, never for a time


def check_run_folder_after_kill(run: Path, last_epoch: int) -> int:
    """Every checkpoint loads, nothing else looks like one, resume's files parse; returns last.pt's epoch."""
    if not run.is_dir():
        return last_epoch
    assert {path.name for path in run.glob("*.pt")} <= {LAST_CHECKPOINT, BEST_CHECKPOINT}
    for path in run.iterdir():
        assert path.name in RUN_FILES or TEMPORARY_NAME.match(path.name), f"unexpected file {path.name}"
    epochs = {path.name: Checkpoint.load(path).epoch for path in run.glob("*.pt")}  # must never fail
    if SPLIT_FILE in (names := {path.name for path in run.iterdir()}):
        assert set(json.loads((run / SPLIT_FILE).read_text())) == {"train", "val"}
    if CONFIG_FILE in names:
        assert yaml.safe_load((run / CONFIG_FILE).read_text())["model"] == "segnet-basic"
    if LAST_CHECKPOINT not in epochs:
        return last_epoch
    assert epochs[LAST_CHECKPOINT] >= last_epoch, "a kill lost finished epochs"
    # best.pt is written just before last.pt, so it may be one epoch ahead, never more.
    assert epochs.get(BEST_CHECKPOINT, 0) <= epochs[LAST_CHECKPOINT] + 1
    return epochs[LAST_CHECKPOINT]


def wait_for(pattern: re.Pattern, log: Path, process: subprocess.Popen, timeout: float) -> bool:
    """Poll the child's output for ``pattern``; False if it exits or the time runs out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if pattern.search(log.read_text(errors="replace")):
            return True
        time.sleep(0.01)
    return False


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX only")
def test_kill_9_at_any_moment_leaves_every_checkpoint_loadable(tmp_path):
    """SIGKILL a real training process during start-up and training, resuming each time."""
    data = write_dataset(tmp_path / "data", count=8, size=32, seed=2)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "segnet", *train_args(data, run, "--model", "segnet-basic", "--epochs", "500")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    training_started = re.compile(r"^model segnet-basic", re.MULTILINE)
    epoch_finished = re.compile(r"^epoch \d+/500: train loss", re.MULTILINE)  # logged after last.pt is written
    rng = random.Random(0)
    phases: Counter[str] = Counter()
    startup_seconds = [3.0]  # spawn to the first step; measured as the test goes
    last_epoch, kills = 0, 0

    while kills < KILLS:
        log = tmp_path / f"attempt_{kills}.log"
        resume = (run / LAST_CHECKPOINT).is_file()
        with log.open("w") as output:
            process = subprocess.Popen(
                command + ["--resume" if resume else "--overwrite"], stdout=output, stderr=subprocess.STDOUT, env=env
            )
        spawned = time.monotonic()
        if rng.random() < 0.6:  # during training: epochs, validation, checkpoint writes
            if wait_for(training_started, log, process, timeout=HANG_SECONDS):
                startup_seconds.append(time.monotonic() - spawned)
                if last_epoch == 0:  # so that some kill finds finished epochs to keep, however slow the machine
                    wait_for(epoch_finished, log, process, timeout=HANG_SECONDS)
                time.sleep(rng.uniform(0, 1.2))
        else:  # during start-up: imports, the dataset check, resuming, the run folder's files
            time.sleep(rng.uniform(0, float(np.median(startup_seconds))))
        if process.poll() is not None:
            pytest.fail(f"training exited with {process.returncode} before it was killed:\n{log.read_text()[-3000:]}")
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        text = log.read_text(errors="replace")
        phase = "training" if training_started.search(text) else "checking data" if "data:" in text else "start-up"
        phases[phase + (" (resumed run)" if resume else "")] += 1
        if temporaries(run):
            phases["mid-write (left a temporary file)"] += 1
        last_epoch = check_run_folder_after_kill(run, last_epoch)

    # One more start: it must resume, and it removes what the killed writes left behind.
    left_behind = temporaries(run)
    log = tmp_path / "final.log"
    with log.open("w") as output:
        process = subprocess.Popen(command + ["--resume"], stdout=output, stderr=subprocess.STDOUT, env=env)
    resumed = wait_for(training_started, log, process, timeout=HANG_SECONDS)
    process.kill()
    process.wait()
    assert resumed, log.read_text()[-3000:]
    assert f"resuming after epoch {last_epoch}" in log.read_text()
    assert not set(left_behind) & set(temporaries(run))
    print(f"\nkill test: {kills} kills: {dict(phases)}; last.pt reached epoch {last_epoch}")
    assert last_epoch >= 1 and phases.keys() & {"training", "training (resumed run)"}


# ------------------------------------------------------------------------------------------------
# Full disk, read-only folder


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("failure", ["disk full", "read-only"])
def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_previous_checkpoint(
    failure, data, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    if failure == "disk full":
        real_save = torch.save

        def save(state, handle, *args, **kwargs):
            if state.get("epoch") == 2:
                enospc()
            real_save(state, handle, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
        reason = "No space left on device"
    else:
        real_replace = os.replace

        def replace(source, target, *args, **kwargs):
            if Path(target).name in (LAST_CHECKPOINT, BEST_CHECKPOINT) and (run / LAST_CHECKPOINT).exists():
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            real_replace(source, target, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)
        reason = "Read-only file system"

    assert main(train_args(data, run, "--epochs", "2")) == 1
    err = error_line(capsys)
    assert re.fullmatch(
        rf"segnet: error: {re.escape(str(run))}/(best|last)\.pt: could not write checkpoint \({reason}\): "
        r"free some space or choose a writable folder; the previous checkpoint is kept",
        err,
    ), err
    assert Checkpoint.load(run / LAST_CHECKPOINT).epoch == 1
    assert temporaries(run) == []


def test_failed_writes_of_history_curves_and_other_files_name_the_file(tmp_path, monkeypatch):
    history = tmp_path / HISTORY_FILE
    runfolder.append_history(history, {"epoch": 1, "train_loss": "0.5", "lr": "1e-3"})
    real_open = Path.open

    def full_disk_open(self, mode="r", *args, **kwargs):
        if self == history and "a" in mode:
            enospc()
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full_disk_open)
    with pytest.raises(
        SegnetError, match=rf"^{re.escape(str(history))}: could not write training history \(No space left on device\)"
    ):
        runfolder.append_history(history, {"epoch": 2, "train_loss": "0.4", "lr": "1e-3"})
    monkeypatch.undo()

    real_replace = os.replace
    monkeypatch.setattr(
        os,
        "replace",
        lambda source, target: enospc() if Path(target).name == CURVES_FILE else real_replace(source, target),
    )
    with pytest.raises(SegnetError, match=r"curves\.png: could not write training curves \(No space left on device\)"):
        runfolder.write_curves(tmp_path)
    assert temporaries(tmp_path) == []

    target = tmp_path / SPLIT_FILE
    target.write_text("old")
    expected = f"{target}: could not write split (No space left on device): free some space or choose a writable folder; the previous split is kept"
    with pytest.raises(SegnetError, match=f"^{re.escape(expected)}$"):
        with atomic_write(target, "split") as temporary:
            temporary.write_text("new")
            enospc()
    assert target.read_text() == "old" and temporaries(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# The run folder, and checkpoints that do not fit


def test_a_run_folder_holding_a_run_is_refused_at_the_command_line(data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / LAST_CHECKPOINT).write_bytes(b"an earlier run")
    assert main(train_args(data, run)) == 1
    assert (
        error_line(capsys)
        == f"segnet: error: {run}: already holds a run (last.pt); pass --resume to continue it or --overwrite to replace it"
    )
    assert (run / LAST_CHECKPOINT).read_bytes() == b"an earlier run"
    empty = tmp_path / "empty"
    assert main(train_args(data, empty, "--resume")) == 1
    assert "nothing to resume (no last.pt: no epoch finished); start again with --overwrite" in error_line(capsys)
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / BEST_CHECKPOINT).write_bytes(b"a kept best model")
    assert main(train_args(data, kept, "--resume")) == 1
    assert error_line(capsys) == (
        f"segnet: error: {kept}: nothing to resume: last.pt is gone but best.pt is kept; start again with --overwrite, "
        f"or train a new run from it with --init {kept / BEST_CHECKPOINT} --out NEW_RUN"
    )


@pytest.mark.parametrize(
    "kept", [(BEST_CHECKPOINT, HISTORY_FILE, CURVES_FILE, BEST_METRICS_FILE), *((name,) for name in RUN_FILES)]
)
def test_any_file_training_would_replace_makes_a_folder_a_run(kept, data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in kept:
        (run / name).write_bytes(b"kept from an earlier run")
    assert main(train_args(data, run)) == 1
    assert f"{run}: already holds a run ({', '.join(kept)}); pass --resume" in error_line(capsys)
    assert all((run / name).read_bytes() == b"kept from an earlier run" for name in kept)
    assert sorted(path.name for path in run.iterdir()) == sorted(kept)


def test_a_cross_validation_folder_with_only_a_kept_fold_model_is_a_run(data, tmp_path, capsys):
    run = tmp_path / "cv"
    (run / "fold_1").mkdir(parents=True)
    (run / "fold_1" / BEST_CHECKPOINT).write_bytes(b"kept")
    assert main(train_args(data, run, "--folds", "2")) == 1
    assert f"{run}: already holds a run (fold_1); pass --resume" in error_line(capsys)
    (run / "folds.json").write_text(
        json.dumps({"folds": 2, "seed": 0, "stems": [["001", "002", "003", "004"], ["005", "006", "007", "008"]]})
    )
    assert main(train_args(data, run, "--folds", "2", "--resume")) == 1
    assert f"{run / 'fold_1'}: holds a trained model (best.pt) but no last.pt to resume from" in error_line(capsys)
    assert (run / "fold_1" / BEST_CHECKPOINT).read_bytes() == b"kept"


def copy_run_checkpoint(finished_run: tuple[Path, Path], run: Path, **changes) -> Path:
    """A run folder whose last.pt is the finished run's, with ``changes`` to the dict on disk."""
    run.mkdir()
    state = torch.load(finished_run[1] / LAST_CHECKPOINT, weights_only=True)
    state.update(changes)
    torch.save(state, run / LAST_CHECKPOINT)
    return run / LAST_CHECKPOINT


@pytest.mark.slow
def test_resume_refuses_another_class_list(finished_run, tmp_path):
    copy_run_checkpoint(finished_run, tmp_path / "run")
    classes = ["background", "erythrocyte", "spirochete", "leukocyte"]
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint classes \['background', 'erythrocyte', 'spirochete'\] differ from \[.*'leukocyte'\]",
    ):
        training.train(
            tiny_config(finished_run[0], tmp_path / "run", classes=classes, epochs=2), resume=True, progress_log=quiet
        )


def resumable_copy(finished_run: tuple[Path, Path], run: Path) -> Path:
    """A copy of the finished one-epoch run, to resume to a second epoch."""
    shutil.copytree(finished_run[1], run)
    return run


@pytest.mark.slow
def test_resume_on_other_images_is_refused_before_anything_is_written(finished_run, tmp_path, capsys):
    data, _ = finished_run
    run = resumable_copy(finished_run, tmp_path / "run")
    before = {name: (run / name).read_bytes() for name in (CONFIG_FILE, LAST_CHECKPOINT, SPLIT_FILE, FINGERPRINT_FILE)}
    other = write_dataset(tmp_path / "other", count=8, size=32, seed=2)  # the same stems, other images
    assert main(train_args(other, run, "--epochs", "2", "--resume")) == 1
    assert error_line(capsys) == (
        f"segnet: error: {other}: not the data the run in {run} was trained on ({data}): the training images differ "
        "(mean, std, class_frequencies, class_presence_frequencies, images_per_class, class_thickness, class_diameter); "
        "resume with the run's --data, or start a new run"
    )
    assert {name: (run / name).read_bytes() for name in before} == before
    (other / "images" / "003.png").unlink()
    (other / "masks" / "003.png").unlink()
    assert main(train_args(other, run, "--epochs", "2", "--resume")) == 1
    assert f"{run / 'split.json'}: the split names images that are not in the data folder: ['003']" in error_line(
        capsys
    )


@pytest.mark.slow
def test_resume_refuses_a_plan_whose_normalisation_is_not_the_checkpoint_s(finished_run, tmp_path, capsys):
    data, _ = finished_run
    run = resumable_copy(finished_run, tmp_path / "run")
    plan = json.loads((run / PLAN_FILE).read_text())
    plan["mean"] = [0.9, 0.9, 0.9]  # edited
    (run / PLAN_FILE).write_text(json.dumps(plan))
    before = (run / LAST_CHECKPOINT).read_bytes()
    assert main(train_args(data, run, "--epochs", "2", "--resume")) == 1
    assert error_line(capsys).startswith(f"segnet: error: {run / PLAN_FILE}: its normalisation ")
    assert (run / LAST_CHECKPOINT).read_bytes() == before


@pytest.mark.slow
def test_resume_on_the_same_images_moved_elsewhere_goes_on(finished_run, tmp_path):
    run = resumable_copy(finished_run, tmp_path / "run")
    moved = Path(shutil.copytree(finished_run[0], tmp_path / "moved"))
    assert main(train_args(moved, run, "--epochs", "2", "--resume")) == 0
    assert Checkpoint.load(run / LAST_CHECKPOINT).epoch == 2
    assert yaml.safe_load((run / CONFIG_FILE).read_text())["data"] == str(moved)


@pytest.mark.slow
def test_resume_on_its_own_folder_whose_images_changed_goes_on_with_its_normalisation(finished_run, tmp_path):
    run = resumable_copy(finished_run, tmp_path / "run")
    data = Path(shutil.copytree(finished_run[0], tmp_path / "data"))
    trained = Checkpoint.load(run / LAST_CHECKPOINT)
    trained.replace(config={**trained.config, "data": str(data)}).save(run / LAST_CHECKPOINT)  # the run's own folder
    image = data / "images" / f"{json.loads((run / 'split.json').read_text())['train'][0]}.png"
    Image.fromarray(255 - np.asarray(Image.open(image))).save(image)  # a corrected image
    lines = []
    training.train(tiny_config(data, run, epochs=2), resume=True, progress_log=lines.append)
    assert any(line.startswith(f"{data}: the training images changed since the run began (") for line in lines)
    resumed = Checkpoint.load(run / LAST_CHECKPOINT)
    assert (resumed.mean, resumed.std) == (trained.mean, trained.std)


@pytest.mark.slow
def test_a_newer_checkpoint_format_is_refused_by_resume_predict_and_evaluate(finished_run, tmp_path, capsys):
    from segnet.model.predictor import Predictor

    checkpoint = copy_run_checkpoint(finished_run, tmp_path / "run", format_version=FORMAT_VERSION + 1)
    newer = rf"{re.escape(str(checkpoint))}: checkpoint format version {FORMAT_VERSION + 1} is newer than this segnet understands \({FORMAT_VERSION}\); upgrade segnet"
    with pytest.raises(CheckpointError, match=newer):
        training.train(tiny_config(finished_run[0], tmp_path / "run", epochs=2), resume=True, progress_log=quiet)
    with pytest.raises(CheckpointError, match=newer):
        Predictor.from_checkpoint(checkpoint, PLAIN)
    image = next((finished_run[0] / "images").iterdir())
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(checkpoint),
                str(image),
                "--out",
                str(tmp_path / "predictions"),
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    assert re.fullmatch("segnet: error: " + newer, error_line(capsys))
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(finished_run[0]),
                "--split",
                "all",
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    assert re.fullmatch("segnet: error: " + newer, error_line(capsys))


class RunsCodeWhenUnpickled:
    """A pickle payload that creates ``marker`` when loaded by an unrestricted unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("container", ["torch.save", "plain pickle"])
def test_opening_a_checkpoint_never_runs_code_from_it(container, tmp_path):
    marker = tmp_path / "code_ran"
    payload = {
        "format_version": 1,
        "model": RunsCodeWhenUnpickled(marker),
        "model_state": {},
        "class_names": [],
        "normalization": {},
    }
    hostile = tmp_path / "hostile.pt"
    if container == "torch.save":
        torch.save(payload, hostile)
    else:
        hostile.write_bytes(pickle.dumps(payload, protocol=2))  # torch.load's legacy format
    # The payload is live: an unrestricted load runs it.
    pickle.loads(pickle.dumps(payload)).pop("model").close()
    assert marker.exists()
    marker.unlink()

    with pytest.raises(
        CheckpointError, match=rf"^{re.escape(str(hostile))}: not a segnet checkpoint: it holds Python objects \("
    ) as error:
        Checkpoint.load(hostile)
    assert not marker.exists()
    # Never PyTorch's advice to load the file with weights_only=False, which would run the code.
    assert "was not written by this tool" in str(error.value) and "weights_only" not in str(error.value)


def test_a_file_that_is_no_checkpoint_is_named_without_advice_to_load_it_unsafely(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(garbage))}: not a segnet checkpoint") as error:
        Checkpoint.load(garbage)
    assert "weights_only" not in str(error.value)


FORGERIES = {
    "model is a string": (
        {"model": "segnet-basic"},
        "model: Input should be a valid dictionary (found 'segnet-basic')",
    ),
    "model_state is a list": (
        {"model_state": [1, 2]},
        "model_state: Input should be a valid dictionary (found [1, 2])",
    ),
    "normalization is empty": ({"normalization": {}}, "normalization.mean: Field required (found {})"),
    "calibration is a number": ({"calibration": 7}, "calibration: Input should be a valid dictionary (found 7)"),
    "num_classes is text": (
        {"model": {"name": "segnet-basic", "num_classes": "3", "in_channels": 3, "downsample": 1}},
        "model.num_classes: Input should be a valid integer",
    ),
    "std has two numbers": (
        {"normalization": {"mean": [0.1] * 3, "std": [0.2, 0.2]}},
        "normalization.std: List should have at least 3 items",
    ),
    "a tensor for a mean": (  # found by fuzzing: pydantic's strict float takes anything with __float__
        {"normalization": {"mean": [torch.tensor([0.1]), 0.1, 0.1], "std": [0.2] * 3}},
        "normalization.mean.0: Value error, Input should be a number, not Tensor",
    ),
    "a class too many": (
        {"class_names": ["a", "b", "c", "d"]},
        "class_names ['a', 'b', 'c', 'd'] are not 3 distinct names",
    ),
    "format_version is text": (
        {"format_version": "1"},
        "not a segnet checkpoint (format version '1' is not a positive whole number)",
    ),
    "a spec without downsample": (  # every checkpoint has stored it: none is filled in
        {"model": {"name": "segnet-basic", "num_classes": 3, "in_channels": 3}},
        "model.downsample: Field required",
    ),
    "unknown model": (
        {"model": {"name": "resnet", "num_classes": 3, "in_channels": 3, "downsample": 1}},
        "checkpoint of an unknown model 'resnet'; segnet builds segnet, ",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_damaged_or_forged_checkpoint_is_one_line_naming_it(forgery, finished_run, tmp_path, capsys):
    changes, problem = FORGERIES[forgery]
    run = tmp_path / "run"
    checkpoint = copy_run_checkpoint(finished_run, run, **changes)
    (run / SPLIT_FILE).write_text((finished_run[1] / SPLIT_FILE).read_text())
    data = finished_run[0]
    image = str(next((data / "images").iterdir()))
    commands = [
        ["predict", "--checkpoint", str(checkpoint), image, "--out", str(tmp_path / "predictions"), "--device", "cpu"],
        ["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--device", "cpu"],
        ["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "model.onnx")],
        train_args(data, run, "--epochs", "2", "--resume"),
    ]
    for command in commands:
        assert main(command) == 1, command
        line = error_line(capsys)
        assert line.startswith(f"segnet: error: {checkpoint}: ") and problem in line, (command, line)


@pytest.mark.slow
def test_weights_that_are_not_finite_are_refused_naming_the_checkpoint(finished_run, tmp_path, capsys):
    weights = Checkpoint.load(finished_run[1] / BEST_CHECKPOINT).model_state
    name = next(iter(key for key in weights if key.endswith("weight")))
    checkpoint = copy_run_checkpoint(
        finished_run, tmp_path / "run", model_state={**weights, name: weights[name] * math.nan}
    )
    image = str(next((finished_run[0] / "images").iterdir()))
    assert (
        main(["predict", "--checkpoint", str(checkpoint), image, "--out", str(tmp_path / "out"), "--device", "cpu"])
        == 1
    )
    assert (
        error_line(capsys)
        == f"segnet: error: {checkpoint}: damaged checkpoint: the weights {name} hold NaN or infinite values"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"train": ["001", "002"], "val": ["00', "not valid JSON"),
        ('["001", "002"]', 'not a split file: expected {"train": [stems], "val": [stems]}'),
        ('{"train": ["001"], "val": "002"}', 'not a split file: expected {"train": [stems], "val": [stems]}'),
        ('{"train": ["001", "002"], "val": ["002"]}', "lists 002 for both training and validation"),
    ],
)
def test_a_damaged_split_file_is_one_line_naming_it(content, problem, finished_run, tmp_path, capsys):
    data, finished = finished_run
    run = tmp_path / "run"
    copy_run_checkpoint(finished_run, run)
    for name in (BEST_CHECKPOINT, CONFIG_FILE, FINGERPRINT_FILE):
        (run / name).write_bytes((finished / name).read_bytes())
    (run / SPLIT_FILE).write_text(content)
    commands = [
        ["evaluate", "--checkpoint", str(run / BEST_CHECKPOINT), "--data", str(data), "--device", "cpu"],
        ["calibrate", "--checkpoint", str(run / BEST_CHECKPOINT), "--data", str(data), "--device", "cpu"],
        train_args(data, run, "--epochs", "2", "--resume"),
    ]
    for command in commands:
        assert main(command) == 1, command
        line = error_line(capsys)
        assert line.startswith(f"segnet: error: {run / 'split.json'}: ") and problem in line, (command, line)


@pytest.mark.slow
def test_predict_names_the_model_options_it_was_given(finished_run, tmp_path, capsys, monkeypatch):
    image = str(next((finished_run[0] / "images").iterdir()))
    both = ["predict", "--checkpoint", "best.pt", "--onnx", "model.onnx", image, "--out", str(tmp_path)]
    assert main(both) == 1
    assert (
        error_line(capsys)
        == "segnet: error: predict takes one model: --checkpoint RUN/best.pt or --onnx model.onnx, not both"
    )
    # No model given: the built-in one, whose missing file (a broken install) is one line too.
    monkeypatch.setattr(runfiles, "WEIGHTS_DIR", tmp_path / "no_weights")
    assert main(["predict", image, "--out", str(tmp_path)]) == 1
    assert error_line(capsys) == (
        f"segnet: error: built-in model 'darkfield': its weights {tmp_path / 'no_weights' / 'darkfield.pt'} are not installed (reinstall segnet)"
    )


# ------------------------------------------------------------------------------------------------
# Out of GPU memory


def forward_running_out_of_memory(monkeypatch, module, when: str) -> None:
    """Make ``module.build_model``'s models raise CUDA's out-of-memory error in training or eval mode."""
    real_build = segnet.model.networks.build_model

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        real_forward = model.forward

        def forward(images):
            if model.training == (when == "training"):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return real_forward(images)

        model.forward = forward
        return model

    monkeypatch.setattr(module, "build_model", build)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (
            "training",
            "out of memory training at batch size 4 (4 per process) on 32x32 crops: lower --batch-size or --image-size",
        ),
        ("validation", "out of memory validating whole held-out images (up to 32x32 px; validation does not crop)"),
    ],
)
def test_out_of_memory_in_training_names_the_option_to_lower(when, expected, data, tmp_path, monkeypatch):
    forward_running_out_of_memory(monkeypatch, training, when)
    with pytest.raises(SegnetError, match=re.escape(expected) + r".*the last checkpoint is kept$"):
        training.train(tiny_config(data, tmp_path / "run"), progress_log=quiet)


@pytest.mark.slow
def test_out_of_memory_in_predict_and_evaluate_names_the_tile_size(finished_run, tmp_path, monkeypatch, capsys):
    data, run = finished_run
    forward_running_out_of_memory(monkeypatch, segnet.model.checkpoint, "eval")
    image = str(next((data / "images").iterdir()))
    predict = [
        "predict",
        "--checkpoint",
        str(run / BEST_CHECKPOINT),
        image,
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
    ]
    assert main([*predict, "--tile", "32"]) == 1
    assert (
        error_line(capsys) == f"segnet: error: {image}: out of memory at tile size 32 px, 4 tiles per pass: "
        "lower the tile size (--tile) or the tiles per pass (--batch-size)"
    )
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(run / BEST_CHECKPOINT),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "evaluation"),
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    line = error_line(capsys)
    assert line.startswith(f"segnet: error: {data / 'images'}")
    assert ": out of memory segmenting a whole 32x32 px image: " in line
    assert line.endswith("px image: segment it in tiles of 512 px or smaller (--tile; the napari widget's tile size)")


def test_one_out_of_memory_message_names_gpu_memory_only_on_a_gpu():
    assert str(out_of_memory("cuda", "doing this", "lower that")) == "out of GPU memory doing this: lower that"
    assert str(out_of_memory("cpu", "doing this", "lower that")) == "out of memory doing this: lower that"
    assert is_out_of_memory(MemoryError()) and is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    )
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


# ------------------------------------------------------------------------------------------------
# Ctrl-C


def test_ctrl_c_mid_epoch_keeps_last_pt_and_says_how_to_resume(data, tmp_path, monkeypatch, capsys):
    real_build = segnet.model.networks.build_model
    training_steps = []

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        real_forward = model.forward

        def forward(images):
            if model.training:
                training_steps.append(len(images))
                if len(training_steps) == 4:  # epoch 2's second step: 6 training images, batches of 4
                    raise KeyboardInterrupt
            return real_forward(images)

        model.forward = forward
        return model

    monkeypatch.setattr(training, "build_model", build)
    run = tmp_path / "run"
    assert main(train_args(data, run, "--epochs", "2")) == 130
    err = capsys.readouterr().err
    assert (
        "segnet: interrupted; the checkpoints written so far are intact: run the same command with --resume to continue"
        in err
    )
    assert Checkpoint.load(run / LAST_CHECKPOINT).epoch == 1
    monkeypatch.undo()
    assert main(train_args(data, run, "--epochs", "2", "--resume")) == 0
    assert Checkpoint.load(run / LAST_CHECKPOINT).epoch == 2
