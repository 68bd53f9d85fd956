"""Gaussian tasks of any D: a Gaussian mixture and a rotated anisotropic Gaussian (the scaling task)."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

from .._lazy import lazy
from .base import _LOG_2PI, Task, _from_sampler, _mixture_task, register_task

torch = lazy("torch")  # imported when a task is built (the static checks read only declarations)

if TYPE_CHECKING:
    from torch import Tensor


# --- any-D Gaussians ----------------------------------------------------------------------------------------------

def _check_dim(name: str, dim: int, lo: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < lo:
        raise ValueError(f"task {name!r} needs an integer dim >= {lo}, got {dim!r}")
    return int(dim)


@register_task("gmm")
def gmm(dim: int, seed: int = 0, n_train: int = 20000, n_test: int = 2000, a: float = 0.5919) -> Task:
    """4 equal-weight N(mu_i, I_d): mu1 = a 1, mu2 = a (-1,..,-1, 1,..,1) (first d//2 entries -1), mu3 = -mu2,
    mu4 = -mu1, with a = 0.5919 as printed in Grenioux et al. (2023), Table 2 (d = 16/32/64).

    With unit covariances the printed a puts neighbouring modes only 2a sqrt(d/2) apart (1.18 at d = 2,
    3.35 at d = 16, 6.7 at d = 64, in units of the standard deviation), so the modes overlap heavily at small
    d; ``a`` can be overridden.
    """
    dim = _check_dim("gmm", dim, 2)
    ones = torch.ones(dim, dtype=torch.float64)
    half = torch.cat([-ones[: dim // 2], ones[dim // 2:]])
    mu = float(a) * torch.stack([ones, half, -half, -ones])
    sep = 2 * float(a) * math.sqrt(dim // 2)
    task = _mixture_task("gmm", seed, n_train, n_test, mu, torch.ones(4), torch.full((4,), 0.25), None,
                         f"4 equal-weight N(mu_i, I_{dim}), mu = a(1), a(-1..1), -a(-1..1), -a(1), a = {a}; exact; "
                         f"nearest modes {sep:.2f} sd apart (the printed a gives heavily overlapping modes)",
                         "flowMC-EBM Table 2 (Grenioux et al. 2023)")
    task.options["a"] = float(a)
    return task


def _gaussian_default_n(dim: int) -> int:
    return int(min(20000, max(2000, 8_000_000 // dim)))


@functools.lru_cache(maxsize=4)
def _gaussian_params(dim: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(mu, Q, sd): mu ~ N(0, I), Q a Haar-random orthogonal matrix (QR of a Gaussian matrix, signs fixed by
    diag R), sd_i = 3^(u_i) with u evenly spaced on [-1/2, 1/2]. Cached: the QR is O(D^3) (seconds at D=4096)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(dim, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    q = q * torch.sign(r.diagonal())
    u = torch.linspace(-0.5, 0.5, dim, dtype=torch.float64) if dim > 1 else torch.zeros(1, dtype=torch.float64)
    return mu, q, 3.0**u


@register_task("gaussian")
def gaussian(dim: int, seed: int = 0, n_train: int | None = None, n_test: int = 2000) -> Task:
    """N(mu, Sigma) in any D with a fixed random, well-conditioned covariance drawn from ``seed``.

    Sigma = Q diag(lambda) Q^T with Q Haar-random orthogonal and eigenvalues lambda_i = 9^(u_i), u evenly spaced
    on [-1/2, 1/2]: the spectrum spans [1/3, 3], so cond(Sigma) = 9 exactly (D >= 2) and log det Sigma = 0, at
    every D; only the eigenbasis (and mu ~ N(0, I)) is random. Sampling x = mu + Q (sqrt(lambda) z) and
    ``log_prob`` (whitening by Q^T) cost O(N D^2); building costs one O(D^3) QR (cached per (D, seed)).
    Default n_train = min(20000, max(2000, 8e6 / D)) keeps large-D builds cheap. ``truth`` holds ``mean``,
    ``eigvecs`` (Q) and ``eigvals`` (lambda).
    """
    dim = _check_dim("gaussian", dim, 1)
    mu, q, sd = _gaussian_params(dim, int(seed))
    mu32, q32, sd32 = mu.float(), q.float(), sd.float()

    def sampler(n: int, gen: torch.Generator) -> Tensor:
        return mu32 + (torch.randn(n, dim, generator=gen) * sd32) @ q32.T

    def log_prob(x: Tensor) -> Tensor:
        w = ((x.double() - mu) @ q) / sd
        return (-0.5 * w.square().sum(-1) - sd.log().sum() - 0.5 * dim * _LOG_2PI).to(x.dtype)

    g = torch.Generator().manual_seed(int(seed) + 7919)  # data draws, apart from the parameter stream
    return _from_sampler("gaussian", dim, g, _gaussian_default_n(dim) if n_train is None else n_train,
                         n_test, sampler, log_prob=log_prob,
                         description=f"N(mu, Q diag(lambda) Q^T) in D={dim}, Q random orthogonal, lambda in "
                                     f"[1/3, 3], cond = 9; exact",
                         source="this suite (scaling task)", truth={"mean": mu, "eigvecs": q, "eigvals": sd**2})
