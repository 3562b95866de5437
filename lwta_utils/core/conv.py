"""``Conv2d``: ``nn.Conv2d`` with a faster gradient for its input where the input has one channel.

On the CPU, the backward pass of a convolution whose input has a single channel (the MNIST CNN's
first layer) computes the input's gradient slowly (oneDNN's backward-data for one input channel:
12-14 ms for 128 digits and 32 kernels of 5 x 5 on 2 AMD EPYC cores, where the forward pass takes
2-6 ms), and an attack asks for that gradient at every step. ``Conv2d`` computes it instead as one
matrix product and a ``fold`` (col2im; 4-6 ms): the kernels' transpose times the output's gradient gives,
for every position, the contribution of each kernel tap, and ``fold`` adds them into the input's
pixels. The same sums in another order: equal to oneDNN's within float rounding (about 1e-4 on
gradients of order 10); the forward pass is the standard one. Used only where the input's gradient
is the only one asked for, as in an attack (``attacks.run_attack`` switches the parameters'
gradients off): an input that needs a gradient, a weight and bias that need none, CPU tensors, one
input channel, stride and dilation 1, one group, zero padding given as numbers. Everything else
(training, or a library's attack on a model whose parameters still ask for gradients) takes
``nn.Conv2d``'s own path, unchanged. A subclass of ``nn.Conv2d`` (same parameters, same
``state_dict``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _FoldInputGradConv(torch.autograd.Function):
    """conv2d(x, weight, bias, padding) for a weight and bias without gradient: the input's gradient is
    weight^T @ grad, folded (col2im)."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(weight)
        ctx.padding, ctx.size, ctx.dtype = padding, tuple(x.shape[-2:]), x.dtype
        return F.conv2d(x, weight, bias, 1, padding)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        b, oc, h, w = grad.shape
        # under autocast the output (and its gradient) may be bf16 where the weight is float32
        cols = torch.matmul(weight.reshape(oc, -1).t().to(grad.dtype), grad.reshape(b, oc, h * w))  # (B, C k k, H W)
        gx = F.fold(cols, ctx.size, tuple(weight.shape[-2:]), padding=ctx.padding)
        return gx.to(ctx.dtype), None, None, None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose input gradient takes the faster path described in the module's docstring
    where it applies."""

    def _fold_path(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
        return (x.requires_grad and not weight.requires_grad and (bias is None or not bias.requires_grad)
                and x.device.type == "cpu" and x.dim() == 4 and self.in_channels == 1 and self.groups == 1
                and self.stride == (1, 1) and self.dilation == (1, 1) and self.padding_mode == "zeros"
                and not isinstance(self.padding, str))

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self._fold_path(x, weight, bias):
            return _FoldInputGradConv.apply(x, weight, bias, tuple(self.padding))
        return super()._conv_forward(x, weight, bias)
