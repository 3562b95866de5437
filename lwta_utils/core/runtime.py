"""Device, threads and seeds, set explicitly (never as an import side effect)."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from lwta_utils.core.errors import bad
from lwta_utils.core.provenance import usable_cores

MAX_PASS = 512  # images per forward pass when several draws of a batch are stacked, on a GPU (memory)
# On a CPU a pass costs least per image near 128 MNIST digits: on 2 AMD EPYC cores, forward and input
# gradient of the LWTA CNN 460 us an image at 128, 500 at 256, 580 at 512; inference 180, 250, 290 us
# (larger passes leave the caches; benchmarks/bench_attacks.py times the EOT case)
CPU_PASS = 128


def max_pass(device: torch.device | str) -> int:
    """Images per forward pass when draws are stacked along the batch: ``CPU_PASS`` on a CPU,
    ``MAX_PASS`` on a GPU."""
    return CPU_PASS if torch.device(device).type == "cpu" else MAX_PASS


def get_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise bad("device", name, "no CUDA device is present here; use 'auto' or 'cpu'")
    try:
        return torch.device(name)
    except RuntimeError:
        raise bad("device", name, "choose 'auto', 'cpu', 'cuda' or 'cuda:N'") from None


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def default_threads() -> int:
    """The threads that ``num_threads: 0`` means: ``OMP_NUM_THREADS`` when it is set (a scheduler's
    share, or the test suite's share per worker process), else every core this process may use."""
    share = os.environ.get("OMP_NUM_THREADS", "")
    if share.isdigit() and int(share) > 0:
        return int(share)
    return usable_cores()


def set_threads(n: int) -> int:
    """Use ``n`` CPU threads (0 = :func:`default_threads`); returns the number in use."""
    torch.set_num_threads(n if n > 0 else default_threads())
    return torch.get_num_threads()
