"""Free-form Flows (Draxler, Sorrenson, Zimmermann, Rousselot, Koethe; AISTATS 2024).

A free-form encoder ``f`` (data -> latent, dimension preserving, not invertible by construction) and a decoder
``g`` trained together with the per-sample loss

    beta ||x - g(f(x))||^2 - log p_Z(f(x)) - v^T f'(x) sg(g'(z) v),        z = f(x),

where ``v`` is a Hutchinson vector with ``E[v v^T] = I`` (one scaled orthonormal column: ``sqrt(D) v / |v|``,
:func:`sample_v`), ``g'(z) v`` one JVP through the decoder (``torch.func.jvp``) and ``v^T f'(x)`` one VJP through
the encoder (``torch.autograd.grad`` with ``create_graph``). The surrogate's gradient in ``f``'s parameters is
``tr(g'(z) d f'(x))``, which is the gradient of ``log|det f'(x)|`` when ``g' = f'^-1``, estimated without bias.

The likelihood is the encoder's change of variables, ``log p(x) = log p_Z(f(x)) + log|det f'(x)|``:
:func:`jacobian_log_prob` builds ``f'(x)`` per sample (``torch.func.jacfwd`` under ``vmap``, in chunks) and
takes its ``slogdet``: ``O(D)`` forward passes and ``O(D^3)`` per sample. It is only a density when ``f`` is a
bijection; a decoder that fails to invert ``f`` (large reconstruction error) is the warning sign that it is
not, and the likelihood may be spurious (vislearn/FFF issues #8 and #9).

:class:`ResidualNet` is the official code's ``ResNet`` subnet (residual blocks of a small MLP), the method's
own architecture; any ``[B, D] -> [B, D]`` callables can be passed as ``encode``/``decode``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["MirroredDense", "ResidualNet", "fff_loss", "jacobian_log_prob", "sample_v", "volume_surrogate"]

Transform = Callable[[Tensor], Tensor]


def sample_v(like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One Hutchinson vector per row: ``sqrt(D) v / |v|`` with ``v ~ N(0, I)`` (the official ``sample_v`` with one
    sample: a scaled orthonormal column), so ``E[v v^T] = I``."""
    device = like.device if generator is None else generator.device
    v = torch.randn(like.shape, generator=generator, dtype=like.dtype, device=device).to(like.device)
    return v * (math.sqrt(like.shape[1]) / v.norm(dim=1, keepdim=True))


def volume_surrogate(x: Tensor, encode: Transform, decode: Transform, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(surrogate [B], z = f(x), x1 = g(z))`` with ``surrogate = v^T f'(x) sg(g'(z) v)``: one JVP through ``g``,
    one VJP through ``f`` (kept in the graph, so the surrogate is differentiable in ``f``'s parameters)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        z = encode(x)
        x1, gv = torch.func.jvp(decode, (z,), (v,))
        (vjp,) = torch.autograd.grad(z, x, v, create_graph=True)
    return (vjp * gv.detach()).sum(1), z, x1


def fff_loss(x: Tensor, encode: Transform, decode: Transform, beta: float, v: Tensor) -> tuple[Tensor, Tensor]:
    """``(per-sample FFF loss [B], per-sample squared reconstruction error [B])`` with a standard normal latent."""
    surrogate, z, x1 = volume_surrogate(x, encode, decode, v)
    recon = (x - x1).pow(2).sum(1)
    nll_z = 0.5 * z.pow(2).sum(1) + 0.5 * z.shape[1] * math.log(2 * math.pi)
    return beta * recon + nll_z - surrogate, recon.detach()


def jacobian_log_prob(encode: Transform, x: Tensor, *, chunk: int = 64) -> Tensor:
    """``log N(f(x); 0, I) + log|det f'(x)|`` per sample ``[N]``, from ``f``'s full Jacobian (no graph).

    ``encode`` maps ``[B, D] -> [B, D]`` row by row. Jacobians are built ``chunk`` samples at a time with
    ``vmap(jacfwd)`` (D forward-mode passes each), then ``slogdet``.
    """
    def single(row: Tensor) -> Tensor:
        return encode(row.unsqueeze(0)).squeeze(0)

    jac = torch.func.vmap(torch.func.jacfwd(single))
    out = []
    with torch.no_grad():
        for part in x.split(chunk):
            z = encode(part)
            logdet = torch.linalg.slogdet(jac(part))[1]
            out.append(-0.5 * z.pow(2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi) + logdet)
    return torch.cat(out) if out else x.new_zeros(0)


class ResidualNet(nn.Module):
    """``blocks`` residual blocks ``h + MLP(h)``, each MLP ``D -> hidden -> hidden -> D`` with SiLU (the official
    ``fff.model.ResNet`` with ``layers_spec`` ``[[hidden, hidden]] * blocks``). Choice where the code's default
    differs or is silent: the last linear map of each block starts at zero, so the net starts as the identity
    (encoder and decoder then start as each other's inverse)."""

    def __init__(self, dim: int, blocks: int = 2, hidden: int = 256) -> None:
        super().__init__()
        if dim < 1 or blocks < 1 or hidden < 1:
            raise ValueError(f"ResidualNet: dim, blocks and hidden must be positive, got {dim}, {blocks}, {hidden}")
        self.blocks = nn.ModuleList()
        for _ in range(blocks):
            last = nn.Linear(hidden, dim)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.blocks.append(nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                             last))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


class MirroredDense(nn.Module):
    """A decoder for EBFlow's FC encoder (``L`` dense layers, smooth leaky ReLU ``alpha`` between them): ``L``
    dense ``D x D`` layers with the mirrored activation ``y / alpha + (1 - 1 / alpha) softplus(y)`` between them,
    whose slope runs from ``1 / alpha`` (y -> -inf) to 1 (y -> +inf) as the inverse of the smooth leaky ReLU's
    does (not its exact inverse, which has no closed form: the decoder stays free-form). Initialised to
    ``W = I``, ``b = 0``, so that at the encoder's identity start ``g(f(x)) ~ x``."""

    def __init__(self, dim: int, num_layers: int = 2, alpha: float = 0.3) -> None:
        super().__init__()
        if dim < 1 or num_layers < 1 or not 0.0 < alpha < 1.0:
            raise ValueError(f"MirroredDense: dim, num_layers >= 1 and alpha in (0, 1), got {dim}, {num_layers}, "
                             f"{alpha}")
        self.alpha = float(alpha)
        self.linears = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))
        for lin in self.linears:
            nn.init.eye_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, z: Tensor) -> Tensor:
        for i, lin in enumerate(self.linears):
            if i:
                z = z / self.alpha + (1.0 - 1.0 / self.alpha) * nn.functional.softplus(z)
            z = lin(z)
        return z
