"""MCMC kernels on an unnormalised log density, for a batch of independent chains ``x`` of shape ``[C, D]``.

``log_target`` is any callable ``[C, D] -> [C]`` (differentiable for ``mala``/``ula``). A *proposal* is any
object with ``sample_and_log_prob(n, generator) -> (x [n, D], log_q [n])`` and ``log_prob(x) -> [n]``
(``models.RealNVP`` and ``models.GaussianBase`` are).

- ``isir``: iterated sampling-importance-resampling (Samsonov et al. 2022; the global step of flowMC-EBM,
  App. C.1): pool the current state with ``N`` fresh proposals and pick one with weights ``∝ pi / lambda``.
  This kernel leaves ``pi`` invariant for any proposal ``lambda`` whose support covers ``pi``'s.
- ``mala``: Metropolis-adjusted Langevin, ``x' = x + h grad log pi(x) + sqrt(2h) xi``, accepted with the
  Metropolis-Hastings ratio; leaves ``pi`` invariant.
- ``ula``: the same move without the accept/reject step (biased for ``h > 0``).
- ``flowmc``: ``[1 i-SIR + k MALA] x r`` (Algorithm 5 with i-SIR as the global step).
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import torch
from torch import Tensor

LogDensity = Callable[[Tensor], Tensor]


class Proposal(Protocol):
    def sample_and_log_prob(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]: ...

    def log_prob(self, x: Tensor) -> Tensor: ...


def _check_chains(x: Tensor) -> None:
    if x.ndim != 2:
        raise ValueError(f"chains must have shape [C, D], got {tuple(x.shape)}")


def _check_step(step: float, n_steps: int) -> None:
    if not step > 0 or not math.isfinite(step):
        raise ValueError(f"step size must be a finite number > 0, got {step}")
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")


def _value_and_grad(log_target: LogDensity, x: Tensor) -> tuple[Tensor, Tensor]:
    """``log pi(x)`` and ``grad_x log pi(x)``, detached (no gradient reaches the target's parameters)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        lp = log_target(x)
        (g,) = torch.autograd.grad(lp.sum(), x)
    return lp.detach(), g.detach()


@torch.no_grad()
def isir(log_target: LogDensity, flow: Proposal, x: Tensor, n_proposals: int,
         generator: torch.Generator | None = None) -> tuple[Tensor, float]:
    """One i-SIR step per chain. Returns the new states and the fraction of chains that moved to a proposal.

    For chain ``c`` the pool is ``{x_c, y_c1..y_cN}`` with ``y ~ lambda``; index ``j`` is drawn with probability
    ``w_j / sum w``, ``w = pi / lambda``. Log-weights are normalised with a softmax, so ``pi`` may be unnormalised.
    """
    _check_chains(x)
    if int(n_proposals) != n_proposals or n_proposals < 1:
        raise ValueError(f"n_proposals must be an integer >= 1, got {n_proposals}")
    c, d = x.shape
    y, log_q_y = flow.sample_and_log_prob(c * n_proposals, generator)
    y = y.to(x.dtype).reshape(c, n_proposals, d)
    log_w_y = (log_target(y.reshape(-1, d)) - log_q_y.to(x.dtype)).reshape(c, n_proposals)
    log_w_x = log_target(x) - flow.log_prob(x).to(x.dtype)
    log_w = torch.cat([log_w_x[:, None], log_w_y], dim=1)
    # a NaN/-inf weight (e.g. a proposal outside the target's support) must never be picked
    log_w = torch.nan_to_num(log_w, nan=-math.inf, posinf=math.inf)
    probs = torch.softmax(log_w, dim=1)
    j = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    pool = torch.cat([x[:, None, :], y], dim=1)
    new = pool[torch.arange(c, device=x.device), j]
    return new, float((j > 0).float().mean())


def mala(log_target: LogDensity, x: Tensor, step: float, n_steps: int,
         generator: torch.Generator | None = None) -> tuple[Tensor, float]:
    """``n_steps`` MALA steps of size ``step``. Returns the final states and the mean acceptance rate.

    Proposal ``q(x'|x) = N(x + h grad log pi(x), 2h I)``; accept with probability
    ``min(1, pi(x') q(x|x') / (pi(x) q(x'|x)))``, independently per chain.
    """
    _check_chains(x)
    _check_step(step, n_steps)
    x = x.detach()
    if n_steps == 0:
        return x, float("nan")
    lp, g = _value_and_grad(log_target, x)
    accepted = torch.zeros((), device=x.device)
    for _ in range(n_steps):
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        y = x + step * g + math.sqrt(2 * step) * noise
        lp_y, g_y = _value_and_grad(log_target, y)
        log_q_fwd = -(y - x - step * g).pow(2).sum(-1) / (4 * step)
        log_q_bwd = -(x - y - step * g_y).pow(2).sum(-1) / (4 * step)
        log_alpha = torch.nan_to_num(lp_y - lp + log_q_bwd - log_q_fwd, nan=-math.inf)
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        acc = torch.log(u) < log_alpha
        x = torch.where(acc[:, None], y, x)
        lp = torch.where(acc, lp_y, lp)
        g = torch.where(acc[:, None], g_y, g)
        accepted = accepted + acc.float().mean()
    return x, float(accepted / n_steps)


def ula(log_target: LogDensity, x: Tensor, step: float, n_steps: int,
        generator: torch.Generator | None = None) -> Tensor:
    """``n_steps`` unadjusted Langevin steps ``x <- x + h grad log pi(x) + sqrt(2h) xi``; returns final states."""
    _check_chains(x)
    _check_step(step, n_steps)
    x = x.detach()
    for _ in range(n_steps):
        _, g = _value_and_grad(log_target, x)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + step * g + math.sqrt(2 * step) * noise
    return x


def flowmc(log_target: LogDensity, flow: Proposal, x: Tensor, n_proposals: int, mala_steps: int, step: float,
           repeats: int = 1, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """``repeats`` rounds of (1 i-SIR step with ``n_proposals`` flow proposals, then ``mala_steps`` MALA steps).

    Returns the final states and ``{"isir_accept", "mala_accept"}`` (means over rounds; NaN if no MALA step).
    """
    if int(repeats) != repeats or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats}")
    _check_step(step, mala_steps)
    g_acc, l_acc = 0.0, 0.0
    for _ in range(repeats):
        x, a = isir(log_target, flow, x, n_proposals, generator)
        x, b = mala(log_target, x, step, mala_steps, generator)
        g_acc, l_acc = g_acc + a, l_acc + b
    return x, {"isir_accept": g_acc / repeats, "mala_accept": l_acc / repeats}
