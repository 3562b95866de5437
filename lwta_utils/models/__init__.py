"""Models: the architectures (the MNIST CNN, the pre-activation WideResNet) chosen by name, the
parts they share, and batched inference."""
from lwta_utils.core.registry import MODELS
from lwta_utils.models.cnn import MnistCNN
from lwta_utils.models.inference import accuracy, draw_logits, predict_logits
from lwta_utils.models.registry import build_model, register_model
from lwta_utils.models.wrn import PreActBlock, WideResNet

__all__ = ["MODELS", "MnistCNN", "PreActBlock", "WideResNet", "accuracy", "build_model", "draw_logits",
           "predict_logits", "register_model"]
