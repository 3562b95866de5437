"""Training: what a step learns from (clean, adversarial, noisy or drawn inputs), and one ``fit``
for every variant."""
from lwta_utils.training.fit import FitResult, fit
from lwta_utils.training.inputs import training_inputs

__all__ = ["FitResult", "fit", "training_inputs"]
