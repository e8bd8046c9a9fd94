"""Data-parallel training across processes started by ``torchrun`` (PyTorch DDP).

``torchrun --nproc-per-node N -m joyful train …`` starts N copies of the command with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous address in their environment;
with several machines, ``--nnodes`` and ``--rdzv-endpoint`` do the same across them.
Every process builds the same model from the same seed; each takes its share of every
mini-batch of dialogues, gradients are all-reduced (averaged) by
:class:`~torch.nn.parallel.DistributedDataParallel`, and so every process holds the same
weights after every step. gloo connects CPU processes, NCCL GPUs (one per process, the
``LOCAL_RANK``-th of its machine). Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from joyful.errors import JoyfulError

#: How long a process waits for the others (rendezvous, a collective) before failing the run.
TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun (a world of one is not distributed)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group torchrun set up; return the ranks and this process's device.

    A CUDA run gives each process its own GPU (``cuda:LOCAL_RANK``); a CPU run uses gloo.
    """
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise JoyfulError(
                f"rank {ranks.rank}: local rank {ranks.local_rank} has no GPU of its own "
                f"({torch.cuda.device_count()} on this machine); start fewer processes per node"
            )
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise JoyfulError(f"distributed training runs on CPUs (gloo) or CUDA GPUs (NCCL), not on {device.type}")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
    return ranks, device


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def current() -> Ranks | None:
    """The ranks of a running process group, ``None`` in a single process."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every rank: a decision taken once."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics see each rank's own share of a batch)."""
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def lost_peer(error: BaseException) -> JoyfulError:
    """The error a surviving process reports when another process of the run died."""
    ranks = current()
    who = f"rank {ranks.rank}" if ranks else "this process"
    return JoyfulError(
        f"{who}: another process of the distributed run stopped or cannot be reached "
        f"({str(error).splitlines()[0] if str(error) else type(error).__name__}); the run is abandoned, "
        "the last checkpoint written by rank 0 is complete"
    )
