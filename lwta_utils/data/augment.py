"""Training-time augmentation, batched and on the device."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_batch(x: torch.Tensor, mode: str, max_shift: int, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """Batched, on-device augmentation: random integer translation with zero
    padding (``shift``), plus a horizontal flip for ``crop_flip``."""
    if mode == "none" or max_shift == 0 and mode == "shift":
        return x
    n, _, h, w = x.shape
    dev = x.device
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator).to(dev)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    if mode == "crop_flip":
        flip = torch.rand(n, generator=generator).to(dev) < 0.5
        theta[:, 0, 0] = torch.where(flip, -1.0, 1.0)
    theta[:, 0, 2] = shifts[:, 0].float() * 2.0 / w
    theta[:, 1, 2] = shifts[:, 1].float() * 2.0 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
