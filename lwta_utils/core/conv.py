"""``Conv2d``: ``nn.Conv2d`` with a faster gradient for its input where the input has one channel.

On the CPU, the backward pass of a convolution whose input has a single channel (the MNIST CNN's
first layer) computes the input's gradient three times slower than the forward pass (oneDNN's
backward-data for one input channel: 12-14 ms against 4-6 ms here for 128 digits, 32 kernels of
5 x 5), and an attack asks for that gradient at every step. ``Conv2d`` computes it instead as one
matrix product and a ``fold`` (col2im): the kernels' transpose times the output's gradient gives,
for every position, the contribution of each kernel tap, and ``fold`` adds them into the input's
pixels. The same sums in another order: equal to oneDNN's within float rounding (about 1e-4 on
gradients of order 10). The forward pass and the weights' and bias's gradients are the standard
ones. Used only where it is faster: CPU tensors, an input that needs a gradient, one input channel,
stride and dilation 1, one group, zero padding given as numbers; everything else takes
``nn.Conv2d``'s own path. A subclass of ``nn.Conv2d`` (same parameters, same ``state_dict``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _FoldInputGradConv(torch.autograd.Function):
    """conv2d(x, weight, bias, padding) whose input gradient is weight^T @ grad, folded (col2im)."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv2d(x, weight, bias, 1, padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            b, oc, h, w = grad.shape
            cols = torch.matmul(weight.reshape(oc, -1).t(), grad.reshape(b, oc, h * w))  # (B, C k k, H W)
            gx = F.fold(cols, tuple(x.shape[-2:]), tuple(weight.shape[-2:]), padding=ctx.padding)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            _, gw, gb = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1], list(ctx.padding), [1, 1],
                False, [0, 0], 1, [False, ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]])
        return gx, gw, gb, None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose input gradient takes the faster path described in the module's docstring
    where it applies."""

    def _fold_path(self, x: torch.Tensor) -> bool:
        return (x.requires_grad and x.device.type == "cpu" and self.in_channels == 1 and self.groups == 1
                and self.stride == (1, 1) and self.dilation == (1, 1) and self.padding_mode == "zeros"
                and not isinstance(self.padding, str) and x.dim() == 4)

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self._fold_path(x):
            return _FoldInputGradConv.apply(x, weight, bias, tuple(self.padding))
        return super()._conv_forward(x, weight, bias)
