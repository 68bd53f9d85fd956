"""2-D toy distributions with exact (and exactly smoothed) densities."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import numpy as np

from .._lazy import lazy
from .base import _LOG_2PI, Task, _from_sampler, _mixture_task, register_task

torch = lazy("torch")  # imported when a task is built (the static checks read only declarations)

if TYPE_CHECKING:
    from torch import Tensor


# --- 2-D toys --------------------------------------------------------------------------------------------------

_SINE_HALF_WIDTH, _SINE_AMP, _SINE_FREQ, _SINE_NOISE = 4.0, 2.0, 1.5, 0.25


@register_task("sine", dim=2)
def sine(seed: int = 0, n_train: int = 20000, n_test: int = 2000) -> Task:
    """x1 ~ U[-4, 4], x2 | x1 ~ N(2 sin(1.5 x1), 0.25^2): a noisy sine curve with a closed-form density.

    p(x) = 1[|x1| <= 4] / 8 * N(x2; 2 sin(1.5 x1), 0.25^2). (EBFlow's toy 'Sine' is a noisy sine curve; the
    exact constants are ours, chosen so that the density is known in closed form.)
    """
    h, a, f, s = _SINE_HALF_WIDTH, _SINE_AMP, _SINE_FREQ, _SINE_NOISE

    def sampler(n: int, gen: torch.Generator) -> Tensor:
        x1 = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * h
        x2 = a * torch.sin(f * x1) + s * torch.randn(n, generator=gen, dtype=torch.float64)
        return torch.stack([x1, x2], 1).float()

    def log_prob(x: Tensor) -> Tensor:
        x1, x2 = x[..., 0], x[..., 1]
        lp = -math.log(2 * h) - 0.5 * ((x2 - a * torch.sin(f * x1)) / s).square() - math.log(s) - 0.5 * _LOG_2PI
        return torch.where(x1.abs() <= h, lp, torch.full_like(lp, -math.inf))

    return _from_sampler("sine", 2, seed, n_train, n_test, sampler, log_prob=log_prob,
                         smoothed_log_prob=_sine_smoothed_log_prob, bounds=((-4.5, 4.5), (-3.5, 3.5)),
                         description="noisy sine: x1 ~ U[-4,4], x2 ~ N(2 sin(1.5 x1), 0.25^2); exact density "
                                     "(zero outside |x1| <= 4)",
                         source="EBFlow toy 'Sine' (Chao et al. 2023), constants ours")


def _gauss_legendre(lo: float, hi: float, panels: int, order: int = 8) -> tuple[Tensor, Tensor]:
    """Nodes and log-weights of a composite Gauss-Legendre rule on [lo, hi] (float64)."""
    t, w = np.polynomial.legendre.leggauss(order)
    h = (hi - lo) / panels
    left = lo + h * np.arange(panels)[:, None]
    nodes = (left + (t + 1) * h / 2).ravel()
    return torch.from_numpy(nodes), torch.from_numpy(np.log(np.tile(w * h / 2, panels)))


def _sine_smoothed_log_prob(sd: float) -> Callable[[Tensor], Tensor]:
    """Sine convolved with N(0, sd^2 I): p_s(x) = int_{-4}^{4} 1/8 N(x1; t, sd^2) N(x2; 2 sin 1.5t, 0.25^2 + sd^2) dt,
    by composite Gauss-Legendre quadrature in t (nodes 8/2048 apart, far below sd for sd >= 0.02)."""
    if sd < 0.02:
        raise ValueError(f"sine: smooth must be 0 or >= 0.02 (quadrature resolution), got {sd}")
    t, lw = _gauss_legendre(-_SINE_HALF_WIDTH, _SINE_HALF_WIDTH, 256)
    v2 = _SINE_NOISE**2 + sd**2

    def log_prob(x: Tensor) -> Tensor:
        tt, w = t.to(x), lw.to(x)
        out = []
        for xb in x.split(4096):
            a = -0.5 * (xb[:, :1] - tt).square() / sd**2 - 0.5 * (xb[:, 1:] - _SINE_AMP * torch.sin(_SINE_FREQ * tt)).square() / v2
            out.append(torch.logsumexp(a + w, -1))
        return torch.cat(out) - math.log(2 * _SINE_HALF_WIDTH) - _LOG_2PI - 0.5 * math.log(sd**2 * v2)

    return log_prob


_SWIRL_TURNS, _SWIRL_R0, _SWIRL_R1, _SWIRL_NOISE, _SWIRL_NODES = 2.0, 0.5, 4.0, 0.2, 2048


def _swirl_curve(u: Tensor) -> Tensor:
    r = _SWIRL_R0 + (_SWIRL_R1 - _SWIRL_R0) * u
    th = 2 * math.pi * _SWIRL_TURNS * u
    return torch.stack([r * torch.cos(th), r * torch.sin(th)], -1)


@register_task("swirl", dim=2)
def swirl(seed: int = 0, n_train: int = 20000, n_test: int = 2000) -> Task:
    """A noisy spiral: u ~ U[0, 1], x = c(u) + 0.2 eps, c(u) = r(u) (cos 4 pi u, sin 4 pi u), r = 0.5 + 3.5 u.

    p(x) = int_0^1 N(x; c(u), 0.2^2 I) du has no closed form; ``log_prob`` evaluates it by composite
    Gauss-Legendre quadrature in u with 2048 nodes (node spacing along the curve <= 0.03, far below the noise
    scale 0.2): numerically exact (log-density within 1e-12 of a 32768-node rule where log p > -30), not
    grid-normalised.
    """

    def sampler(n: int, gen: torch.Generator) -> Tensor:
        u = torch.rand(n, generator=gen, dtype=torch.float64)
        return (_swirl_curve(u) + _SWIRL_NOISE * torch.randn(n, 2, generator=gen, dtype=torch.float64)).float()

    return _from_sampler("swirl", 2, seed, n_train, n_test, sampler, log_prob=swirl_log_prob(_SWIRL_NODES),
                         smoothed_log_prob=lambda sd: swirl_log_prob(_SWIRL_NODES, math.hypot(_SWIRL_NOISE, sd)),
                         bounds=((-5.0, 5.0), (-5.0, 5.0)),
                         description="noisy 2-turn spiral, radius 0.5..4, noise 0.2; density by 2048-node Gauss-"
                                     "Legendre quadrature along the curve (numerically exact)",
                         source="EBFlow toy 'Swirl' (Chao et al. 2023), constants ours")


def swirl_log_prob(nodes: int, noise: float = _SWIRL_NOISE) -> Callable[[Tensor], Tensor]:
    """The swirl density by composite 8-point Gauss-Legendre quadrature in u with ``nodes`` nodes in all
    (``nodes // 8`` equal panels); exposed to test the quadrature. Unlike the midpoint rule, whose end-point
    error is O(h^2) where the curve stops, this is of high order on the whole of [0, 1]. ``noise`` is the
    isotropic noise sd around the curve (smoothing by N(0, s^2 I) makes it sqrt(0.2^2 + s^2))."""
    u, log_w = _gauss_legendre(0.0, 1.0, max(1, nodes // 8))

    def log_prob(x: Tensor) -> Tensor:
        c, lw = _swirl_curve(u).to(x), log_w.to(x)
        out = [torch.logsumexp(lw - 0.5 * torch.cdist(xb, c).square() / noise**2, -1) for xb in x.split(4096)]
        return torch.cat(out) - 2 * math.log(noise) - _LOG_2PI

    return log_prob


@register_task("checkerboard", dim=2)
def checkerboard(seed: int = 0, n_train: int = 20000, n_test: int = 2000) -> Task:
    """Uniform on the 8 'black' squares of a 4 x 4 board of 2 x 2 squares covering [-4, 4]^2.

    Square (i, j) (i, j = 0..3 from the lower-left corner) is black when i + j is even; the density is
    1/32 there and 0 elsewhere (log_prob -inf), the classic FFJORD/EBFlow checkerboard.
    """

    def sampler(n: int, gen: torch.Generator) -> Tensor:
        i = torch.randint(0, 4, (n,), generator=gen)
        j = 2 * torch.randint(0, 2, (n,), generator=gen) + i % 2
        u = torch.rand(n, 2, generator=gen, dtype=torch.float64)
        return (-4.0 + 2.0 * (torch.stack([i, j], 1) + u)).float()

    def log_prob(x: Tensor) -> Tensor:
        cell = torch.floor((x + 4.0) / 2.0)
        inside = ((cell >= 0) & (cell <= 3)).all(-1) & (cell.sum(-1) % 2 == 0)
        return torch.where(inside, torch.full_like(x[..., 0], -math.log(32.0)),
                           torch.full_like(x[..., 0], -math.inf))

    return _from_sampler("checkerboard", 2, seed, n_train, n_test, sampler, log_prob=log_prob,
                         smoothed_log_prob=_checkerboard_smoothed_log_prob, bounds=((-4.0, 4.0), (-4.0, 4.0)),
                         description="uniform on 8 of the 16 2x2 squares of [-4,4]^2 (density 1/32); exact",
                         source="EBFlow toy 'Checkerboard' (Chao et al. 2023), FFJORD layout")


def _log_ndtr_diff(hi: Tensor, lo: Tensor) -> Tensor:
    """log(Phi(hi) - Phi(lo)) for hi > lo, stable in both tails (reflects to the left tail when lo > 0)."""
    flip = lo > 0
    a = torch.where(flip, -lo, hi)
    b = torch.where(flip, -hi, lo)
    la, lb = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    return la + torch.log(-torch.expm1(lb - la))


def _checkerboard_smoothed_log_prob(sd: float) -> Callable[[Tensor], Tensor]:
    """Checkerboard convolved with N(0, sd^2 I), in closed form: p_s(x) = 1/32 sum over the 8 black squares
    [a1, a1+2] x [a2, a2+2] of prod_d (Phi((a_d + 2 - x_d)/sd) - Phi((a_d - x_d)/sd)) (log-space, stable)."""
    corners = torch.tensor([[-4.0 + 2 * i, -4.0 + 2 * j] for i in range(4) for j in range(4) if (i + j) % 2 == 0],
                           dtype=torch.float64)  # [8, 2] lower-left corners

    def log_prob(x: Tensor) -> Tensor:
        a = corners.to(x)
        lo = (a[None] - x[:, None]) / sd  # [N, 8, 2]
        per_square = _log_ndtr_diff(lo + 2.0 / sd, lo).sum(-1)
        return torch.logsumexp(per_square, -1) - math.log(32.0)

    return log_prob


def _eight_gaussians(name: str, seed: int, n_train: int, n_test: int) -> Task:
    ang = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    means = torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    return _mixture_task(name, seed, n_train, n_test, means, torch.full((8,), 0.15**2), torch.full((8,), 1 / 8),
                         ((-2.0, 2.0), (-2.0, 2.0)),
                         "8 equal-weight N(mu_i, 0.15^2 I), mu_i = (cos, sin)(2 pi i / 8) on the unit circle; exact",
                         "flowMC-EBM Table 1 (Grenioux et al. 2023)")


@register_task("8gaussians", dim=2)
def eight_gaussians(seed: int = 0, n_train: int = 20000, n_test: int = 2000) -> Task:
    """1/8 sum_i N(mu_i, 0.15^2 I), mu_i = (cos 2 pi i/8, sin 2 pi i/8)."""
    return _eight_gaussians("8gaussians", seed, n_train, n_test)


@register_task("eight_gaussians", dim=2)
def eight_gaussians_alias(seed: int = 0, n_train: int = 20000, n_test: int = 2000) -> Task:
    """Alias of ``8gaussians`` (the name the presets use)."""
    return _eight_gaussians("eight_gaussians", seed, n_train, n_test)


_RING_SD = 0.15


@register_task("rings", dim=2)
def rings(seed: int = 0, n_train: int = 20000, n_test: int = 2000) -> Task:
    """Uniform angle, radius r ~ 1/4 sum_{i=0..3} N(i + 1, 0.15^2).

    x = r (cos t, sin t). Since a negative r lands at |r| on the opposite side, |x| has density
    q(rho) = p_r(rho) + p_r(-rho), and in Cartesian coordinates p(x) = q(|x|) / (2 pi |x|) (polar Jacobian).
    """
    centres = torch.arange(1, 5, dtype=torch.float64)

    def sampler(n: int, gen: torch.Generator) -> Tensor:
        r = centres[torch.randint(0, 4, (n,), generator=gen)] + _RING_SD * torch.randn(n, generator=gen,
                                                                                       dtype=torch.float64)
        t = 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)
        return torch.stack([r * torch.cos(t), r * torch.sin(t)], 1).float()

    def log_prob(x: Tensor) -> Tensor:
        rho = x.norm(dim=-1).clamp_min(torch.finfo(x.dtype).tiny)[:, None]
        c = centres.to(x)
        comp = -0.5 * ((torch.cat([rho, -rho], 1)[:, :, None] - c) / _RING_SD).square()  # [N, 2, 4]
        log_q = torch.logsumexp(comp.flatten(1), -1) - math.log(4) - math.log(_RING_SD) - 0.5 * _LOG_2PI
        return log_q - torch.log(2 * math.pi * rho[:, 0])

    return _from_sampler("rings", 2, seed, n_train, n_test, sampler, log_prob=log_prob,
                         smoothed_log_prob=_rings_smoothed_log_prob, bounds=((-5.0, 5.0), (-5.0, 5.0)),
                         description="4 rings: uniform angle, radius ~ 1/4 sum N(i+1, 0.15^2), i=0..3; exact "
                                     "(includes the 1/(2 pi r) polar Jacobian)",
                         source="flowMC-EBM Table 1 (Grenioux et al. 2023)")


def _rings_smoothed_log_prob(sd: float) -> Callable[[Tensor], Tensor]:
    """Rings convolved with N(0, sd^2 I). The angular integral is closed form: a ring of radius r smoothed is
    exp(-(rho - r)^2 / (2 sd^2)) i0e(rho r / sd^2) / (2 pi sd^2) at |x| = rho (i0e the scaled Bessel I0); the
    radius law q(r) = p_r(r) + p_r(-r) is integrated by composite Gauss-Legendre on [0, 6] (3072 nodes)."""
    if sd < 0.02:
        raise ValueError(f"rings: smooth must be 0 or >= 0.02 (quadrature resolution), got {sd}")
    r, lw = _gauss_legendre(0.0, 6.0, 384)
    c = torch.arange(1, 5, dtype=torch.float64)
    comp = -0.5 * ((torch.stack([r, -r], 1)[:, :, None] - c) / _RING_SD).square()
    log_q = torch.logsumexp(comp.flatten(1), -1) - math.log(4) - math.log(_RING_SD) - 0.5 * _LOG_2PI
    log_wq = lw + log_q

    def log_prob(x: Tensor) -> Tensor:
        rr, w = r.to(x), log_wq.to(x)
        out = []
        for xb in x.split(2048):
            rho = xb.norm(dim=-1, keepdim=True)
            a = -0.5 * (rho - rr).square() / sd**2 + torch.log(torch.special.i0e(rho * rr / sd**2))
            out.append(torch.logsumexp(a + w, -1))
        return torch.cat(out) - math.log(2 * math.pi * sd**2)

    return log_prob


@register_task("mixture-2to1", dim=2)
def mixture_2to1(seed: int = 0, n_train: int = 20000, n_test: int = 2000) -> Task:
    """1/3 N(-1.5 * 1, 0.05 I) + 2/3 N(+1.5 * 1, 0.1 I) (covariances, i.e. variances 0.05 and 0.1)."""
    means = torch.tensor([[-1.5, -1.5], [1.5, 1.5]], dtype=torch.float64)
    return _mixture_task("mixture-2to1", seed, n_train, n_test, means, torch.tensor([0.05, 0.1]),
                         torch.tensor([1 / 3, 2 / 3]), ((-3.5, 3.5), (-3.5, 3.5)),
                         "1/3 N(-1.5*1, 0.05 I) + 2/3 N(1.5*1, 0.1 I); exact",
                         "flowMC-EBM motivating example (Grenioux et al. 2023, Fig. 1)")


@register_task("mixture-4modes", dim=2)
def mixture_4modes(seed: int = 0, n_train: int = 20000, n_test: int = 2000) -> Task:
    """Weights 0.1, 0.2, 0.3, 0.4 on N((m, 0), 0.05 I), m = -3, -1, 1, 3."""
    means = torch.tensor([[-3.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    return _mixture_task("mixture-4modes", seed, n_train, n_test, means, torch.full((4,), 0.05),
                         torch.tensor([0.1, 0.2, 0.3, 0.4]), ((-4.5, 4.5), (-2.0, 2.0)),
                         "N((m,0), 0.05 I) at m = -3,-1,1,3 with weights 0.1,0.2,0.3,0.4; exact",
                         "flowMC-EBM Table 3 (Grenioux et al. 2023)")
