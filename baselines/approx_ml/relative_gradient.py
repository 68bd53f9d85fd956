"""Relative gradient (Gresele, Fissore, Javaloy, Schoelkopf, Hyvaerinen; NeurIPS 2020) for dense flows.

For ``z = W x + b`` the Euclidean gradient ``G`` of the NLL in ``W`` is right-multiplied by ``W^T W``. Its log-det
part ``-W^-T`` becomes ``-W`` (no inverse, no determinant) and its data part ``G_data = sum_i delta_i x_i^T``
becomes ``sum_i delta_i ((W x_i)^T W)``, ``O(B D^2)`` when evaluated right to left. The bias follows the
augmented-matrix form (paper App. F, the official ``apply_trick``): with ``A = [[W, b], [0, 1]]`` the relative
direction of the data part is ``[G_W, g_b] A^T A``, i.e.

    dW = G_W W^T W + g_b (W^T b)^T,        db = G_W W^T b + g_b (1 + b^T b),

and the log-det part adds ``-W`` to ``dW`` only (the official ``add_det_grad``: ``dW - W``, bias untouched). The
optimizer is fed this direction as the gradient, as in the official code. It is a preconditioned direction,
not an estimate of the Euclidean gradient.

:class:`_RelativeLinear` (the layer's backward returns the relative data directions) and
:class:`_RelativeLogDet` (a placeholder of value 0 whose gradient is ``W``) implement it. The layer is an
:class:`ebflow.layers.Dense`, so the exact NLL at evaluation and sampling are EBFlow's. Initialisation as in the
official code: orthogonal weights, zero biases.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ebflow import EBFlow
from ebflow.architectures import dense_stack
from ebflow.layers import Dense

from .common import finite_mean

__all__ = ["RelativeDense", "relative_fully_connected", "relative_loss"]


class _RelativeLinear(torch.autograd.Function):
    """``z = x W^T + b`` whose backward gives the relative (augmented) directions of ``W`` and ``b``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight, bias if bias is not None else weight.new_zeros(0))
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_z: Tensor):
        x, weight, bias = ctx.saved_tensors
        grad_x = grad_z @ weight
        grad_w = grad_z.T @ ((x @ weight.T) @ weight)     # G_W W^T W, right to left: O(B D^2)
        grad_b = None
        if ctx.has_bias:
            g_b = grad_z.sum(0)
            wtb = weight.T @ bias                          # W^T b
            grad_w = grad_w + torch.outer(g_b, wtb)
            grad_b = grad_z.T @ (x @ wtb) + g_b * (1.0 + bias @ bias)
        return grad_x, grad_w, grad_b


class _RelativeLogDet(torch.autograd.Function):
    """Placeholder for ``log|det W|`` (value 0, not computed) whose gradient is ``W = W^-T W^T W``."""

    @staticmethod
    def forward(ctx, weight: Tensor) -> Tensor:
        ctx.save_for_backward(weight)
        return weight.new_zeros(())

    @staticmethod
    def backward(ctx, g: Tensor):
        (weight,) = ctx.saved_tensors
        return g * weight


class RelativeDense(Dense):
    """An EBFlow dense layer trained by the relative gradient; ``forward`` equals Dense's, the backward differs."""

    def __init__(self, dim: int, *, bias: bool = True) -> None:
        super().__init__(dim, bias=bias, init="orthogonal", bias_init=0.0)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        return _RelativeLinear.apply(self._flat(x), self.weight, self.bias).view_as(x), None

    def logdet_surrogate(self) -> Tensor:
        """Scalar whose gradient in ``W`` is ``W`` (the relative log-det gradient; its value, 0, means nothing)."""
        return _RelativeLogDet.apply(self.weight)


def relative_fully_connected(dim: int, num_layers: int = 2, *, alpha: float = 0.3, bias: bool = True,
                             preprocessing: nn.Module | None = None) -> EBFlow:
    """EBFlow's FC model with :class:`RelativeDense` layers (the official MNIST model at ``L = 2``)."""
    return dense_stack(dim, num_layers, lambda: RelativeDense(dim, bias=bias), alpha=alpha, preprocessing=preprocessing)


def relative_loss(model: EBFlow, u: Tensor) -> tuple[Tensor, Tensor, int]:
    """``(loss, per-sample energy [B], non-finite per-sample energies)``: ``loss = mean E(u) - sum_k surrogate_k``
    (EBFlow's energy: no linear log-det), so that ``loss.backward()`` leaves the relative direction in ``.grad``.
    Non-finite per-sample energies are zeroed and counted (:func:`~.common.finite_mean`)."""
    energy = model.flow_energy(u)
    mean, n_bad = finite_mean(energy)
    surrogate = sum((layer.logdet_surrogate() for layer in model.layers if isinstance(layer, RelativeDense)),
                    energy.new_zeros(()))
    return mean - surrogate, energy.detach(), n_bad
