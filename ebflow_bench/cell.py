"""The cell contract: what one unit of work is (:class:`CellSpec`) and what happened to it (:class:`CellRecord`).

This module sits at the bottom of the harness; the matrix builds specs, the runner executes them and writes
records, the results store turns records into rows and the report reads those rows. Nothing downstream
re-derives a cell's settings: everything a cell's outcome may depend on is in its spec, fully resolved
(every hyperparameter with the adapter's defaults merged in and per-task defaults turned into values, the
device resolved to ``cpu``/``cuda``/``cuda:N``, the torch thread count).

- ``cell_id``: 12 hex digits of the SHA-1 of the whole spec (canonical JSON). Same spec, same id, on every
  machine; any change (a hyperparameter, a seed, the budget, the device) gives another id.
- ``config_key``: the same hash over everything but ``data_seed`` and ``train_seed``: the cells of one
  configuration that differ only in their seeds share it; the report groups by it.

Seeds: ``data_seed`` picks the task instance (``get_task(..., seed=data_seed)``: a random covariance, a data
split); ``train_seed`` every random draw of training and evaluation (initialisation, mini-batch order, the
objective's noise, MCMC chains, model samples, metric projections).

Budgets are steps. ``time_cap_s`` is only a safety limit on training wall time: a cell that reaches it stops
and is recorded ``capped`` (its reason says at which step), never silently compared with uncapped cells.

Record statuses (``STATUSES``): ``ok``; ``failed`` (diverged or raised; ``reason``); ``capped`` (stopped by
``time_cap_s``); ``degenerate`` (finished, but ``diagnostics.diagnose`` found the model degenerate; ``reason``
and ``diagnosis`` say why).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("ok", "failed", "capped", "degenerate")
SEED_FIELDS = ("data_seed", "train_seed")


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


@dataclass(frozen=True)
class EvalSpec:
    """How a cell is evaluated: model samples for the sample metrics, NLL checkpoints during training
    (``checkpoints`` evaluations at ``round(budget * i / checkpoints)`` steps on ``checkpoint_test`` test points)
    and the test points of the final NLL (``max_test``, all if None); both subsets are seeded random samples of
    the whole test set, stratified by the task's ``groups`` (``tasks.evaluation_rows``)."""

    n_samples: int = 2000
    checkpoints: int = 4
    checkpoint_test: int = 1000
    max_test: int | None = None


@dataclass(frozen=True)
class CellSpec:
    """One fully resolved unit of work (see the module docstring)."""

    method: str
    family: str
    objective: str
    task: str
    dim: int
    layers: int
    hparams: dict[str, Any] = field(hash=False)
    data_seed: int = 0
    train_seed: int = 0
    budget: int = 500
    time_cap_s: float | None = None
    device: str = "cpu"
    threads: int = 1
    task_options: dict[str, Any] = field(default_factory=dict, hash=False)
    eval: EvalSpec = field(default_factory=EvalSpec)
    imports: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form (what the ids hash; :meth:`from_dict` inverts it)."""
        d = dataclasses.asdict(self)
        d["imports"] = list(self.imports)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"cell spec: unknown field(s) {sorted(unknown)}")
        kw = dict(d)
        kw["eval"] = EvalSpec(**kw.get("eval", {}))
        kw["imports"] = tuple(kw.get("imports", ()))
        kw["hparams"] = dict(kw.get("hparams", {}))
        kw["task_options"] = dict(kw.get("task_options", {}))
        return cls(**kw)

    @property
    def cell_id(self) -> str:
        return _hash(self.to_dict())

    @property
    def config_key(self) -> str:
        d = self.to_dict()
        for k in SEED_FIELDS:
            d.pop(k)
        return _hash(d)

    def with_seeds(self, data_seed: int, train_seed: int) -> CellSpec:
        return dataclasses.replace(self, data_seed=int(data_seed), train_seed=int(train_seed))


@dataclass
class Checkpoint:
    """Test NLL (mean over the ``eval.checkpoint_test`` test points of ``tasks.evaluation_rows``, nats; NaN when the method has no
    NLL) after ``step`` steps, with the training compute and wall seconds spent up to then."""

    step: int
    compute_s: float
    wall_s: float
    nll: float


@dataclass
class CellRecord:
    """What happened to one cell. ``compute_s``: training compute (process CPU seconds; on CUDA, the sum of
    the steps' CUDA-event times); ``wall_s``: training wall seconds (both exclude checkpoint evaluations);
    ``median_step_s``: median wall time of one step; ``rows``: the metric rows (see ``results``)."""

    spec: CellSpec
    status: str = "ok"
    reason: str = ""
    steps_done: int = 0
    compute_s: float = 0.0
    wall_s: float = 0.0
    median_step_s: float | None = None
    checkpoints: list[Checkpoint] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    n_params: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    commit: str = ""
    run_id: str = ""
    started: str = ""
    finished: str = ""
    diagnosis: dict[str, Any] | None = None
    traceback: str = ""
    #: ``{claim key: rule fingerprint}`` of the claims this cell decides, as registered when its run's session
    #: started (``claims.fingerprints_for``); empty for cells run before pre-registration
    rule_fingerprints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"cell status {self.status!r}: expected one of {STATUSES}")

    @property
    def cell_id(self) -> str:
        return self.spec.cell_id

    @property
    def config_key(self) -> str:
        return self.spec.config_key

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["spec"] = self.spec.to_dict()
        d["checkpoints"] = [dataclasses.asdict(c) for c in self.checkpoints]
        return {"cell_id": self.cell_id, "config_key": self.config_key, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellRecord:
        """Read a record as written by :meth:`to_dict`; checks that its stored id matches its spec."""
        if "spec" not in d:
            raise ValueError("not a cell record of this version: no `spec` (written by an older ebflow-bench?)")
        kw = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        kw["spec"] = CellSpec.from_dict(d["spec"])
        kw["checkpoints"] = [Checkpoint(**c) for c in d.get("checkpoints", [])]
        rec = cls(**kw)
        if d.get("cell_id", rec.cell_id) != rec.cell_id:
            raise ValueError(f"cell record {d.get('cell_id')}: its spec hashes to {rec.cell_id}")
        return rec


__all__ = ["CellSpec", "CellRecord", "Checkpoint", "EvalSpec", "STATUSES"]
