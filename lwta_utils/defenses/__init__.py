"""The defenses: the activation registry at the bottom, then stochastic LWTA and its kernels, the
IBP variant, k-WTA, parametric noise injection, weight-covariance alignment and Sparta. Importing
this package registers every activation."""
from lwta_utils.core.registry import ACTIVATIONS
from lwta_utils.defenses import ibp, kwta, lwta, lwta_kernels, pni, sparta, wca  # noqa: F401  (registration)
from lwta_utils.defenses.registry import activation_options, make_activation, register_activation

__all__ = ["ACTIVATIONS", "activation_options", "make_activation", "register_activation"]
