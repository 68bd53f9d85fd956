"""Match after Preprocessing (MaP): a fixed bijection applied to the data before the trained flow.

For dequantized pixels ``x`` in ``[0, 1]`` the preprocessing is ``u = logit(lam + (1 - 2 lam) x) / a`` with a
"smoothness" ``a`` (1 = the plain logit; EBFlow's official MNIST-FC model uses a = 0.5, i.e. twice the logit). Passed as
``EBFlow(..., preprocessing=LogitTransform(lam))`` it sits *outside* the trained model: every objective acts
on ``u`` (so score matching matches scores of ``u``, not of raw pixels), while ``EBFlow.log_prob`` in data space
adds the exact per-sample log-det of the preprocessing back. Without MaP, put :class:`ebflow.layers.Logit`
inside the model's layer list instead.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .layers import Logit

__all__ = ["LogitTransform", "dequantize"]


class LogitTransform(Logit):
    """Fixed ``u = logit(lam + (1 - 2 lam) x) / smoothness`` for data in ``[0, 1]``; ``forward -> (u, logdet [B])``.

    ``log|du/dx| = sum_d [log(1 - 2 lam) - log p_d - log(1 - p_d)] - D log(smoothness)``. The default
    ``lam = 1e-6`` is the shift of EBFlow's MNIST preprocessing; ``smoothness`` 0.5 is its MNIST-FC value
    (0.75 for its CNNs), 1 the plain logit. Inputs outside the domain ``[-lam, 1 + lam] / (1 - 2 lam)`` (the
    closure of the image of ``inverse``, which contains ``[0, 1]``) raise.
    """

    def __init__(self, lam: float = 1e-6, smoothness: float = 1.0) -> None:
        super().__init__(lam)
        if not (math.isfinite(smoothness) and smoothness > 0):
            raise ValueError(f"LogitTransform: smoothness must be a positive number, got {smoothness}")
        self.smoothness = float(smoothness)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        p = self.lam + (1.0 - 2.0 * self.lam) * x
        if bool(((p < 0) | (p > 1)).any()):
            raise ValueError("LogitTransform expects data in [0, 1] (dequantized pixels / scale); "
                             f"got values in [{x.min().item():.4g}, {x.max().item():.4g}]")
        return super().forward(x)  # element-wise through :meth:`derivatives`, which applies the smoothness

    def derivatives(self, x: Tensor, order: int = 0) -> tuple[Tensor, ...]:
        """The logit's closed forms with the smoothness: ``g / a`` and its derivatives ``g' / a``, ``g'' / a``,
        ``g''' / a``;
        the log-det ``l - log a`` (its derivatives in x are the logit's). Used where the transform sits inside a
        model (no MaP): ``EBFlow.energy_score`` reads element-wise layers through this method."""
        out = super().derivatives(x, order)
        a = self.smoothness
        if a == 1.0:
            return out
        scaled = list(out)
        scaled[0] = out[0] / a
        scaled[1] = out[1] - math.log(a)
        if order >= 1:
            scaled[2] = out[2] / a
        if order >= 2:
            scaled[4] = out[4] / a
        if order >= 3:
            scaled[6] = out[6] / a
        return tuple(scaled)

    def inverse(self, y: Tensor) -> Tensor:
        return super().inverse(y * self.smoothness)


def dequantize(x_int: Tensor, scale: float = 256.0, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantization: ``(x_int + U[0, 1)) / scale`` (float; ``x_int`` holds integers in ``[0, scale)``).

    The NLL of the integer data in bits/dim is then ``(nll + D log(scale)) / (D log 2)``.
    """
    x = x_int.to(torch.get_default_dtype()) if not x_int.is_floating_point() else x_int
    device = x.device if generator is None else generator.device
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
    return (x + noise) / scale
