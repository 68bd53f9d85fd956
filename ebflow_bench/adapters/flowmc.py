"""Adapters for the flowMC-EBM peer (Grenioux et al. 2023) and its no-flow ablation, persistent ULA-EBM.

Both train a tilted EBM ``p(x) ∝ exp(-E(x)) rho(x)`` with ``rho = N(0, sigma^2 I)``, ``sigma^2`` the largest
per-dimension variance of the training data. ``layers`` is the number of RealNVP coupling blocks of the flow
(flowMC-EBM); the EBM's size is set by ``ebm_hidden``/``ebm_depth``. Defaults are the paper's (App. C) scaled
down for a CPU: 256 persistent chains, i-SIR with 32 proposals, ``[1 i-SIR + 4 MALA] x 2`` per step (the
motivating example's 10 MCMC steps; ULA-EBM takes the same 10 steps), Langevin step 0.01, lr 1e-3 for both;
on a smoothed task (option ``smooth``) flowMC-EBM's lr is 1e-2 and ULA-EBM's step 0.03, as chosen by
``ebflow-bench tune`` (docs/TUNING.md).

NLL: ``E(x) - log rho(x) + log Z_hat``, with ``log Z_hat`` an importance-sampling estimate (``n_is`` draws) with
the flow as proposal (ULA-EBM: ``rho`` as proposal, it has no flow), cached until the next training step. Its
delta-method standard error is exposed as ``log_z_stderr``, the Kish effective sample size of its weights as
``log_z_ess`` (of ``n_is`` draws; see ``metrics.nll_reliability``), the whole estimate as ``log_z_estimate``.

``log_density(x) = -E(x) + log rho(x)``: the tilted EBM's own unnormalised density, exactly as the model defines
it (no log Z), which the metrics integrate for the EBM's mode weights.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

from .._lazy import lazy, no_grad
from ..tasks import Task
from .base import Adapter, HParam, count, positive, register

# torch and the method's library load when a cell builds the adapter; the declarations below do not need them
# (the static checks of a matrix import no torch: ebflow_bench/_lazy.py)
torch = lazy("torch")
_flowmc = lazy("baselines.flowmc_ebm")

if TYPE_CHECKING:
    from torch import Tensor

    from baselines.flowmc_ebm import ULAEBM, FlowMCEBM, GaussianBase, LogZEstimate, RealNVP, TiltedEBM

_COMMON: dict[str, HParam] = {
    "n_chains": count(256, doc="persistent chains"), "step": positive(0.01, "Langevin step size"),
    "lr": positive(1e-3, "EBM learning rate"), "l2": HParam(0.0, float, low=0.0, doc="energy L2 penalty"),
    "batch_size": count(256), "ebm_hidden": count(64), "ebm_depth": count(3),
    "n_is": count(4096, low=2, doc="importance samples for log Z"),
}


class _TiltedEBMAdapter(Adapter):
    family = "flowmc-ebm"
    #: ``ebflow-bench tune`` search space (6 points, docs/TUNING.md): EBM learning rate x Langevin step size (the
    #: MCMC knob that costs nothing per step, so every candidate spends the same compute)
    tune_grid = {"lr": (1e-3, 1e-2), "step": (0.003, 0.01, 0.03)}
    trainer: FlowMCEBM | ULAEBM

    def _build_ebm(self) -> TiltedEBM:
        var = self.task.train.double().var(0).max()
        if not var > 0:
            raise ValueError(f"{self.name}: training data have zero variance; cannot set the base sigma")
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self._is_generator = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        base = _flowmc.GaussianBase(self.dim, float(var.sqrt())).to(self.device)
        energy = _flowmc.EnergyNet(self.dim, int(self.hparams["ebm_hidden"]), int(self.hparams["ebm_depth"]))
        self._version = 0
        self._log_z: tuple[int, float, float] | None = None
        self.log_z_stderr = float("nan")
        self.log_z_ess = float("nan")
        #: the latest LogZEstimate (log_z, stderr, ess, ess_fraction, n), None before the first ``nll``
        self.log_z_estimate: LogZEstimate | None = None
        self.last_info: dict[str, float] = {}
        return _flowmc.TiltedEBM(energy, base).to(self.device)

    @abc.abstractmethod
    def _proposal(self) -> GaussianBase | RealNVP:
        """The importance-sampling proposal for ``log Z``."""

    def train_step(self, batch: Tensor) -> float:
        self.last_info = self.trainer.step(batch)
        self._version += 1
        return self.last_info["ebm_loss"]

    def log_z(self) -> tuple[float, float]:
        """``(log Z_hat, stderr)`` of the tilted EBM, re-estimated once per parameter version."""
        if self._log_z is None or self._log_z[0] != self._version:
            est = _flowmc.estimate_log_z(self.trainer.ebm.log_unnorm, self._proposal(), int(self.hparams["n_is"]),
                                         self._is_generator)
            self._log_z = (self._version, est.log_z, est.stderr)
            self.log_z_stderr, self.log_z_ess, self.log_z_estimate = est.stderr, est.ess, est
        return self._log_z[1], self._log_z[2]

    @no_grad
    def log_density(self, x: Tensor) -> Tensor:
        """``-E(x) + log rho(x)``, the tilted EBM's unnormalised log density."""
        return self.trainer.ebm.log_unnorm(x.to(self.device))

    @no_grad
    def nll(self, x: Tensor) -> Tensor:
        log_z, _ = self.log_z()
        return -self.trainer.ebm.log_unnorm(x.to(self.device)) + log_z

    def num_params(self) -> int:
        return sum(p.numel() for p in self._trainable() if p.requires_grad)

    def _trainable(self) -> list[torch.nn.Parameter]:
        return list(self.trainer.ebm.parameters())


@register
class FlowMCEBMAdapter(_TiltedEBMAdapter):
    name = "flowmc-ebm"
    objective = "flowmc"
    hparam_spec = {**_COMMON, "n_proposals": count(32), "mala_steps": count(4, low=0), "repeats": count(2),
                   "lr": positive(None, "EBM learning rate; None = 1e-2 on a smoothed task, 1e-3 (the paper's) "
                                        "elsewhere (ebflow-bench tune, docs/TUNING.md)", per_task=True),
                   "lr_flow": positive(None, "flow learning rate; None = lr", optional=True),
                   "flow_hidden": count(32), "flow_depth": count(2)}

    @classmethod
    def per_task_value(cls, name: str, task: Task) -> Any:
        # ebflow-bench tune (results/tuning): on the smoothed checkerboard lr 1e-2 beats 1e-3 by 3-4% at 300 steps
        # (L = 2 and the preset's L = 4), more than the preset's 220; on every other task 1e-3 wins
        return 1e-2 if task.smooth else 1e-3

    @classmethod
    def check(cls, task: Task, dim: int, layers: int, hparams: dict[str, Any] | None = None) -> str | None:
        if dim < 2:
            return "RealNVP couplings need dim >= 2"
        if layers < 1:
            return "the flow needs layers >= 1 coupling blocks"
        return None

    def build(self) -> None:
        reason = self.check(self.task, self.dim, self.layers)
        if reason:
            raise ValueError(f"{self.name}: {reason}")
        h = self.hparams
        ebm = self._build_ebm()
        flow = _flowmc.RealNVP(ebm.base, self.layers, int(h["flow_hidden"]), int(h["flow_depth"])).to(self.device)
        self.trainer = _flowmc.FlowMCEBM(
            ebm, flow, n_chains=int(h["n_chains"]), n_proposals=int(h["n_proposals"]),
            mala_steps=int(h["mala_steps"]), step=float(h["step"]), repeats=int(h["repeats"]),
            lr=float(h["lr"]), lr_flow=None if h["lr_flow"] is None else float(h["lr_flow"]),
            l2=float(h["l2"]), generator=self.generator)

    def _proposal(self) -> RealNVP:
        return self.trainer.flow

    def _trainable(self) -> list[torch.nn.Parameter]:
        return list(self.trainer.ebm.parameters()) + list(self.trainer.flow.parameters())

    def sample(self, n: int) -> Tensor:
        return self.trainer.sample(n).detach().to("cpu", torch.float32)


@register
class ULAEBMAdapter(_TiltedEBMAdapter):
    name = "ula-ebm"
    objective = "ula"
    hparam_spec = {**_COMMON, "ula_steps": count(10), "sample_steps": count(100, low=0),
                   "step": positive(None, "Langevin step size; None = 0.03 on a smoothed task, 0.01 elsewhere "
                                          "(ebflow-bench tune, docs/TUNING.md)", per_task=True)}

    @classmethod
    def per_task_value(cls, name: str, task: Task) -> Any:
        # ebflow-bench tune (results/tuning): step 0.03 beats 0.01 by 3.5% on the smoothed checkerboard; on the raw
        # eight_gaussians and on digits 0.03 lets the chains' mass escape (degenerate), so 0.01 stays there
        return 0.03 if task.smooth else 0.01

    @classmethod
    def check(cls, task: Task, dim: int, layers: int, hparams: dict[str, Any] | None = None) -> str | None:
        # no flow: ``layers`` does not change the model (the EBM is the same as flowMC-EBM's, for the ablation)
        return "layers must be >= 1" if layers < 1 else None

    def build(self) -> None:
        h = self.hparams
        self.trainer = _flowmc.ULAEBM(self._build_ebm(), n_chains=int(h["n_chains"]), ula_steps=int(h["ula_steps"]),
                                      step=float(h["step"]), lr=float(h["lr"]), l2=float(h["l2"]),
                                      generator=self.generator)

    def _proposal(self) -> GaussianBase:
        return self.trainer.ebm.base

    def sample(self, n: int) -> Tensor:
        """ULA chains from resampled persistent states, run ``sample_steps`` more steps."""
        return self.trainer.sample(n, int(self.hparams["sample_steps"])).detach().to("cpu", torch.float32)
