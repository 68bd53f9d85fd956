"""Self-Normalizing Flows (Keller, Peters, Jaini, Hoogeboom, Forre, Welling; ICML 2021) for dense layers.

Each dense layer ``z = W x + b`` also holds a learned inverse ``R`` (``x ~ R (z - b)``). The model's density is
the equal mixture, in log space, of the forward model's and the inverse model's, plus a layer-wise
reconstruction penalty on the detached layer input ``h``::

    L = 1/2 (-log p_f(x)) + 1/2 (-log p_g(x)) + lambda sum_k ||R_k W_k h_k - h_k||^2

whose costly log-det gradients are replaced: ``d log|det W| / dW = W^-T`` by ``R^T`` and the inverse model's
``d log|det R^-1| / dR = -R^-T`` by ``-W^T``. The inverse model's data term reuses the forward model's backprop
error (``dL/dR ~ -1/2 delta_x z^T`` with ``delta_x = W^T delta_z``, exact when ``R = W^-1``). Hence, per layer and
summed over the batch: ``dL/dW = 1/2 (delta_z x^T - R^T)``, ``dL/dR = 1/2 (-delta_x z^T + W^T)``, the bias and
the input gradient unhalved (both models share them); the penalty adds its own gradient to ``W`` and ``R``. At
``R = W^-1`` this is exactly the gradient of the mixture, i.e. half the exact ML gradient in ``W`` (and in ``R``
for the inverse model), which ``tests/test_approx_ml.py`` checks.

Two custom autograd functions implement it: :class:`_SelfNormLinear` (the layer; its backward returns the data
terms above) and :class:`_SelfNormLogDet` (a placeholder whose value is not computed, it would cost ``O(D^3)``,
and whose gradient is the substituted log-det gradient). The layer is an :class:`ebflow.layers.Dense`, so the
exact NLL at evaluation (``EBFlow.log_prob``: ``slogdet(W)`` cached per parameter version) and exact sampling
are EBFlow's. Initialisation: the official code's for square FC layers after its "Fix FC init" commit (4007e24):
``W = I`` exactly, ``R = W^T``, bias ``~ N(0, std(W)^2)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ebflow import EBFlow
from ebflow.architectures import dense_stack
from ebflow.layers import Dense

from .common import finite_mean

__all__ = ["SelfNormDense", "snf_fully_connected", "snf_loss"]


class _SelfNormLinear(torch.autograd.Function):
    """``z = x W^T + b`` (rows are samples) with the SNF backward of the module docstring."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, inv_weight: Tensor, bias: Tensor | None) -> Tensor:
        wx = F.linear(x, weight)
        ctx.save_for_backward(x, weight, wx)  # W x without the bias: the backward's z
        ctx.has_bias = bias is not None
        return wx if bias is None else wx + bias

    @staticmethod
    def backward(ctx, grad_z: Tensor):
        x, weight, wx = ctx.saved_tensors
        grad_x = grad_z @ weight                          # delta_x = W^T delta_z (unhalved: both models use it)
        grad_w = 0.5 * grad_z.T @ x                       # 1/2 delta_z x^T
        grad_r = -0.5 * grad_x.T @ wx                     # -1/2 delta_x z^T, z = W x without the bias
        grad_b = grad_z.sum(0) if ctx.has_bias else None
        return grad_x, grad_w, grad_r, grad_b


class _SelfNormLogDet(torch.autograd.Function):
    """Placeholder for ``log|det W| - log|det R|`` (value 0, not computed) whose gradient is ``(R^T, -W^T)``."""

    @staticmethod
    def forward(ctx, weight: Tensor, inv_weight: Tensor) -> Tensor:
        ctx.save_for_backward(weight, inv_weight)
        return weight.new_zeros(())

    @staticmethod
    def backward(ctx, g: Tensor):
        weight, inv_weight = ctx.saved_tensors
        return g * inv_weight.T, -g * weight.T


class SelfNormDense(Dense):
    """An EBFlow dense layer with a learned inverse ``inv_weight`` (``R``) and SNF gradients (module docstring).

    ``forward`` equals :class:`~ebflow.layers.Dense`'s; only its backward differs. ``const_logdet`` and
    ``inverse`` stay exact (``slogdet``/``solve`` with ``W``); ``approx_inverse`` is ``R (y - b)``.
    """

    def __init__(self, dim: int, *, bias: bool = True) -> None:
        super().__init__(dim, bias=bias, init="identity")
        self.inv_weight = nn.Parameter(self.weight.detach().T.clone())
        if self.bias is not None:
            with torch.no_grad():
                self.bias.normal_(0.0, float(self.weight.std()))

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        return _SelfNormLinear.apply(self._flat(x), self.weight, self.inv_weight, self.bias).view_as(x), None

    def logdet_surrogate(self) -> Tensor:
        """Scalar whose gradient is ``R^T`` in ``W`` and ``-W^T`` in ``R`` (its value, 0, means nothing)."""
        return _SelfNormLogDet.apply(self.weight, self.inv_weight)

    def reconstruction(self, h: Tensor) -> Tensor:
        """``||R W h - h||^2`` per sample for the layer input ``h`` (detached, no bias, as in the official code)."""
        h = self._flat(h).detach()
        return (F.linear(F.linear(h, self.weight), self.inv_weight) - h).pow(2).sum(1)

    def approx_inverse(self, y: Tensor) -> Tensor:
        flat = self._flat(y)
        if self.bias is not None:
            flat = flat - self.bias
        return F.linear(flat, self.inv_weight).view_as(y)


def snf_fully_connected(dim: int, num_layers: int = 2, *, alpha: float = 0.3, bias: bool = True,
                        preprocessing: nn.Module | None = None) -> EBFlow:
    """EBFlow's FC model (``L`` dense ``D x D`` layers, smooth leaky ReLU ``alpha`` between them) with
    :class:`SelfNormDense` layers: the official ``selfnorm_fc_mnist`` model at ``L = 2``, ``alpha = 0.3``."""
    return dense_stack(dim, num_layers, lambda: SelfNormDense(dim, bias=bias), alpha=alpha, preprocessing=preprocessing)


def snf_loss(model: EBFlow, u: Tensor, recon_weight: float = 1.0) -> tuple[Tensor, Tensor, int]:
    """``(loss, per-sample energy [B], non-finite per-sample terms)`` of one SNF step on preprocessed data ``u``.

    ``loss = mean(E(u) + recon_weight * sum_k ||R_k W_k h_k - h_k||^2) - 1/2 sum_k surrogate_k`` where
    ``E`` is EBFlow's energy (``-log p_z(f(u))`` minus the element-wise log-dets; no linear log-det), so that
    ``loss.backward()`` leaves the SNF direction in ``.grad``. Non-finite per-sample terms are zeroed (the
    official behaviour) and counted (:func:`~.common.finite_mean`).
    """
    u = model._check(u)
    h = u.reshape(u.shape[0], *model.event_shape)
    logdet = u.new_zeros(u.shape[0])
    recon = u.new_zeros(u.shape[0])
    surrogate = u.new_zeros(())
    for layer in model.layers:
        if isinstance(layer, SelfNormDense):
            recon = recon + layer.reconstruction(h)
            surrogate = surrogate + layer.logdet_surrogate()
        h, ld = layer(h)
        if ld is not None:
            logdet = logdet + ld
    z = h.reshape(u.shape[0], model.dim)
    energy = 0.5 * z.pow(2).sum(1) + 0.5 * model.dim * math.log(2 * math.pi) - logdet
    mean, n_bad = finite_mean(energy + recon_weight * recon)
    return mean - 0.5 * surrogate, energy.detach(), n_bad
