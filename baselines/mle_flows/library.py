"""Maximum-likelihood flows from nflows 0.14 and normflows 1.7.3, wrapped behind one small interface.

:func:`library_flow` returns a :class:`LibraryFlow` (an ``nn.Module``) with ``log_prob(x) -> [B]`` on flat data
``[B, D]`` and ``sample(n) -> [n, D]``. The models are the libraries' own; this module only assembles them and
hides the two libraries' opposite conventions:

- **nflows**: ``Flow(transform, distribution)``; the transform maps data -> noise, ``Flow.log_prob(x)`` and
  ``Flow.sample(n)`` are used as they are.
- **normflows**: ``NormalizingFlow(q0, flows)``; every flow's ``forward`` maps latent -> data, the list is in
  latent -> data order, ``log_prob(x)`` runs the inverses, ``sample(n)`` returns ``(x, log_q)``.

Kinds (``layers`` is the number of flow blocks; ``hidden`` the width of the conditioner networks):

- nflows ``maf``: ``MaskedAutoregressiveFlow`` (affine MADE layers, reverse permutations, 2 residual blocks).
- nflows ``realnvp``: ``SimpleRealNVP`` (affine couplings, alternating masks); needs D >= 2.
- nflows ``lu``: ``LULinear``, ``LeakyReLU(0.3)``, ..., ``LULinear``, nflows' analogue of EBFlow's dense model.
  ``LULinear``'s inverse uses the deprecated ``torch.triangular_solve``, which still works (with a warning) on
  torch 2.13, so it samples. ``NaiveLinear`` is not offered: its inverse calls the removed ``torch.solve``, so
  it cannot sample.
- normflows ``realnvp``: ``AffineCouplingBlock`` (MLP conditioner, zero-initialised) + swap permutation;
  needs D >= 2.
- normflows ``nsf``: rational-quadratic splines, ``CoupledRationalQuadraticSpline`` (needs D >= 2) or, with
  ``autoregressive=True``, ``AutoregressiveRationalQuadraticSpline``; each followed by ``LULinearPermute``.
- normflows ``glow``: ``GlowBlock`` (ActNorm, ``Invertible1x1Conv`` in LU form, affine coupling) on the
  squeezed image: base ``N(0, I)`` on ``(4C, H/2, W/2)``, then ``Squeeze`` to ``(C, H, W)``; needs
  ``image_shape`` with even H, W. Its ActNorms initialise from the first batch they see.
- normflows ``residual``: ``Residual`` (i-ResNet block ``x + g(x)``, ``g`` a ``LipschitzMLP`` with Lipschitz
  constant 0.9) + ``ActNorm``. **Its log_prob is a stochastic estimate** (Russian-roulette power series with
  Hutchinson traces; exact only for D = 2 in eval mode, where normflows computes the 2x2 determinant), and
  sampling inverts each block by fixed-point iteration.

An optional fixed ``preprocessing`` (``forward(x) -> (u, logdet [B])``, ``inverse(u)``, e.g.
:class:`ebflow.preprocessing.LogitTransform` for pixels in [0, 1]) is applied before the flow; ``log_prob``
adds its log-det so that densities stay in data space, and samples are mapped back through its inverse.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["LibraryFlow", "library_flow", "KINDS", "check_kind"]


class LibraryFlow(nn.Module):
    """A library model behind ``log_prob(x [B, D]) -> [B]`` and ``sample(n) -> [n, D]`` (data space).

    ``exact`` is False where ``log_prob`` is a stochastic estimate (normflows' residual flows).
    """

    def __init__(self, model: nn.Module, dim: int, *, lib: str, kind: str,
                 event_shape: tuple[int, ...] | None = None, preprocessing: nn.Module | None = None,
                 exact: bool = True) -> None:
        super().__init__()
        if preprocessing is not None and any(p.requires_grad for p in preprocessing.parameters()):
            raise ValueError("preprocessing must be fixed: it has trainable parameters")
        self.model = model
        self.dim = dim
        self.lib = lib
        self.kind = kind
        self.event_shape = event_shape if event_shape is not None else (dim,)
        self.preprocessing = preprocessing
        self.exact = exact

    def _check(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{self.lib}-{self.kind} expects flat data [B, {self.dim}], got {tuple(x.shape)}")

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` per sample, ``[B]``, including the preprocessing's log-det."""
        self._check(x)
        if self.preprocessing is None:
            u, pre_logdet = x, x.new_zeros(x.shape[0])
        else:
            u, pre_logdet = self.preprocessing(x)
        return self.model.log_prob(u.reshape(u.shape[0], *self.event_shape)) + pre_logdet

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """``n`` samples ``[n, D]`` in data space, drawn with torch's global generator."""
        if self.lib == "normflows":
            u, _ = self.model.sample(n)
        else:
            u = self.model.sample(n)
        u = u.reshape(n, self.dim)
        return u if self.preprocessing is None else self.preprocessing.inverse(u)


# ------------------------------------------------------------------ nflows
def _nflows_maf(dim: int, layers: int, hidden: int, **_: object) -> nn.Module:
    from nflows.flows import MaskedAutoregressiveFlow

    return MaskedAutoregressiveFlow(features=dim, hidden_features=hidden, num_layers=layers,
                                    num_blocks_per_layer=2)


def _nflows_realnvp(dim: int, layers: int, hidden: int, **_: object) -> nn.Module:
    from nflows.flows import SimpleRealNVP

    return SimpleRealNVP(features=dim, hidden_features=hidden, num_layers=layers, num_blocks_per_layer=2)


def _nflows_lu(dim: int, layers: int, hidden: int, **_: object) -> nn.Module:
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import CompositeTransform, LeakyReLU, LULinear

    transforms: list[nn.Module] = []
    for i in range(layers):
        if i:
            transforms.append(LeakyReLU(negative_slope=0.3))
        transforms.append(LULinear(dim, identity_init=True))
    return Flow(CompositeTransform(transforms), StandardNormal([dim]))


# ---------------------------------------------------------------- normflows
def _normflows(flows: list[nn.Module], base_shape: tuple[int, ...]) -> nn.Module:
    import normflows as nf

    base = nf.distributions.DiagGaussian(base_shape, trainable=False)
    return nf.NormalizingFlow(q0=base, flows=flows)


def _normflows_realnvp(dim: int, layers: int, hidden: int, **_: object) -> nn.Module:
    import normflows as nf

    first, second = math.ceil(dim / 2), dim // 2  # sizes of the 'channel' split
    flows: list[nn.Module] = []
    for _ in range(layers):
        net = nf.nets.MLP([first, hidden, hidden, 2 * second], init_zeros=True)
        flows += [nf.flows.AffineCouplingBlock(net), nf.flows.Permute(dim, mode="swap")]
    return _normflows(flows, (dim,))


def _normflows_nsf(dim: int, layers: int, hidden: int, autoregressive: bool = False, **_: object) -> nn.Module:
    import normflows as nf

    spline = nf.flows.AutoregressiveRationalQuadraticSpline if autoregressive else nf.flows.CoupledRationalQuadraticSpline
    flows: list[nn.Module] = []
    for _ in range(layers):
        flows += [spline(dim, 2, hidden), nf.flows.LULinearPermute(dim)]
    return _normflows(flows, (dim,))


def _normflows_glow(dim: int, layers: int, hidden: int, image_shape: tuple[int, int, int] | None = None,
                    **_: object) -> nn.Module:
    import normflows as nf

    reason = _glow_reason(dim, image_shape)
    if reason:
        raise ValueError(reason)
    c, h, w = image_shape  # type: ignore[misc]
    flows: list[nn.Module] = [nf.flows.GlowBlock(4 * c, hidden, split_mode="channel", scale=True)
                              for _ in range(layers)]
    flows.append(nf.flows.Squeeze())  # latent (4C, H/2, W/2) -> data (C, H, W)
    return _normflows(flows, (4 * c, h // 2, w // 2))


def _normflows_residual(dim: int, layers: int, hidden: int, **_: object) -> nn.Module:
    import normflows as nf

    flows: list[nn.Module] = []
    for _ in range(layers):
        net = nf.nets.LipschitzMLP([dim, hidden, hidden, dim], init_zeros=True, lipschitz_const=0.9)
        flows += [nf.flows.Residual(net, reduce_memory=True), nf.flows.ActNorm(dim)]
    return _normflows(flows, (dim,))


def _glow_reason(dim: int, image_shape: tuple[int, int, int] | None) -> str | None:
    if image_shape is None:
        return "glow needs an image task (image_shape=(C, H, W))"
    c, h, w = image_shape
    if c * h * w != dim:
        return f"image_shape {image_shape} does not match dim {dim}"
    if h % 2 or w % 2:
        return f"glow squeezes 2x2 pixels: H and W must be even, got image_shape {image_shape}"
    return None


def _couplings_reason(dim: int, image_shape: tuple[int, int, int] | None) -> str | None:
    return None if dim >= 2 else f"coupling layers split the features in two: need D >= 2, got D = {dim}"


def _any(dim: int, image_shape: tuple[int, int, int] | None) -> str | None:
    return None


#: (lib, kind) -> (builder, feasibility check, log_prob exact?)
KINDS: dict[tuple[str, str], tuple[Callable[..., nn.Module], Callable[..., str | None], bool]] = {
    ("nflows", "maf"): (_nflows_maf, _any, True),
    ("nflows", "realnvp"): (_nflows_realnvp, _couplings_reason, True),
    ("nflows", "lu"): (_nflows_lu, _any, True),
    ("normflows", "realnvp"): (_normflows_realnvp, _couplings_reason, True),
    ("normflows", "nsf"): (_normflows_nsf, _couplings_reason, True),
    ("normflows", "glow"): (_normflows_glow, _glow_reason, True),
    ("normflows", "residual"): (_normflows_residual, _any, False),
}


def check_kind(lib: str, kind: str, dim: int, layers: int, image_shape: tuple[int, int, int] | None = None,
               *, autoregressive: bool = False) -> str | None:
    """None if ``library_flow(lib, kind, dim, layers, ...)`` can be built, else the reason it cannot."""
    if (lib, kind) not in KINDS:
        known = ", ".join(f"{a}/{b}" for a, b in KINDS)
        return f"unknown library flow {lib}/{kind}; known: {known}"
    if dim < 1:
        return f"dim must be positive, got {dim}"
    if layers < 1:
        return f"{lib}-{kind} needs at least one layer, got layers={layers}"
    if (lib, kind) == ("normflows", "nsf") and autoregressive:
        return None
    return KINDS[(lib, kind)][1](dim, image_shape)


def library_flow(lib: str, kind: str, dim: int, layers: int, *, hidden: int = 64,
                 image_shape: tuple[int, int, int] | None = None, preprocessing: nn.Module | None = None,
                 autoregressive: bool = False) -> LibraryFlow:
    """Build ``lib``'s ``kind`` flow on ``D = dim`` features with ``layers`` blocks (see the module docstring).

    ``autoregressive`` only applies to normflows ``nsf``. Raises ``ValueError`` naming the problem for an
    unknown or infeasible combination.
    """
    reason = check_kind(lib, kind, dim, layers, image_shape, autoregressive=autoregressive)
    if reason:
        raise ValueError(reason)
    if hidden < 1:
        raise ValueError(f"hidden must be positive, got {hidden}")
    builder, _, exact = KINDS[(lib, kind)]
    model = builder(dim, layers, hidden, image_shape=image_shape, autoregressive=autoregressive)
    event_shape = tuple(image_shape) if kind == "glow" else None
    return LibraryFlow(model, dim, lib=lib, kind=kind, event_shape=event_shape, preprocessing=preprocessing,
                       exact=exact)
