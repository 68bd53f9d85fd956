"""A dense layer in LU form and EBFlow's fully connected architecture built from it.

``W = P L U`` with a fixed permutation ``P``, a unit lower-triangular ``L`` and an upper-triangular ``U`` whose
diagonal is ``sign * exp(log_s)`` (``sign`` fixed, so ``U`` never becomes singular). Then

    log|det W| = sum_i log_s_i                                   (O(D), no factorisation),

the forward map ``y = P (L (U x)) + b`` costs two triangular products per sample (``O(B D^2)``) and the inverse
``x = U^{-1} L^{-1} P^T (y - b)`` two triangular solves (``torch.linalg.solve_triangular``). This is the
maximum-likelihood answer to the ``O(D^3)`` log-det: restrict the parameterisation instead of dropping the
determinant. It is written on ``torch.linalg``, not on nflows' ``LULinear``/``NaiveLinear`` (the latter's
inverse calls ``torch.solve``, which torch has removed).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ebflow import EBFlow
from ebflow.architectures import dense_stack
from ebflow.layers import Layer, _init_square

__all__ = ["LUDense", "fully_connected_lu"]


class LUDense(Layer):
    """``y = P L U x + b`` (linear layer, ``const_logdet = sum(log_s)``).

    Parameters: the ``D(D-1)/2`` strictly-lower entries of ``L``, the ``D(D-1)/2`` strictly-upper entries of
    ``U``, ``log_s`` (``D``), and the bias; ``P`` and ``sign`` are buffers. So the layer has ``D^2`` weights,
    as many as :class:`ebflow.layers.Dense`. Initialisation: the LU factorisation (``torch.linalg.lu``) of
    ``I`` or of a random orthogonal matrix, negated with ``neg_init``; EBFlow's ``-I`` gives ``P = L = I``,
    ``U = -I``. Image-shaped inputs are flattened for the product and reshaped back.
    """

    linear = True

    def __init__(self, dim: int, *, bias: bool = True, init: str = "identity", neg_init: bool = False,
                 bias_init: float = 0.0) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"LUDense: dim must be positive, got {dim}")
        self.dim = dim
        p, lower, upper = torch.linalg.lu(_init_square(dim, init, neg_init))
        diag = torch.diagonal(upper)
        perm = p.argmax(dim=1)  # (P v)_i = v[perm[i]]
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))
        self.register_buffer("sign", torch.sign(diag))
        self.register_buffer("lower_idx", torch.tril_indices(dim, dim, offset=-1))
        self.register_buffer("upper_idx", torch.triu_indices(dim, dim, offset=1))
        self.lower_entries = nn.Parameter(lower[self.lower_idx[0], self.lower_idx[1]].clone())
        self.upper_entries = nn.Parameter(upper[self.upper_idx[0], self.upper_idx[1]].clone())
        self.log_s = nn.Parameter(diag.abs().log())
        self.bias = nn.Parameter(torch.full((dim,), float(bias_init))) if bias else None

    def factors(self) -> tuple[Tensor, Tensor]:
        """``(L, U)`` as dense triangular matrices."""
        eye = torch.eye(self.dim, dtype=self.log_s.dtype, device=self.log_s.device)
        lower = eye.index_put((self.lower_idx[0], self.lower_idx[1]), self.lower_entries)
        upper = torch.diag(self.sign * self.log_s.exp()).index_put(
            (self.upper_idx[0], self.upper_idx[1]), self.upper_entries)
        return lower, upper

    def matrix(self) -> Tensor:
        """The assembled ``W = P L U`` (``O(D^3)``; for tests and inspection)."""
        lower, upper = self.factors()
        return (lower @ upper)[self.perm]

    def _flat(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"LUDense({self.dim}) got input with {flat.shape[1]} features per sample")
        return flat

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        lower, upper = self.factors()
        h = self._flat(x) @ upper.T @ lower.T
        y = h[:, self.perm]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(x.shape), None

    def inverse(self, y: Tensor) -> Tensor:
        flat = self._flat(y)
        if self.bias is not None:
            flat = flat - self.bias
        lower, upper = self.factors()
        rhs = flat[:, self.inv_perm].T  # P^T (y - b), one column per sample
        h = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, h, upper=True)
        return x.T.reshape(y.shape)

    def const_logdet(self) -> Tensor:
        return self.log_s.sum()


def fully_connected_lu(dim: int, num_layers: int = 2, *, alpha: float = 0.3, neg_init: bool = True,
                       bias: bool = True, init: str = "identity", bias_init: float = 1.0,
                       preprocessing: nn.Module | None = None) -> EBFlow:
    """EBFlow's fully connected model (``L`` dense layers, a smooth leaky ReLU between consecutive ones) with
    :class:`LUDense` in place of :class:`ebflow.layers.Dense`; same defaults as
    :func:`ebflow.architectures.fully_connected`. Its exact NLL costs ``O(B D^2 L)``, no ``O(D^3)`` term."""
    return dense_stack(dim, num_layers, lambda: LUDense(dim, bias=bias, init=init, neg_init=neg_init,
                                                        bias_init=bias_init),
                       alpha=alpha, preprocessing=preprocessing)
