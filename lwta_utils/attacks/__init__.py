"""Attacks on pixels in [0, 1], chosen by name: the registry and ``run_attack`` at the bottom,
the losses and gradient modes, then one module per family: ours (PGD / FGSM, CW, transfer, the
gradient-free smoothed PGD), foolbox's and the official AutoAttack code's. Importing this package
registers every attack."""
from lwta_utils.attacks import apgd, autoattack, cw, foolbox, smoothed, transfer  # noqa: F401  (registration)
from lwta_utils.attacks.cw import cw_l2
from lwta_utils.attacks.foolbox import ExpectedModel
from lwta_utils.attacks.gradients import attack_loss, input_gradient
from lwta_utils.attacks.pgd import fgsm, pgd, pgd_l2, pgd_linf
from lwta_utils.attacks.registry import (
           AttackSpec,
           attack_params,
           attack_spec,
           check_inputs,
           register_attack,
           run_attack,
)
from lwta_utils.core.registry import ATTACKS

__all__ = ["ATTACKS", "AttackSpec", "ExpectedModel", "attack_loss", "attack_params", "attack_spec", "check_inputs",
           "cw_l2", "fgsm", "input_gradient", "pgd", "pgd_l2", "pgd_linf", "register_attack", "run_attack"]
