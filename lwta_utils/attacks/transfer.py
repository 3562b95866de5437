"""Transfer: PGD-Linf on a ``surrogate`` model (a ReLU PGD-AT network), its examples fed to the
target, which is never queried (Papernot et al. 2017)."""
from __future__ import annotations

import torch
from torch import nn

from lwta_utils.attacks.pgd import pgd
from lwta_utils.attacks.registry import preserved, register_attack
from lwta_utils.core.errors import bad

# (was: from . import attacks_external)


@register_attack("transfer", "linf", kind="transfer", label="transfer PGD", needs_surrogate=True, iterative=True)
def transfer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, surrogate: nn.Module, eps: float,
             step_size: float = 0.01, steps: int = 40, random_start: bool = True, restarts: int = 1,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Linf PGD on ``surrogate`` (the target ``model`` is never queried)."""
    if not isinstance(surrogate, nn.Module):
        raise bad("surrogate", type(surrogate).__name__, "must be a trained model (nn.Module)")
    with preserved(surrogate):
        surrogate.eval()
        return pgd(surrogate, x, y, eps=eps, step_size=step_size, steps=steps, random_start=random_start,
                   restarts=restarts, generator=generator)
