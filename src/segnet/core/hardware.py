"""The machine a figure was measured on, in one line: every timing names its hardware.

Speeds differ tens of times between CPUs that compute bfloat16 natively (AVX512-BF16, AMX) and
those that do not, so a time without its machine misleads. :func:`describe_hardware` gives the
CPU model, the cores this process may use, the SIMD level torch dispatches to
(``torch.backends.cpu.get_cpu_capability()``), the device, and the compute dtype the defaults
(or ``--amp``/``--no-amp``) pick there, with the reason. The benchmarks print its line and write
its fields into their JSON; ``segnet train`` and ``segnet demo`` log the line at start.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from segnet.core.distributed import compute_dtype, resolve_device

_CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Hardware:
    """What a timing was measured on (see the module docstring)."""

    cpu: str
    cores: int
    torch_threads: int
    cpu_capability: str
    device: str
    compute_dtype: str
    dtype_reason: str

    def line(self) -> str:
        """E.g. ``hardware: AMD EPYC, 2 cores (2 torch threads), torch CPU capability AVX2, device cpu; CPU without native bf16: float32``."""
        return (
            f"hardware: {self.cpu}, {self.cores} cores ({self.torch_threads} torch threads), torch CPU capability "
            f"{self.cpu_capability}, device {self.device}; {self.dtype_reason}: {self.compute_dtype}"
        )

    def as_dict(self) -> dict[str, Any]:
        """The fields and the line, for a benchmark's JSON."""
        return {**asdict(self), "line": self.line()}


def cpu_model() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` on Linux), else what the platform says."""
    if _CPUINFO.is_file():
        for line in _CPUINFO.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """The cores this process may run on (its affinity: a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def describe_hardware(device: str | torch.device = "cpu", amp: bool | None = None) -> Hardware:
    """The hardware of this process, and the compute dtype training picks on ``device`` (``auto`` as training resolves it) for ``amp`` (``None``: the default)."""
    device = resolve_device(device) if isinstance(device, str) else device
    shown = str(device)
    if device.type == "cuda":
        shown += f" ({torch.cuda.get_device_name(device)})"
    choice = compute_dtype(device, amp)
    return Hardware(
        cpu_model(),
        usable_cores(),
        torch.get_num_threads(),
        torch.backends.cpu.get_cpu_capability(),
        shown,
        choice.name,
        choice.reason,
    )


def report_hardware(
    log: Callable[[str], None], device: str | torch.device = "cpu", amp: bool | None = None
) -> dict[str, Any]:
    """Log the hardware line (a benchmark's first line of output); return its fields for the benchmark's JSON."""
    hardware = describe_hardware(device, amp)
    log(hardware.line())
    return hardware.as_dict()
