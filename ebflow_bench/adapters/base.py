"""The one protocol through which the harness (runner, asv suite, report) talks to a method.

An adapter wraps one method family's library (``ebflow`` or one of ``baselines``). It is constructed for a
task at a given size (``dim``) and depth (``layers``), owns its model and optimizer, and exposes a few verbs:

- ``train_step(batch)``: one optimisation step on a data batch, returns the loss as a float;
- ``nll(x)``: per-sample negative log-likelihood in nats, in the task's data space, or raises
  :class:`NLLUnavailable` with the reason;
- ``sample(n)``: ``n`` model samples, shape ``[n, task.dim]``, on the CPU, float32;
- ``num_params()``: trainable parameter count;
- optional ``log_density(x)``: the model's *unnormalised* log density ``[N]`` (any constant offset), in data space;
  the default is ``-nll(x)`` (so it raises :class:`NLLUnavailable` when ``nll`` does); EBMs override it with
  their energy (no log Z needed). ``density_fn()`` gives it to the metrics as a CPU callable, or None.

Adapters are registered by name with :func:`register`; the harness looks them up with :func:`get`.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch

from ..tasks import Task


class NLLUnavailable(RuntimeError):
    """Raised by ``Adapter.nll`` when a method has no (exact or estimated) likelihood; the message says why."""


class Unsupported(ValueError):
    """Raised when an adapter cannot be built for a task (e.g. an image-only flow on a 2-D toy)."""


class Adapter(abc.ABC):
    #: registry key, e.g. "ebflow-ssm"
    name: ClassVar[str] = ""
    #: method family: "ebflow", "energy-flow", "flowmc-ebm", "mle-flow"
    family: ClassVar[str] = ""
    #: training objective, e.g. "ssm", "energy-score", "flowmc", "ula", "ml"
    objective: ClassVar[str] = ""
    #: default hyperparameters; overridden by the matrix's per-method hparams
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, task: Task, *, dim: int, layers: int, seed: int,
                 device: torch.device | str = "cpu", **hparams: Any) -> None:
        unknown = set(hparams) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name}: unknown hyperparameter(s) {sorted(unknown)}; "
                             f"known: {sorted(self.defaults)}")
        self.task = task
        self.dim = int(dim)
        self.layers = int(layers)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.hparams: dict[str, Any] = {**self.defaults, **hparams}
        torch.manual_seed(self.seed)
        self.build()

    @classmethod
    def check(cls, task: Task, dim: int, layers: int) -> str | None:
        """Return None if this adapter can run on ``task`` at ``dim``/``layers``, else the reason it cannot."""
        return None

    @abc.abstractmethod
    def build(self) -> None:
        """Create the model and optimizer from ``self.task``, ``self.dim``, ``self.layers``, ``self.hparams``."""

    @abc.abstractmethod
    def train_step(self, batch: torch.Tensor) -> float:
        """One optimisation step on ``batch`` ([B, D], already on ``self.device``). Returns the loss."""

    @abc.abstractmethod
    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample NLL in nats ([N]) of ``x`` in the task's data space; raise NLLUnavailable if none."""

    @abc.abstractmethod
    def sample(self, n: int) -> torch.Tensor:
        """``n`` samples as a CPU float32 tensor [n, D]."""

    @abc.abstractmethod
    def num_params(self) -> int:
        """Number of trainable parameters."""

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised log density ``[N]`` of ``x`` (any constant offset); default ``-nll(x)``. Raises
        NLLUnavailable when the method has neither."""
        return -self.nll(x)

    def density_fn(self):
        """``log_density`` as a callable ``[N, D] -> [N]`` taking and returning CPU tensors (float64 out, no
        gradient), for ``metrics.compute_metrics(..., density=...)``; None when the method has no density (a
        probe on two test points raises NLLUnavailable)."""
        def fn(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self.log_density(x.to(self.device, torch.float32)).detach().to("cpu", torch.float64)

        try:
            fn(self.task.test[:2])
        except NLLUnavailable:
            return None
        return fn

    @property
    def batch_size(self) -> int:
        return int(self.hparams.get("batch_size", 256))

    def describe(self) -> dict[str, Any]:
        """Identity of the configured method, stored with every result row."""
        return {"method": self.name, "family": self.family, "objective": self.objective}


_REGISTRY: dict[str, type[Adapter]] = {}


def register(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: add an adapter to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"adapter {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Adapter]:
    from . import _load_all  # noqa: F401  (imports every adapter module once)

    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def available() -> list[str]:
    from . import _load_all

    _load_all()
    return sorted(_REGISTRY)
