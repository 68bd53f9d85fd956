"""Energy-objective flows (Si et al. 2023) behind the adapter protocol.

- ``energy-flow``: EBFlow's dense architecture (``ebflow.architectures.fully_connected(dim, layers)``) used as a
  generator ``x = F(eps)`` (:class:`baselines.energy_flows.FlowGenerator`) and trained with the energy score;
  no log-det in training, exact NLL at evaluation. On image tasks (data in [0, 1], flattened) the EBFlow gets
  its MaP logit preprocessing, so samples are ``sigmoid``-squashed into the data range and the NLL is measured
  in pixel space, as for EBFlow itself.
- ``energy-flow-saef``: :class:`baselines.energy_flows.SemiAutoregressiveFlow` (``layers`` hidden layers,
  sigmoid output on image tasks); no likelihood.

Hyperparameters: ``lr``, ``batch_size``, ``beta`` (energy-score exponent in (0, 2); the public code uses 0.5,
the default here is 1.0), ``m`` (model samples per datum, >= 2), ``optimizer`` (``adam`` or ``rmsprop``, the
latter being EBFlow's MNIST optimizer, for matched comparisons). SAEF adds ``block_size`` (``None``: automatic,
``round(sqrt(D))``, e.g. 1 for 2-D toys and 28, one image row, for MNIST), ``hidden`` and ``context``.
"""

from __future__ import annotations

import math
from typing import Any

from .._lazy import lazy, no_grad
from ..tasks import Task
from .base import Adapter, HParam, NLLUnavailable, count, positive, register

# torch and the method's library load when a cell builds the adapter; the declarations below do not need them
# (the static checks of a matrix import no torch: ebflow_bench/_lazy.py)
torch = lazy("torch")
nn = lazy("torch.nn")
_energy = lazy("baselines.energy_flows")
_energy_loss = lazy("baselines.energy_flows.loss")
_archs = lazy("ebflow.architectures")
_pre = lazy("ebflow.preprocessing")

#: optimizer name -> class name in torch.optim
_OPTIMIZERS = {"adam": "Adam", "rmsprop": "RMSprop"}
_COMMON: dict[str, HParam] = {
    "lr": positive(1e-3, "learning rate"),
    "batch_size": count(256, doc="mini-batch size"),
    "beta": HParam(1.0, float, low=1e-6, high=2.0 - 1e-6, doc="energy-score exponent in (0, 2)"),
    "m": count(2, low=2, doc="model samples per datum"),
    "optimizer": HParam("adam", str, choices=tuple(_OPTIMIZERS)),
}


class _EnergyScoreAdapter(Adapter):
    """Shared training loop: one Adam (or RMSprop) step on the energy score of ``self.model``."""

    family = "energy-flow"
    objective = "energy-score"
    #: ``ebflow-bench tune`` search space (6 points, docs/TUNING.md)
    tune_grid = {"lr": (1e-4, 1e-3), "beta": (0.5, 1.0, 1.5)}
    model: nn.Module

    def _setup_training(self) -> None:
        self.beta = _energy_loss.check_beta(self.hparams["beta"])
        self.m = _energy_loss.check_m(self.hparams["m"])
        name = str(self.hparams["optimizer"]).lower()
        if name not in _OPTIMIZERS:
            raise ValueError(f"{self.name}: optimizer must be one of {sorted(_OPTIMIZERS)}, got {name!r}")
        self.model.to(self.device)
        self.optimizer = getattr(torch.optim, _OPTIMIZERS[name])(self.model.parameters(), lr=float(self.hparams["lr"]))

    def train_step(self, batch: torch.Tensor) -> float:
        self.model.train()
        loss = self.model.energy_loss(batch, self.m, self.beta)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    @no_grad
    def sample(self, n: int) -> torch.Tensor:
        self.model.eval()
        return self.model.sample(n).detach().to("cpu", torch.float32)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


@register
class EnergyFlow(_EnergyScoreAdapter):
    name = "energy-flow"
    hparam_spec = _COMMON

    @classmethod
    def check(cls, task: Task, dim: int, layers: int, hparams: dict[str, Any] | None = None) -> str | None:
        if layers < 1:
            return f"energy-flow needs at least one dense layer, got layers={layers}"
        return None

    def build(self) -> None:
        pre = _pre.LogitTransform() if self.task.image_shape is not None else None
        self.model = _energy.FlowGenerator(_archs.fully_connected(self.dim, self.layers, preprocessing=pre))
        self._setup_training()

    @no_grad
    def nll(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return -self.model.log_prob(x.to(self.device))


@register
class EnergyFlowSAEF(_EnergyScoreAdapter):
    name = "energy-flow-saef"
    hparam_spec = {**_COMMON, "block_size": count(None, optional=True, doc="None: round(sqrt(D))"),
                   "hidden": count(256), "context": count(32)}

    @classmethod
    def check(cls, task: Task, dim: int, layers: int, hparams: dict[str, Any] | None = None) -> str | None:
        if layers < 1:
            return f"energy-flow-saef needs at least one hidden layer, got layers={layers}"
        return None

    def build(self) -> None:
        k = self.hparams["block_size"]
        k = max(1, round(math.sqrt(self.dim))) if k is None else int(k)
        self.model = _energy.SemiAutoregressiveFlow(
            self.dim, k, hidden=int(self.hparams["hidden"]), num_hidden=self.layers,
            context=int(self.hparams["context"]),
            output="sigmoid" if self.task.image_shape is not None else "identity")
        self._setup_training()

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        raise NLLUnavailable("semi-autoregressive energy flow: each block is produced in one shot from noise by an "
                             "unconstrained (non-invertible) network, so the model has no tractable density")
