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

Hyperparameters are declared once per adapter in ``hparam_spec`` (name -> :class:`HParam`: default, type,
range or choices); ``resolve_hparams(task, given)`` merges the defaults, coerces and checks every value and turns
per-task defaults (``None`` with ``per_task=True``) into values, raising one :class:`HParamError` that lists
every problem. ``defaults`` is derived (``{name: spec.default}``); an adapter that only sets a ``defaults`` dict
(older plugins) gets an inferred spec (type of each default, no range).

``tune_grid`` (name -> tuple of values) is the adapter's search space for ``ebflow-bench tune``
(:mod:`ebflow_bench.tune`), declared next to ``hparam_spec``: every key a declared hyperparameter, every value
legal for it (checked by :func:`register` through :func:`tune_grid_problems`). The suite gives every method
family a grid of the same size (6 points); reference adapters declare none (``{}``: nothing to tune).

Adapters are registered by name with :func:`register`; the harness looks them up with :func:`get`.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from .._lazy import lazy
from ..tasks import Task

#: imported when an adapter is built: the declarations (hyperparameters, memory estimates) load without it
torch = lazy("torch")


class NLLUnavailable(RuntimeError):
    """Raised by ``Adapter.nll`` when a method has no (exact or estimated) likelihood; the message says why."""


class Unsupported(ValueError):
    """Raised when an adapter cannot be built for a task (e.g. an image-only flow on a 2-D toy)."""


class HParamError(ValueError):
    """Hyperparameters that cannot be used; ``problems`` lists every one (the message too)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class HParam:
    """The declaration of one hyperparameter: default, type, inclusive range or choices.

    ``type`` is ``float``, ``int``, ``str`` or ``bool`` (an int is accepted where a float is declared, and a
    string that parses as a number, e.g. YAML's ``5e-2``, where a number is); ``object`` means unchecked (only
    inferred for plugins that declare a plain ``defaults`` dict). ``optional``: ``None`` is a legal setting
    (e.g. ``clip = None``: no clipping). ``per_task``: the default ``None`` means "chosen per task" by the
    adapter's :meth:`Adapter.resolve_hparams`, which replaces it with a value.
    """

    default: Any
    type: type
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    optional: bool = False
    per_task: bool = False
    doc: str = ""

    def coerce(self, name: str, value: Any) -> tuple[Any, str | None]:
        """``(value, None)`` with the value converted to the declared type, or ``(value, problem)``."""
        if value is None:
            if self.optional or self.per_task:
                return None, None
            return value, f"{name} = None is not allowed (expected {self.type.__name__})"
        t = self.type
        if t is object:
            return value, None
        if t in (float, int):
            if isinstance(value, str):
                try:
                    value = float(value) if t is float else int(value.strip())
                except ValueError:
                    try:
                        f = float(value)
                        value = int(f) if f.is_integer() else value
                    except ValueError:
                        pass
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return value, f"{name} = {value!r}: expected a number ({t.__name__})"
            if t is int:
                if isinstance(value, float):
                    if not value.is_integer():
                        return value, f"{name} = {value!r}: expected an integer"
                    value = int(value)
            else:
                value = float(value)
                if not math.isfinite(value):
                    return value, f"{name} = {value!r}: expected a finite number"
            if self.low is not None and value < self.low:
                bound = "> 0" if self.low == _POSITIVE else f">= {self.low:g}"
                return value, f"{name} = {value!r}: must be {bound}"
            if self.high is not None and value > self.high:
                return value, f"{name} = {value!r}: must be <= {self.high:g}"
        elif t is bool:
            if not isinstance(value, bool):
                return value, f"{name} = {value!r}: expected true or false"
        elif t is str:
            if not isinstance(value, str):
                return value, f"{name} = {value!r}: expected a string"
        elif not isinstance(value, t):
            return value, f"{name} = {value!r}: expected {t.__name__}"
        if self.choices is not None and value not in self.choices:
            return value, f"{name} = {value!r}: must be one of {list(self.choices)}"
        return value, None


_POSITIVE = 5e-324  # the smallest positive float: "low = _POSITIVE" reads "> 0"


def positive(default: Any, doc: str = "", **kw: Any) -> HParam:
    """A float hyperparameter that must be > 0."""
    return HParam(default, float, low=_POSITIVE, doc=doc, **kw)


def count(default: Any, low: int = 1, doc: str = "", **kw: Any) -> HParam:
    """An integer hyperparameter >= ``low``."""
    return HParam(default, int, low=low, doc=doc, **kw)


def describe_hparam(h: HParam) -> dict[str, str]:
    """What ``ebflow-bench list METHOD`` prints of one declaration: ``type``, ``default``, ``allowed`` (the range
    or the choices, ``None`` allowed or chosen per task) and ``doc``."""
    allowed = []
    if h.choices is not None:
        allowed.append("one of " + ", ".join(map(repr, h.choices)))
    if h.low is not None:
        allowed.append("> 0" if h.low == _POSITIVE else f">= {h.low:g}")
    if h.high is not None:
        allowed.append(f"<= {h.high:g}")
    if h.per_task:
        allowed.append("None = chosen per task")
    elif h.optional:
        allowed.append("None allowed")
    return {"type": "any" if h.type is object else h.type.__name__, "default": repr(h.default),
            "allowed": ", ".join(allowed) or "any", "doc": h.doc}


def _infer_spec(defaults: dict[str, Any]) -> dict[str, HParam]:
    out = {}
    for k, v in defaults.items():
        t = type(v) if isinstance(v, (bool, int, float, str)) else object
        out[k] = HParam(v, t, optional=v is None)
    return out


class Adapter(abc.ABC):
    #: registry key, e.g. "ebflow-ssm"
    name: ClassVar[str] = ""
    #: method family: "ebflow", "energy-flow", "flowmc-ebm", "mle-flow", "approx-ml"
    family: ClassVar[str] = ""
    #: training objective, e.g. "ssm", "energy-score", "flowmc", "ula", "ml"
    objective: ClassVar[str] = ""
    #: declared hyperparameters (name -> HParam); the matrix's per-method hparams override the defaults
    hparam_spec: ClassVar[dict[str, HParam]] = {}
    #: ``{name: spec.default}``, derived from ``hparam_spec`` (set by ``__init_subclass__``)
    defaults: ClassVar[dict[str, Any]] = {}
    #: the ``ebflow-bench tune`` search space: hyperparameter name -> candidate values (their product is searched)
    tune_grid: ClassVar[dict[str, tuple]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        own_spec, own_defaults = "hparam_spec" in cls.__dict__, "defaults" in cls.__dict__
        if own_defaults and not own_spec:  # a plugin declaring only a defaults dict: infer the types
            cls.hparam_spec = _infer_spec(dict(cls.__dict__["defaults"]))
        cls.defaults = {k: h.default for k, h in cls.hparam_spec.items()}

    def __init__(self, task: Task, *, dim: int, layers: int, seed: int,
                 device: torch.device | str = "cpu", **hparams: Any) -> None:
        self.task = task
        self.dim = int(dim)
        self.layers = int(layers)
        self.seed = int(seed)
        self.device = torch.device(device)
        try:
            self.hparams: dict[str, Any] = self.resolve_hparams(task, hparams)
        except HParamError as e:
            raise ValueError(f"{self.name}: {e}") from None
        torch.manual_seed(self.seed)
        self.build()

    @classmethod
    def resolve_hparams(cls, task: Task | None, given: dict[str, Any]) -> dict[str, Any]:
        """Every hyperparameter's value for ``task``: defaults merged with ``given``, each value coerced to its
        declared type and checked against its range or choices, per-task defaults resolved (subclasses override
        :meth:`per_task_value`). Raises :class:`HParamError` listing every problem."""
        spec = cls.hparam_spec
        problems = []
        unknown = sorted(set(given) - set(spec))
        if unknown:
            problems.append(f"unknown hyperparameter(s) {unknown}; known: {sorted(spec)}")
        out: dict[str, Any] = {}
        for name, h in spec.items():
            value, problem = h.coerce(name, given.get(name, h.default))
            if problem:
                problems.append(problem)
            out[name] = value
        if problems:
            raise HParamError(problems)
        for name, h in spec.items():
            if h.per_task and out[name] is None and task is not None:
                out[name] = cls.per_task_value(name, task)
        return out

    @classmethod
    def per_task_value(cls, name: str, task: Task) -> Any:
        """The value of the per-task hyperparameter ``name`` (declared with ``per_task=True``) on ``task``."""
        raise NotImplementedError(f"{cls.name}: no per-task value for {name!r}")

    @classmethod
    def check(cls, task: Task, dim: int, layers: int, hparams: dict[str, Any] | None = None) -> str | None:
        """Return None if this adapter can run on ``task`` at ``dim``/``layers`` with the resolved ``hparams``
        (None: the defaults), else the reason it cannot."""
        return None

    @classmethod
    def memory_parts(cls, dim: int, layers: int, hparams: dict[str, Any], batch: int) -> dict[str, int]:
        """Estimated peak bytes of the method's own state and work at ``dim``/``layers`` with ``hparams`` (the
        defaults merged in; per-task values may still be None) and mini-batch ``batch``, by part (parameters,
        gradients, optimizer state, EMA, activations, workspaces), for the resource pre-flight
        (:mod:`ebflow_bench.preflight`) before anything is built. The default describes a network of width
        ``hidden`` (default 64) per layer, linear in D; adapters whose memory grows otherwise override it."""
        from ..preflight import dense_parts

        width = int(hparams.get("hidden") or 64)
        n_params = int(layers) * (3 * width * dim + width * width + 2 * dim)
        return {**dense_parts(n_params, optimizer=str(hparams.get("optimizer", "adam"))),
                "activations": 32 * batch * (dim + width) * max(1, int(layers))}

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


def tune_grid_problems(cls: type[Adapter]) -> list[str]:
    """What is wrong with ``cls.tune_grid`` (empty list: nothing): keys must be declared hyperparameters, each
    with a non-empty tuple of distinct values that the declaration accepts (type, range, choices)."""
    problems = []
    grid = cls.tune_grid
    if not isinstance(grid, dict):
        return [f"{cls.name}: tune_grid must be a dict of name -> tuple of values, got {type(grid).__name__}"]
    for key, values in grid.items():
        if key not in cls.hparam_spec:
            problems.append(f"{cls.name}: tune_grid key {key!r} is not a declared hyperparameter "
                            f"(known: {sorted(cls.hparam_spec)})")
            continue
        if not isinstance(values, tuple) or not values:
            problems.append(f"{cls.name}: tune_grid[{key!r}] must be a non-empty tuple, got {values!r}")
            continue
        coerced = []
        for v in values:
            value, problem = cls.hparam_spec[key].coerce(key, v)
            if problem:
                problems.append(f"{cls.name}: tune_grid: {problem}")
            coerced.append(value)
        if len(set(map(repr, coerced))) != len(coerced):
            problems.append(f"{cls.name}: tune_grid[{key!r}] repeats a value: {values!r}")
    return problems


def register(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: add an adapter to the registry under ``cls.name`` (its ``tune_grid`` checked first)."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    problems = tune_grid_problems(cls)
    if problems:
        raise ValueError("; ".join(problems))
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
