"""Process-group set-up for data-parallel training under ``torchrun``.

``torchrun --nproc_per_node=N -m pulse.train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` then joins the group (``nccl`` on CUDA, ``gloo`` on CPU)
and picks the device (``cuda:LOCAL_RANK`` on GPU). Without those variables it is a
single process and nothing is initialised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "setup", "teardown", "all_reduce_mean", "all_gather_int64"]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> DistInfo:
    """Join the process group if launched by torchrun; choose the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ValueError(f"train.device: {device!r} asked for CUDA, but no GPU is available")
    if use_cuda:
        dev = torch.device(device) if device.startswith("cuda:") else torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    backend = None
    if world > 1:
        backend = "nccl" if use_cuda else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, **({"device_id": dev} if use_cuda else {}))
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev, backend=backend)


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world_size
    return t


def all_gather_int64(values: list[int], info: DistInfo) -> list[list[int]]:
    """Gather a short list of int64 values from every rank (no pickling)."""
    t = torch.tensor(values, dtype=torch.int64, device=info.device)
    if not info.enabled:
        return [t.tolist()]
    out = [torch.zeros_like(t) for _ in range(info.world_size)]
    dist.all_gather(out, t)
    return [o.tolist() for o in out]
