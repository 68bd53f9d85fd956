"""The benchmark matrix: which methods run on which tasks, at which sizes, seeds and budgets.

A :class:`Matrix` is a union of :class:`Block` s; each block is a Cartesian product
``methods x tasks x dims x layers x seeds x budgets``. One block is enough for most matrices; several let one
file pair, say, every method with the 2-D toys and only the cheap ones with a large-D sweep.

File format (TOML, or the same keys in YAML)::

    name = "small"
    imports = []                      # optional: modules or .py files that register extra adapters/tasks
    methods = ["ebflow-dsm", "mle-lu"]
    tasks = ["checkerboard"]
    dims = [2]                        # optional; default: each task's fixed D
    layers = [2]
    seeds = [0, 1]
    budgets = [500]                   # training steps
    time_cap_s = 60                   # optional wall-clock cap on training, per cell

    [[block]]                         # optional further products; unset keys default to the top level's
    methods = ["mle-lu"]
    tasks = ["gaussian"]
    dims = [16, 64]
    [block.hparams.mle-lu]            # optional: this block's per-method hyperparameters, over the matrix's
    lr = 5e-4

    [hparams.ebflow-dsm]              # per-method hyperparameters (adapter defaults otherwise)
    lr = 1e-3
    [task_options.gaussian]           # keyword options of get_task
    [eval]
    n_samples = 2000                  # model samples per cell for the sample metrics
    checkpoints = 4                   # time-to-quality NLL evaluations during training
    checkpoint_test = 1000            # test points used at those checkpoints
    max_test = 5000                   # test points for the final NLL (all if unset)
    device = "cpu"                    # or "cuda", "auto"

When the top level has ``[[block]]`` entries and no ``methods``/``tasks`` of its own, only the blocks are
run; otherwise the top level is the first block.

``Matrix.cells()`` expands to a deterministic, de-duplicated list of :class:`Cell` s whose ``cell_id`` is a
12-hex-digit SHA-1 of the cell's full configuration (so a cell keeps its id across runs and machines).
``validate(matrix)`` checks everything that can be checked before any training and raises one
:class:`MatrixError` listing every problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import math
import sys
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).with_name("presets")


class TaskSkipped(UserWarning):
    """A task of the matrix cannot be had on this machine (optional data); its cells are left out."""


class MatrixError(ValueError):
    """A matrix that cannot be run; the message lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid matrix:\n" + "\n".join(f"  - {p}" for p in self.problems))


@dataclass(frozen=True)
class Block:
    """One Cartesian product of the matrix. ``dims`` entries of ``None`` mean "the task's fixed D"."""

    methods: tuple[str, ...]
    tasks: tuple[str, ...]
    dims: tuple[int | None, ...] = (None,)
    layers: tuple[int, ...] = (2,)
    seeds: tuple[int, ...] = (0,)
    budgets: tuple[int, ...] = (500,)
    time_cap_s: float | None = None
    #: per-method hyperparameters of this block, applied over the matrix-wide ``hparams``
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class EvalSettings:
    n_samples: int = 2000
    checkpoints: int = 4
    checkpoint_test: int = 1000
    max_test: int | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class Cell:
    """One unit of work: train ``method`` on ``task`` at (dim, layers) with ``seed`` for ``budget`` steps."""

    method: str
    task: str
    dim: int
    layers: int
    seed: int
    budget: int
    time_cap_s: float | None
    hparams: dict[str, Any]
    task_options: dict[str, Any]
    eval: EvalSettings
    imports: tuple[str, ...] = ()

    def config(self) -> dict[str, Any]:
        """JSON-serialisable configuration (what the cell id hashes)."""
        return {
            "method": self.method, "task": self.task, "dim": self.dim, "layers": self.layers,
            "seed": self.seed, "budget": self.budget, "time_cap_s": self.time_cap_s,
            "hparams": self.hparams, "task_options": self.task_options, "eval": dataclasses.asdict(self.eval),
        }

    @property
    def cell_id(self) -> str:
        blob = json.dumps(self.config(), sort_keys=True, default=str).encode()
        return hashlib.sha1(blob).hexdigest()[:12]


@dataclass
class Matrix:
    name: str
    blocks: list[Block]
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval: EvalSettings = field(default_factory=EvalSettings)
    imports: tuple[str, ...] = ()

    @property
    def methods(self) -> list[str]:
        return sorted({m for b in self.blocks for m in b.methods})

    @property
    def tasks(self) -> list[str]:
        return sorted({t for b in self.blocks for t in b.tasks})

    def with_device(self, device: str) -> Matrix:
        return dataclasses.replace(self, eval=dataclasses.replace(self.eval, device=device))

    def cells(self) -> list[Cell]:
        """All cells in block order, then methods, tasks, dims, layers, seeds, budgets; duplicates dropped.

        A ``None`` dim resolves to the task's fixed D (a task without one is reported by :func:`validate`).
        """
        from .tasks import task_dim

        load_imports(self.imports)
        out: dict[str, Cell] = {}
        for b in self.blocks:
            for m in b.methods:
                for t in b.tasks:
                    for d in b.dims:
                        dim = task_dim(t, self.task_options.get(t, {})) if d is None else d
                        if dim is None:
                            raise MatrixError([f"task {t!r} takes any D: give `dims`"])
                        for layers in b.layers:
                            for seed in b.seeds:
                                for budget in b.budgets:
                                    c = Cell(m, t, int(dim), int(layers), int(seed), int(budget), b.time_cap_s,
                                             {**self.hparams.get(m, {}), **b.hparams.get(m, {})},
                                             dict(self.task_options.get(t, {})),
                                             self.eval, tuple(self.imports))
                                    out.setdefault(c.cell_id, c)
        return list(out.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "imports": list(self.imports),
            "blocks": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(b).items()}
                       for b in self.blocks],
            "hparams": self.hparams, "task_options": self.task_options, "eval": dataclasses.asdict(self.eval),
        }


# --------------------------------------------------------------------------------------------- loading

_BLOCK_KEYS = {"methods", "tasks", "dims", "layers", "seeds", "budgets", "time_cap_s"}
_TOP_KEYS = _BLOCK_KEYS | {"name", "imports", "block", "hparams", "task_options", "eval"}


def _is_table_of_tables(val: Any) -> bool:
    return isinstance(val, dict) and all(isinstance(v, dict) for v in val.values())


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_matrix(path_or_preset: str | Path) -> Matrix:
    """Read a matrix from a ``.toml``/``.yaml``/``.yml`` file or a named preset (see :func:`available_presets`).

    Only the structure is checked here; call :func:`validate` (the runner does) for names, dims and data.
    """
    p = Path(path_or_preset)
    if p.suffix.lower() in {".toml", ".yaml", ".yml"} or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"matrix file {str(p)!r} not found")
        text = p.read_text()
        if p.suffix.lower() == ".toml":
            try:
                spec = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                raise MatrixError([f"{p}: not valid TOML: {e}"]) from None
        else:
            import yaml

            try:
                spec = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise MatrixError([f"{p}: not valid YAML: {e}"]) from None
        return matrix_from_dict(spec, default_name=p.stem)
    name = str(path_or_preset)
    if name not in available_presets():
        raise MatrixError([f"unknown preset {name!r} and no such file; presets: {', '.join(available_presets())}"])
    return matrix_from_dict(tomllib.loads((PRESET_DIR / f"{name}.toml").read_text()), default_name=name)


def _tuple(v: Any, key: str, problems: list[str]) -> tuple:
    if v is None:
        return (None,) if key == "dims" else ()
    if isinstance(v, (list, tuple)):
        return tuple(v)
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        return (v,)
    problems.append(f"`{key}` must be a list, got {v!r}")
    return ()


def matrix_from_dict(spec: Any, default_name: str = "custom") -> Matrix:
    if not isinstance(spec, dict):
        raise MatrixError([f"a matrix must be a mapping of keys, got {type(spec).__name__}"])
    problems: list[str] = []
    unknown = set(spec) - _TOP_KEYS
    if unknown:
        problems.append(f"unknown key(s) {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    top = {k: spec[k] for k in _BLOCK_KEYS if k in spec}
    raw_blocks = spec.get("block", [])
    if not isinstance(raw_blocks, list):
        problems.append("`block` must be an array of tables ([[block]])")
        raw_blocks = []
    if "methods" in top or "tasks" in top or not raw_blocks:
        raw_blocks = [{}] + raw_blocks
    blocks = []
    for i, rb in enumerate(raw_blocks):
        keys = _BLOCK_KEYS | {"hparams"}
        if not isinstance(rb, dict) or set(rb) - keys:
            problems.append(f"block {i}: unknown key(s) {sorted(set(rb) - keys) if isinstance(rb, dict) else rb!r}")
            continue
        block_hparams = rb.get("hparams", {}) or {}
        if not _is_table_of_tables(block_hparams):
            problems.append(f"block {i}: `hparams` must map method names to tables, e.g. [block.hparams.NAME]")
            block_hparams = {}
        merged = {**top, **rb}
        kw: dict[str, Any] = {}
        for key in ("methods", "tasks", "dims", "layers", "seeds", "budgets"):
            if key in merged:
                kw[key] = _tuple(merged[key], key, problems)
        if "time_cap_s" in merged:
            kw["time_cap_s"] = merged["time_cap_s"]
        for key in ("methods", "tasks"):
            if not kw.get(key):
                problems.append(f"block {i}: `{key}` is missing or empty")
        blocks.append(Block(**{"methods": (), "tasks": (), **kw}, hparams=dict(block_hparams)))
    hparams = spec.get("hparams", {}) or {}
    task_options = spec.get("task_options", {}) or {}
    for key, val in (("hparams", hparams), ("task_options", task_options)):
        if not _is_table_of_tables(val):
            problems.append(f"`{key}` must map names to tables, e.g. [{key}.NAME]")
    ev = spec.get("eval", {}) or {}
    fields = {f.name for f in dataclasses.fields(EvalSettings)}
    if not isinstance(ev, dict) or set(ev) - fields:
        problems.append(f"`eval`: unknown key(s) {sorted(set(ev) - fields) if isinstance(ev, dict) else ev!r}; "
                        f"known: {sorted(fields)}")
        ev = {}
    imports = _tuple(spec.get("imports"), "imports", problems)
    if problems:
        raise MatrixError(problems)
    return Matrix(name=str(spec.get("name", default_name)), blocks=blocks, hparams=dict(hparams),
                  task_options=dict(task_options), eval=EvalSettings(**ev), imports=tuple(str(i) for i in imports))


def load_imports(imports: tuple[str, ...] | list[str]) -> None:
    """Import plugin modules (dotted names, or paths to ``.py`` files) that register extra adapters or tasks.

    A file is imported once per process under the module name ``ebflow_bench_plugin_<stem>``.
    """
    for item in imports:
        if item.endswith(".py"):
            path = Path(item).resolve()
            modname = f"ebflow_bench_plugin_{path.stem}"
            if modname in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(modname, path)
            if spec is None or spec.loader is None or not path.is_file():
                raise MatrixError([f"import {item!r}: no such Python file"])
            mod = importlib.util.module_from_spec(spec)
            sys.modules[modname] = mod
            spec.loader.exec_module(mod)
        else:
            importlib.import_module(item)


# ------------------------------------------------------------------------------------------ validation


def adapter_registry() -> dict[str, type]:
    """Every registered adapter. Adapter modules that do not exist yet are skipped; broken ones raise."""
    from .adapters import ADAPTER_MODULES
    from .adapters import base

    for mod in ADAPTER_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    return dict(base._REGISTRY)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(matrix: Matrix) -> list[Cell]:
    """Check the whole matrix before any work; return its cells or raise one :class:`MatrixError`.

    Checks: known methods and tasks (the message lists the known names); each dim an integer >= 1 and equal to
    the task's fixed D where it has one; layers, seeds and budgets integers (layers, budgets >= 1, seeds >= 0);
    hyperparameter names known to the adapter; eval settings in range and the device usable; every
    (task, dim) builds (with the first seed) and has finite data; and each adapter's ``check(task, dim, layers)``.
    A task whose optional data is not on this machine (``TaskUnavailable``, e.g. UCI without its folder) is
    skipped: its cells are left out with a :class:`TaskSkipped` warning saying why (an error if no cell is left).
    """
    import torch

    from .tasks import TaskUnavailable, available_tasks, get_task, task_dim

    problems: list[str] = []
    try:
        load_imports(matrix.imports)
    except Exception as e:  # a broken plugin is a problem of the matrix
        raise MatrixError([f"imports: {type(e).__name__}: {e}"]) from None
    registry = adapter_registry()
    tasks = set(available_tasks())
    for i, b in enumerate(matrix.blocks):
        where = f"block {i}: " if len(matrix.blocks) > 1 else ""
        for m in b.methods:
            if m not in registry:
                problems.append(f"{where}unknown method {m!r}; known: {', '.join(sorted(registry)) or '(none)'}")
        for t in b.tasks:
            if t not in tasks:
                problems.append(f"{where}unknown task {t!r}; known: {', '.join(sorted(tasks)) or '(none)'}")
        for d in b.dims:
            if d is not None and (not _is_int(d) or d < 1):
                problems.append(f"{where}impossible D {d!r}: dims must be integers >= 1")
        for t in b.tasks:
            if t not in tasks:
                continue
            try:  # for a task whose data set D (`file`), D comes from its options
                fixed = task_dim(t, matrix.task_options.get(t, {}))
            except (ValueError, OSError) as e:
                problems.append(f"{where}task {t!r}: {e}")
                continue
            for d in b.dims:
                if d is None and fixed is None:
                    problems.append(f"{where}task {t!r} takes any D: give `dims`")
                elif _is_int(d) and d >= 1 and fixed is not None and d != fixed:
                    problems.append(f"{where}impossible D {d} for task {t!r}: its dimension is fixed at {fixed}")
        for key, lo in (("layers", 1), ("seeds", 0), ("budgets", 1)):
            vals = getattr(b, key)
            if not vals:
                problems.append(f"{where}`{key}` is empty")
            bad = [v for v in vals if not _is_int(v) or v < lo]
            if bad:
                problems.append(f"{where}bad {key} {bad}: must be integers >= {lo}")
        if b.time_cap_s is not None and (isinstance(b.time_cap_s, bool) or not isinstance(b.time_cap_s, (int, float))
                                         or not math.isfinite(b.time_cap_s) or b.time_cap_s <= 0):
            problems.append(f"{where}bad time_cap_s {b.time_cap_s!r}: must be a positive number of seconds")
    scopes = [("", matrix.hparams, matrix.methods)]
    scopes += [(f"block {i}: ", b.hparams, list(b.methods)) for i, b in enumerate(matrix.blocks) if b.hparams]
    for where, table, methods in scopes:
        for m, hp in table.items():
            if m not in methods:
                problems.append(f"{where}hparams given for {m!r}, which is not among the "
                                f"{'block' if where else 'matrix'}'s methods {sorted(methods)}")
            elif m in registry:
                unknown = set(hp) - set(registry[m].defaults)
                if unknown:
                    problems.append(f"{where}unknown hyperparameter(s) {sorted(unknown)} for {m!r}; "
                                    f"known: {sorted(registry[m].defaults)}")
    for t in matrix.task_options:
        if t not in matrix.tasks:
            problems.append(f"task_options given for {t!r}, which is not among the matrix's tasks {matrix.tasks}")
    ev = matrix.eval
    for key, lo in (("n_samples", 1), ("checkpoints", 0), ("checkpoint_test", 1)):
        v = getattr(ev, key)
        if not _is_int(v) or v < lo:
            problems.append(f"eval.{key} = {v!r}: must be an integer >= {lo}")
    if ev.max_test is not None and (not _is_int(ev.max_test) or ev.max_test < 1):
        problems.append(f"eval.max_test = {ev.max_test!r}: must be an integer >= 1")
    try:
        dev = torch.device("cuda" if ev.device == "auto" and torch.cuda.is_available() else
                           "cpu" if ev.device == "auto" else ev.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            problems.append(f"device {ev.device!r} requested but CUDA is not available")
    except (RuntimeError, TypeError) as e:
        problems.append(f"bad device {ev.device!r}: {e}")
    if problems:
        raise MatrixError(problems)

    cells = matrix.cells()
    # build each (task, dim) once with the first seed of its block: data must be finite, adapters must accept it
    checked: dict[tuple[str, int], Any] = {}
    reported: set[tuple[str, str, int, int]] = set()
    unavailable: dict[str, str] = {}
    for c in cells:
        key = (c.task, c.dim)
        if key not in checked:
            try:
                task = get_task(c.task, dim=None if task_dim(c.task) is not None else c.dim, seed=c.seed,
                                **c.task_options)
                for split in ("train", "test"):
                    t = getattr(task, split)
                    if not torch.isfinite(t).all():
                        raise ValueError(f"{split} data contains {int((~torch.isfinite(t)).sum())} non-finite values")
                checked[key] = task
            except TaskUnavailable as e:  # optional data not on this machine: skip its cells, say why
                checked[key] = None
                unavailable.setdefault(c.task, str(e))
            except (ValueError, TypeError) as e:
                checked[key] = None
                problems.append(f"task {c.task!r} (D={c.dim}): {e}")
        task = checked[key]
        rkey = (c.method, c.task, c.dim, c.layers)
        if task is None or rkey in reported:
            continue
        reported.add(rkey)
        reason = registry[c.method].check(task, c.dim, c.layers)
        if reason:
            problems.append(f"impossible cell {c.method} on {c.task} (D={c.dim}, L={c.layers}): {reason}")
    if problems:
        raise MatrixError(problems)
    if unavailable:
        cells = [c for c in cells if c.task not in unavailable]
        if not cells:
            raise MatrixError([f"task {t!r} unavailable: {m}" for t, m in unavailable.items()]
                              + ["no cell of the matrix can run"])
        for t, m in unavailable.items():
            warnings.warn(f"skipping task {t!r}: {m}", TaskSkipped, stacklevel=2)
    return cells
