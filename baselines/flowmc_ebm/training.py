"""Persistent-chain EBM training: flowMC-EBM (Grenioux et al. 2023, Algorithm 1) and the ULA-EBM ablation.

One ``step(x_data)``:

1. run the sampler from the persistent states ``x~`` to get negatives ``x-`` (flowMC: ``[1 i-SIR + k MALA] x r``
   with the flow as i-SIR proposal; ULA: ``n`` unadjusted Langevin steps), on the tilted EBM
   ``p~(x) = exp(-E(x)) rho(x)``;
2. set ``x~ <- x-``;
3. one optimiser step on ``mean E(x+) - mean E(x-) + l2 * mean(E(x+)^2 + E(x-)^2)`` (the contrastive estimate of
   the negative log-likelihood gradient, App. B; ``log rho`` has no parameters so the tilt does not enter);
4. flowMC-EBM only: one maximum-likelihood step of the flow on the negatives (forward KL(EBM || flow)).

Choice where the paper is silent: negatives are the chains' final states only (the paper also uses whole chain
trajectories in some experiments).
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from .models import RealNVP, TiltedEBM
from .samplers import flowmc, ula


class _PersistentEBM(abc.ABC):
    def __init__(self, ebm: TiltedEBM, n_chains: int, step: float, lr: float, l2: float,
                 init: Tensor, generator: torch.Generator | None) -> None:
        if not step > 0:
            raise ValueError(f"step size must be > 0, got {step}")
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        if l2 < 0:
            raise ValueError(f"l2 penalty must be >= 0, got {l2}")
        if n_chains < 1 or init.shape[0] != n_chains:
            raise ValueError(f"need n_chains >= 1 initial states, got {tuple(init.shape)} for {n_chains}")
        self.ebm = ebm
        self.step_size = float(step)
        self.l2 = float(l2)
        self.generator = generator
        self.states = init.detach()
        self.opt = torch.optim.Adam(ebm.energy.parameters(), lr=lr)

    @abc.abstractmethod
    def _negatives(self) -> tuple[Tensor, dict[str, float]]:
        """Run the sampler from ``self.states``; return the negatives and sampler statistics."""

    def _ebm_step(self, x_pos: Tensor, x_neg: Tensor) -> float:
        e_pos, e_neg = self.ebm.energy(x_pos), self.ebm.energy(x_neg)
        loss = e_pos.mean() - e_neg.mean()
        if self.l2 > 0:
            loss = loss + self.l2 * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def step(self, x_data: Tensor) -> dict[str, float]:
        """One training step (see the module docstring); returns the losses and acceptance rates."""
        x_neg, info = self._negatives()
        self.states = x_neg
        info["ebm_loss"] = self._ebm_step(x_data, x_neg)
        return info


class FlowMCEBM(_PersistentEBM):
    """flowMC-EBM: persistent flowMC chains on the tilted EBM; the flow is fitted by ML to the negatives."""

    def __init__(self, ebm: TiltedEBM, flow: RealNVP, *, n_chains: int = 256, n_proposals: int = 32,
                 mala_steps: int = 4, step: float = 0.01, repeats: int = 2, lr: float = 1e-3,
                 lr_flow: float | None = None, l2: float = 0.0, generator: torch.Generator | None = None) -> None:
        if n_proposals < 1:
            raise ValueError(f"n_proposals must be >= 1, got {n_proposals}")
        if mala_steps < 0 or repeats < 1:
            raise ValueError(f"need mala_steps >= 0 and repeats >= 1, got {mala_steps}, {repeats}")
        with torch.no_grad():
            init = flow.sample(n_chains, generator)
        super().__init__(ebm, n_chains, step, lr, l2, init, generator)
        self.flow = flow
        self.n_proposals = int(n_proposals)
        self.mala_steps = int(mala_steps)
        self.repeats = int(repeats)
        self.flow_opt = torch.optim.Adam(flow.parameters(), lr=lr if lr_flow is None else lr_flow)

    def _negatives(self) -> tuple[Tensor, dict[str, float]]:
        return flowmc(self.ebm.log_unnorm, self.flow, self.states, self.n_proposals, self.mala_steps,
                      self.step_size, self.repeats, self.generator)

    def step(self, x_data: Tensor) -> dict[str, float]:
        info = super().step(x_data)
        flow_loss = -self.flow.log_prob(self.states).mean()
        self.flow_opt.zero_grad(set_to_none=True)
        flow_loss.backward()
        self.flow_opt.step()
        info["flow_loss"] = float(flow_loss.detach())
        return info

    def sample(self, n: int) -> Tensor:
        """``n`` fresh flowMC chains started from the flow, run for ``repeats`` rounds."""
        with torch.no_grad():
            x = self.flow.sample(n, self.generator)
        return flowmc(self.ebm.log_unnorm, self.flow, x, self.n_proposals, self.mala_steps, self.step_size,
                      self.repeats, self.generator)[0]


class ULAEBM(_PersistentEBM):
    """ULA-EBM ablation: persistent ULA chains on the tilted EBM (initialised from ``rho``), no flow."""

    def __init__(self, ebm: TiltedEBM, *, n_chains: int = 256, ula_steps: int = 10, step: float = 0.01,
                 lr: float = 1e-3, l2: float = 0.0, generator: torch.Generator | None = None) -> None:
        if ula_steps < 1:
            raise ValueError(f"ula_steps must be >= 1, got {ula_steps}")
        init = ebm.base.sample(n_chains, generator)
        super().__init__(ebm, n_chains, step, lr, l2, init, generator)
        self.ula_steps = int(ula_steps)

    def _negatives(self) -> tuple[Tensor, dict[str, float]]:
        return ula(self.ebm.log_unnorm, self.states, self.step_size, self.ula_steps, self.generator), {}

    def sample(self, n: int, n_steps: int | None = None) -> Tensor:
        """``n`` chains started from (resampled) persistent states, run for ``n_steps`` ULA steps."""
        idx = torch.randint(self.states.shape[0], (n,), generator=self.generator, device=self.states.device)
        steps = self.ula_steps if n_steps is None else n_steps
        return ula(self.ebm.log_unnorm, self.states[idx], self.step_size, steps, self.generator)
