"""Device choice and the few torch.distributed helpers the training loop needs.

Launched by ``torchrun``, the environment holds RANK, WORLD_SIZE and LOCAL_RANK; otherwise the
process is rank 0 of 1 and every helper here is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from segnet.errors import SegnetError


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


def autocast_dtype(device: torch.device, requested: bool | None) -> torch.dtype | None:
    """The mixed-precision dtype to train with, or None for float32.

    ``requested=None`` means automatic: bfloat16 where the hardware computes it natively (CUDA
    GPUs with bf16, CPUs with AVX512-BF16 or AMX), float32 elsewhere. ``True`` forces mixed
    precision (float16 on GPUs without bf16, which then needs a gradient scaler).
    """
    if requested is False:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else (torch.float16 if requested else None)
    native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return torch.bfloat16 if (native_bf16 or requested) else None


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
    return dist.get_rank() if is_distributed() else 0


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


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()
