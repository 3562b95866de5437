"""Data-parallel training and sharded evaluation on ``torch.distributed``.

Launched with torchrun (``lwta_utils.pipeline.launch``): every process reads RANK,
WORLD_SIZE and LOCAL_RANK from the environment; the backend is NCCL on CUDA
and gloo on the CPU. Without those variables everything runs as a single
process (:data:`SINGLE`), and the code paths are the single-process ones.

How the work is divided (``lwta_utils.training.fit`` and ``lwta_utils.pipeline.steps.evaluate_all``):

- training: every process draws the same permutation and the same
  augmentation of the global batch (one shared generator), takes every
  ``world_size``-th example of it, and DDP averages the gradients (each
  process's loss is weighted by its share of the batch, so the update is
  the single-process one up to the order of floating-point sums). The
  random start of the training attacks and the noise of stochastic layers
  are drawn per process (their own seeds). Validation is sharded and summed.
- evaluation: process r evaluates the test examples r, r + W, r + 2W, ...;
  the per-example results are gathered on rank 0, which writes the records.
  (An attack on a prefix of n examples is then the same prefix.)
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from lwta_utils.core.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, local rank and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def launched() -> bool:
    """Whether torchrun (or another launcher) set the process-group variables."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on the CPU) and return the
    context and this process's device (``cuda:LOCAL_RANK`` on GPUs). Single process without torchrun."""
    if not launched():
        return SINGLE, device
    world = int(os.environ["WORLD_SIZE"])
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    if world == 1:
        return SINGLE, device
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} has no GPU (this machine has {torch.cuda.device_count()}): "
                              f"launch at most that many processes per node")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank, world, local, backend), device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int, ctx: DistContext) -> slice:
    """This process's examples of ``n``: rank, rank + W, ... (a slice)."""
    return slice(ctx.rank, n, ctx.world_size)


def sum_across(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over the processes (float64; identity in a single process)."""
    if not ctx.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj, ctx: DistContext) -> list:
    """Every process's ``obj``, in rank order, on every process."""
    if not ctx.active:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()


def interleave(parts: list[np.ndarray], axis: int = -1) -> np.ndarray:
    """Undo :func:`shard`: ``parts[r]`` holds examples r, r + W, ... along ``axis``."""
    parts = [np.moveaxis(np.asarray(p), axis, 0) for p in parts]
    n = sum(len(p) for p in parts)
    out = np.empty((n, *parts[0].shape[1:]), dtype=parts[0].dtype)
    for r, p in enumerate(parts):
        out[r::len(parts)] = p
    return np.moveaxis(out, 0, axis)


def check_replicas(model: torch.nn.Module, ctx: DistContext) -> None:
    """Raise if the processes' weights differ (they must stay bit-identical under DDP)."""
    if not ctx.active:
        return
    sums = [float(p.detach().double().sum()) for p in model.parameters()]
    everyone = gather_objects(sums, ctx)
    if any(s != everyone[0] for s in everyone[1:]):
        raise RuntimeError("the data-parallel replicas' weights diverged: a bug, please report it")
