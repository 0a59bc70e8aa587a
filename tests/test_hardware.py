"""The hardware line every figure carries: the compute dtype the defaults pick, and why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segnet.core import distributed
from segnet.core.distributed import compute_dtype
from segnet.core.hardware import describe_hardware, report_hardware
from segnet.plan.config import TrainConfig
from segnet.train.loop import resolve_memory_layout

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("native", "amp", "dtype", "emulated"),
    [
        (True, None, torch.bfloat16, False),
        (False, None, None, False),
        (False, True, torch.bfloat16, True),
        (True, False, None, False),
    ],
)
def test_the_cpu_computes_in_bf16_only_where_it_is_native_unless_forced(monkeypatch, native, amp, dtype, emulated):
    monkeypatch.setattr(distributed, "native_cpu_bf16", lambda: native)
    choice = compute_dtype(CPU, amp)
    assert (choice.dtype, choice.emulated) == (dtype, emulated)
    assert choice.describe() == f"{choice.reason}: {'float32' if dtype is None else 'bfloat16'}"


@pytest.mark.parametrize(
    ("capability", "asked", "channels_last"),
    [
        ("AVX512", None, True),
        ("AVX2", None, False),
        ("DEFAULT", None, False),
        ("AVX2", True, True),
        ("AVX512", False, False),
    ],
)
def test_channels_last_by_default_only_where_it_is_faster(monkeypatch, capability, asked, channels_last):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert resolve_memory_layout(TrainConfig(channels_last=asked), CPU).channels_last is channels_last
    assert distributed.prefers_channels_last(torch.device("cuda"))


def test_a_capped_dispatch_is_no_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not distributed.native_cpu_bf16()


def test_the_hardware_line_names_cpu_cores_simd_and_dtype(monkeypatch):
    monkeypatch.setattr(distributed, "native_cpu_bf16", lambda: False)
    lines = []
    fields = report_hardware(lines.append, "cpu")
    hardware = describe_hardware("cpu")
    assert lines == [hardware.line()] == [fields["line"]]
    assert fields["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and fields["cores"] >= 1
    assert (
        lines[0].endswith("CPU without native bf16: float32")
        and f"{hardware.cores} cores" in lines[0]
        and hardware.cpu in lines[0]
    )


@pytest.mark.slow
def test_a_benchmark_prints_the_hardware_line_and_writes_it_into_its_json(tmp_path):
    """benchmarks/train_speed.py at its smallest: one step of 2 images of 32 px per variant."""
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "train_speed.py"),
            "--crop",
            "32",
            "--batch-size",
            "2",
            "--steps",
            "1",
            "--rounds",
            "1",
            "--workers",
            "0",
            "--no-compile",
            "--json",
            str(tmp_path / "speed.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads((tmp_path / "speed.json").read_text())["hardware"]
    assert result.stdout.splitlines()[0] == written["line"] and written["line"].startswith("hardware: ")
    assert (
        written["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        and written["cpu"] == describe_hardware().cpu
    )
    defaults = next(
        row
        for row in json.loads((tmp_path / "speed.json").read_text())["results"]
        if row["variant"].startswith("defaults")
    )
    assert defaults["dtype"] == written["compute_dtype"]  # the defaults variant trains in what the defaults pick here


def test_every_benchmark_reports_its_hardware():
    scripts = [script for script in sorted(BENCHMARKS.glob("*.py")) if '__name__ == "__main__"' in script.read_text()]
    assert len(scripts) >= 13
    for script in scripts:
        assert "report_hardware(print" in script.read_text(), f"{script.name} does not print the hardware line"
