"""Device choice, determinism, and the few torch.distributed helpers the training loop needs.

Launched by ``torchrun``, the environment holds RANK, WORLD_SIZE and LOCAL_RANK; otherwise the
process is rank 0 of 1 and every helper here is a no-op.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from segnet.core.errors import SegnetError


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """Map ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` to a device; ``auto`` prefers CUDA."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SegnetError("--device cuda was asked for, but no CUDA GPU is available")
        return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    if name != "cpu":
        raise SegnetError(f"unknown device '{name}' (use auto, cpu or cuda)")
    return torch.device("cpu")


@dataclass(frozen=True)
class ComputeDtype:
    """The dtype training computes in and why: ``dtype`` is the autocast dtype, ``None`` for float32."""

    dtype: torch.dtype | None
    reason: str
    emulated: bool = False  # bfloat16 forced on a CPU that emulates it (tens of times slower than float32)

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")

    def describe(self) -> str:
        """E.g. ``CPU without native bf16: float32``."""
        return f"{self.reason}: {self.name}"


def native_cpu_bf16() -> bool:
    """Whether torch computes bfloat16 natively on this CPU: AVX512-BF16 or AMX, and torch dispatching to AVX-512.

    ``ATEN_CPU_CAPABILITY=avx2`` caps the dispatch, making such a CPU compute as one without them.
    """
    capable = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return capable and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def compute_dtype(device: torch.device, requested: bool | None) -> ComputeDtype:
    """The mixed-precision dtype to train with (``None``: float32), with the reason.

    ``requested=None`` means automatic: bfloat16 where the hardware computes it natively (CUDA
    GPUs with bf16, CPUs with AVX512-BF16 or AMX), float32 elsewhere. ``True`` forces mixed
    precision (float16 on GPUs without bf16, which then needs a gradient scaler; on a CPU without
    native bf16, emulated bfloat16: measured 90x slower than float32 for 7x7 convolutions).
    """
    if requested is False:
        return ComputeDtype(None, "mixed precision off (--no-amp)")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return ComputeDtype(torch.bfloat16, "GPU with native bf16")
        if requested:
            return ComputeDtype(torch.float16, "--amp on a GPU without bf16 (with gradient scaling)")
        return ComputeDtype(None, "GPU without bf16 (--amp for float16)")
    if native_cpu_bf16():
        return ComputeDtype(torch.bfloat16, "CPU with native bf16 (AVX512-BF16 or AMX)")
    if requested:
        return ComputeDtype(
            torch.bfloat16,
            "--amp on a CPU without native bf16 (emulated there: tens of times slower than float32)",
            emulated=True,
        )
    return ComputeDtype(None, "CPU without native bf16")


def prefers_channels_last(device: torch.device) -> bool:
    """Whether training here is faster in NHWC (channels-last) than in NCHW: on GPUs, and on CPUs where
    torch dispatches AVX-512 (segnet-basic steps 4-6% faster in float32, 4-10% in bf16), but not where it
    dispatches AVX2 or less, where oneDNN's NHWC float32 path is 14-18% slower (docs/decisions.md
    "Memory layout by SIMD level")."""
    return device.type == "cuda" or torch.backends.cpu.get_cpu_capability() == "AVX512"


def autocast_dtype(device: torch.device, requested: bool | None) -> torch.dtype | None:
    """The mixed-precision dtype to train with, or None for float32 (see :func:`compute_dtype`)."""
    return compute_dtype(device, requested).dtype


@contextlib.contextmanager
def determinism(enabled: bool) -> Iterator[None]:
    """Within the block, make training bit-for-bit repeatable (``enabled``) or let torch pick its
    fastest kernels; on leaving it, torch's determinism and cuDNN flags are as they were before.

    Sets ``torch.use_deterministic_algorithms`` and cuDNN's flags, and on CUDA the cuBLAS workspace
    that deterministic matrix products need (it must be set before cuBLAS starts, so enter this
    before any CUDA work; cuBLAS reads it once, so it is left set). SegNet's max-unpooling is
    flagged by torch as nondeterministic because unpooling may, in general, write two values to one
    place; here its indices come from 2x2/2 pooling windows that do not overlap, so every output
    position is written at most once and the result is deterministic. Operators are therefore
    checked with ``warn_only``: the unpooling warning is silenced, any other nondeterministic
    operator still warns.
    """
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        warnings.filterwarnings(
            "ignore", message="max_unpooling2d_forward_out does not have a deterministic implementation"
        )
    torch.backends.cudnn.deterministic = enabled
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_name: str) -> torch.device:
    """Join the process group when launched by torchrun; return this process's device."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if env_world_size() > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # before init, so NCCL binds the right GPU
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank; before the process group starts (or after it ends), torchrun's RANK."""
    return dist.get_rank() if is_distributed() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (no-op in a single process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(value: Any) -> list[Any]:
    """Every process's ``value`` in rank order (picklable objects); ``[value]`` in a single process."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every process.

    Without SyncBatchNorm (CPU training) each process updates its running statistics from its own
    batches, so after an epoch they differ slightly; rank 0's are the ones its checkpoint saves,
    and every rank must validate with those.
    """
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src)


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a state dict, in key order."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_replicas_in_sync(module: nn.Module) -> str:
    """The digest of ``module``'s state; raises unless every process holds exactly the same one."""
    local = state_digest(module.state_dict())
    if not is_distributed():
        return local
    digests: list[str | None] = [None] * world_size()
    dist.all_gather_object(digests, local)
    if len(set(digests)) > 1:
        differing = [index for index, digest in enumerate(digests) if digest != digests[0]]
        raise SegnetError(
            f"model weights differ between processes (ranks {differing} differ from rank 0); the run is not trustworthy"
        )
    return local


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()
