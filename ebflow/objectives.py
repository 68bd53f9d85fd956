"""Training objectives of EBFlow, a registry of pure functions ``loss(model, x, **hp) -> scalar``.

Every objective acts on the flow's input ``u = pre(x)`` (MaP: the fixed preprocessing is outside the trained
model; without preprocessing ``u = x``) and uses the energy ``E = model.flow_energy``, score ``s = -grad_u E``.

**Scale (one for all):** per sample, *summed* over the D dimensions, averaged over the batch; so ``ml`` is the
NLL per sample in nats (of ``u``) and the score-matching objectives all estimate the same quantity, the
Hyvarinen objective

    J(theta) = E_data[ 0.5 ||s(u)||^2 + tr(grad_u s(u)) ]       (= Fisher divergence - a data constant),

which ``sm`` computes exactly (D backward passes), ``ssm`` estimates with random slices, ``fdssm`` with
finite differences, and ``dsm`` estimates for the noise-smoothed data (it equals ``J`` of the data convolved
with N(0, std^2 I), i.e. ``J + O(std^2)``; the parameter-free term ``||eps||^2 / (2 std^2)`` of the usual DSM
loss is dropped, so no additive constant remains). The EBFlow code divides by D instead; that only rescales the
learning rate of non-adaptive optimisers.

Score-matching objectives take an optional energy regulariser ``lam * mean E`` (evaluated where the
objective evaluates E; 0 by default as in the paper's configs). None of ``ssm``, ``dsm``, ``fdssm``, ``sm``,
``sml`` touches a determinant; ``sml`` inverts the flow (linear solves) to draw its samples.
Random draws take an optional ``generator``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .model import EBFlow, randn

__all__ = ["Objective", "register", "get", "available", "ml", "sml", "ssm", "dsm", "fdssm", "sm"]

Objective = Callable[..., Tensor]
_REGISTRY: dict[str, Objective] = {}


def register(name: str) -> Callable[[Objective], Objective]:
    """Decorator adding ``fn(model, x, **hp) -> scalar`` to the registry under ``name``."""

    def deco(fn: Objective) -> Objective:
        if name in _REGISTRY:
            raise ValueError(f"objective {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def get(name: str) -> Objective:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown objective {name!r}; known: {', '.join(available())}") from None


def available() -> list[str]:
    return sorted(_REGISTRY)


def _with_grad(t: Tensor) -> Tensor:
    """``t`` itself if it is already part of a graph (objectives stay differentiable in ``x``), else a leaf
    copy requiring grad, so that scores ``grad_u E`` can be taken."""
    return t if t.requires_grad else t.detach().requires_grad_(True)


def _u(model: EBFlow, x: Tensor) -> Tensor:
    return _with_grad(model.preprocess(x)[0])


def _score(model: EBFlow, u: Tensor) -> tuple[Tensor, Tensor]:
    """``(E(u) [B], s(u) = -grad_u E [B, D])``, differentiable in ``u`` and the parameters."""
    energy, grad, _ = model.energy_score(u)
    return energy, -grad


def _regularise(loss: Tensor, energy: Tensor, lam: float) -> Tensor:
    return loss + lam * energy.mean() if lam else loss


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")


@register("ml")
def ml(model: EBFlow, x: Tensor) -> Tensor:
    """Exact NLL of ``u``: ``mean E(u) - sum_i log|det J_gi|`` (slogdet of every linear layer, O(D^3))."""
    return model.flow_energy(model.preprocess(x)[0]).mean() - model.linear_logdet()


@register("sml")
def sml(model: EBFlow, x: Tensor, *, num_samples: int | None = None,
        generator: torch.Generator | None = None) -> Tensor:
    """Sampling-based ML: ``mean E(u_data) - mean E(u_model)``, ``u_model`` exact samples drawn without grad.

    Its parameter gradient is an unbiased estimate of the ML gradient (``grad log Z = -E_model[grad E]``)
    with no log-det; its value is not an NLL. ``num_samples`` defaults to the batch size.
    """
    n = x.shape[0] if num_samples is None else int(num_samples)
    _check_positive(num_samples=n)
    u_model = model.sample(n, generator, preprocessed=True)
    return model.flow_energy(model.preprocess(x)[0]).mean() - model.flow_energy(u_model).mean()


def _slice_directions(shape: tuple[int, ...], like: Tensor, noise: str,
                      generator: torch.Generator | None) -> Tensor:
    v = randn(shape, like, generator)
    if noise == "gaussian":
        return v
    if noise == "rademacher":
        return torch.sign(v) + (v == 0).to(v.dtype)  # sign of a Gaussian; 0 has probability 0
    raise ValueError(f"unknown slice noise {noise!r}; expected 'rademacher' or 'gaussian'")


@register("ssm")
def ssm(model: EBFlow, x: Tensor, *, slices: int = 1, noise: str = "rademacher", lam: float = 0.0,
        generator: torch.Generator | None = None) -> Tensor:
    """Sliced score matching (variance-reduced form): ``0.5 ||s||^2 + v^T grad_u (v^T s)``.

    ``v`` is Rademacher or standard Gaussian (``E[v v^T] = I``); ``slices`` projections per sample, computed
    in one batched pass by repeating the batch. No Hessian: ``v^T (grad^2 E) v`` is one directional second
    derivative (:meth:`EBFlow.energy_score`, closed-form or two autograd passes).
    """
    _check_positive(slices=slices)
    u = model.preprocess(x.repeat(slices, 1))[0]
    v = _slice_directions(tuple(u.shape), u, noise, generator)
    energy, grad, vhv = model.energy_score(u, v)  # v^T grad_u (v^T s) = -v^T (grad^2 E) v
    loss = (0.5 * grad.pow(2).sum(dim=1) - vhv).mean()
    return _regularise(loss, energy, lam)


@register("dsm")
def dsm(model: EBFlow, x: Tensor, *, std: float = 1.0, lam: float = 0.0,
        generator: torch.Generator | None = None) -> Tensor:
    """Denoising score matching at ``u' = u + std * eps``: ``0.5 ||s(u') + eps / std||^2 - ||eps||^2 / (2 std^2)``.

    Dropping the parameter-free ``||eps||^2 / (2 std^2)`` leaves the gradient of the usual DSM loss unchanged
    and makes the expectation equal the Hyvarinen objective ``J`` of the smoothed data (Stein's lemma:
    ``E[s(u + std eps) . eps] = std E[tr grad s]``).
    """
    _check_positive(std=std)
    u = model.preprocess(x)[0]
    eps = randn(tuple(u.shape), u, generator)
    energy, grad, _ = model.energy_score(u + std * eps)  # s = -grad
    loss = (0.5 * grad.pow(2).sum(dim=1) - (grad * eps).sum(dim=1) / std).mean()
    return _regularise(loss, energy, lam)


@register("fdssm")
def fdssm(model: EBFlow, x: Tensor, *, eps: float = 1.0, slices: int = 1, lam: float = 0.0,
          generator: torch.Generator | None = None) -> Tensor:
    """Finite-difference sliced score matching, no second derivative.

    ``v = eps * w / ||w||`` (``w ~ N(0, I)``, so ``E[v v^T] = eps^2 / D I``); ``E`` at ``u, u + v, u - v`` in one
    batched pass; per sample ``(D / eps^2) [ (E(u+v) - E(u-v))^2 / 8 - (E(u+v) + E(u-v) - 2 E(u)) ]``, the
    central-difference form of ``0.5 (v^T s)^2 + v^T grad(v^T s) v`` (exact for quadratic energies).
    """
    _check_positive(eps=eps, slices=slices)
    u = model.preprocess(x.repeat(slices, 1))[0]
    w = randn(tuple(u.shape), u, generator)
    v = eps * w / w.norm(dim=1, keepdim=True)
    e0, e_plus, e_minus = model.flow_energy(torch.cat([u, u + v, u - v])).chunk(3)
    per_sample = (e_plus - e_minus).pow(2) / 8 - (e_plus + e_minus - 2 * e0)
    loss = per_sample.mean() * (model.dim / eps**2)
    return _regularise(loss, e0, lam)


@register("sm")
def sm(model: EBFlow, x: Tensor, *, lam: float = 0.0) -> Tensor:
    """Exact score matching ``0.5 ||s||^2 + tr(grad_u s)``; the trace costs D backward passes (small D only)."""
    u = _u(model, x)
    energy, s = _score(model, u)
    trace = torch.zeros_like(energy)
    for i in range(model.dim):
        (row,) = torch.autograd.grad(s[:, i].sum(), u, create_graph=True)
        trace = trace + row[:, i]
    loss = (0.5 * s.pow(2).sum(dim=1) + trace).mean()
    return _regularise(loss, energy, lam)
