"""The benchmark matrix: which methods run on which tasks, at which sizes, seeds and budgets.

A :class:`Matrix` is a union of :class:`Block` s; each block is a Cartesian product
``methods x tasks x dims x layers x (data_seed, train_seed) x budgets``. One block is enough for most
matrices; several let one
file pair, say, every method with the 2-D toys and only the cheap ones with a large-D sweep.

File format (TOML, or the same keys in YAML)::

    name = "small"
    imports = []                      # optional: modules or .py files that register extra adapters/tasks
    methods = ["ebflow-dsm", "mle-lu"]
    tasks = ["checkerboard"]
    dims = [2]                        # optional; default: each task's fixed D
    layers = [2]
    seeds = [0, 1]                    # each seed is both the data seed and the training seed; or instead
    # data_seeds = [0]                #   the product data_seeds x train_seeds (a missing one is [0])
    # train_seeds = [0, 1, 2]
    budgets = [500]                   # training steps
    time_cap_s = 600                  # optional safety limit on training wall time; a cell that reaches it
                                      #   is recorded `capped` (budgets are steps, not seconds)

    [method_budgets]                  # optional per-method step budgets over `budgets` (also per block)
    ebflow-ml = [300]

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
    checkpoints = 4                   # NLL checkpoints during training (quality against compute)
    checkpoint_test = 1000            # test points used at those checkpoints
    max_test = 5000                   # test points for the final NLL (all if unset)
    device = "cpu"                    # or "cuda", "cuda:N", "auto" (resolved per cell before any work)
    threads = 1                       # torch threads per cell (serial and Dask alike)

When the top level has ``[[block]]`` entries and no ``methods``/``tasks`` of its own, only the blocks are
run; otherwise the top level is the first block.

``validate(matrix)`` checks everything that can be checked before any training, resolves every cell into a
:class:`ebflow_bench.cell.CellSpec` (hyperparameters typed and range-checked by the adapter's declarations,
per-task defaults filled in, device resolved) and returns them in a deterministic, de-duplicated order, or
raises one :class:`MatrixError` listing every problem.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import math
import sys
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cell import CellSpec, EvalSpec

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
    """One Cartesian product of the matrix. ``dims`` entries of ``None`` mean "the task's fixed D".

    Seeds: ``seeds`` pairs each value as (data seed, train seed); ``data_seeds`` x ``train_seeds`` is a product
    (``None``: not given). ``method_budgets`` overrides ``budgets`` for the methods it names."""

    methods: tuple[str, ...]
    tasks: tuple[str, ...]
    dims: tuple[int | None, ...] = (None,)
    layers: tuple[int, ...] = (2,)
    seeds: tuple[int, ...] | None = (0,)
    data_seeds: tuple[int, ...] | None = None
    train_seeds: tuple[int, ...] | None = None
    budgets: tuple[int, ...] = (500,)
    time_cap_s: float | None = None
    method_budgets: dict[str, tuple[int, ...]] = field(default_factory=dict, hash=False, compare=False)
    #: per-method hyperparameters of this block, applied over the matrix-wide ``hparams``
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False, compare=False)

    def seed_pairs(self) -> list[tuple[int, int]]:
        """(data_seed, train_seed) pairs in order."""
        if self.data_seeds is None and self.train_seeds is None:
            return [(s, s) for s in (self.seeds or ())]
        return [(d, t) for d in (self.data_seeds or (0,)) for t in (self.train_seeds or (0,))]

    def budgets_for(self, method: str) -> tuple[int, ...]:
        return self.method_budgets.get(method, self.budgets)


@dataclass(frozen=True)
class EvalSettings(EvalSpec):
    """The matrix's ``[eval]`` table: the :class:`ebflow_bench.cell.EvalSpec` fields plus the requested device
    (resolved per cell by :func:`validate`) and the torch thread count of every cell."""

    device: str = "cpu"
    threads: int = 1

    def spec(self) -> EvalSpec:
        return EvalSpec(**{f.name: getattr(self, f.name) for f in dataclasses.fields(EvalSpec)})


@dataclass(frozen=True)
class _Raw:
    """A cell before resolution: what the matrix file says."""

    method: str
    task: str
    dim: int
    layers: int
    data_seed: int
    train_seed: int
    budget: int
    time_cap_s: float | None
    hparams: dict[str, Any] = field(hash=False)
    task_options: dict[str, Any] = field(hash=False)


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

    def raw_cells(self) -> list[_Raw]:
        """All cells as the file gives them, in block order, then methods, tasks, dims, layers, seed pairs,
        budgets (unresolved; :func:`validate` resolves and de-duplicates them).

        A ``None`` dim resolves to the task's fixed D (a task without one is reported by :func:`validate`).
        """
        from .tasks import task_dim

        out = []
        for b in self.blocks:
            for m in b.methods:
                for t in b.tasks:
                    for d in b.dims:
                        dim = task_dim(t, self.task_options.get(t, {})) if d is None else d
                        if dim is None:
                            raise MatrixError([f"task {t!r} takes any D: give `dims`"])
                        for layers in b.layers:
                            for data_seed, train_seed in b.seed_pairs():
                                for budget in b.budgets_for(m):
                                    out.append(_Raw(m, t, int(dim), int(layers), int(data_seed), int(train_seed),
                                                    int(budget), b.time_cap_s,
                                                    {**self.hparams.get(m, {}), **b.hparams.get(m, {})},
                                                    dict(self.task_options.get(t, {}))))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "imports": list(self.imports),
            "blocks": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(b).items()}
                       for b in self.blocks],
            "hparams": self.hparams, "task_options": self.task_options, "eval": dataclasses.asdict(self.eval),
        }


# --------------------------------------------------------------------------------------------- loading

_SEED_KEYS = ("seeds", "data_seeds", "train_seeds")
_BLOCK_KEYS = {"methods", "tasks", "dims", "layers", *_SEED_KEYS, "budgets", "time_cap_s", "method_budgets"}
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
        for src in (top, rb):
            if "seeds" in src and ("data_seeds" in src or "train_seeds" in src):
                problems.append(f"{'block ' + str(i) + ': ' if src is rb else ''}give `seeds` (data and training "
                                "seed alike) or `data_seeds`/`train_seeds`, not both")
        inherited = dict(top)
        if any(k in rb for k in _SEED_KEYS):  # the block's own seeds replace the top level's
            for k in _SEED_KEYS:
                inherited.pop(k, None)
        merged = {**inherited, **rb}
        kw: dict[str, Any] = {}
        for key in ("methods", "tasks", "dims", "layers", *_SEED_KEYS, "budgets"):
            if key in merged:
                kw[key] = _tuple(merged[key], key, problems)
        if "data_seeds" in kw or "train_seeds" in kw:
            kw.setdefault("seeds", None)
        if "time_cap_s" in merged:
            kw["time_cap_s"] = merged["time_cap_s"]
        mb: dict[str, Any] = {}
        for src in (top, rb):
            table = src.get("method_budgets") or {}
            if isinstance(table, dict):
                mb.update(table)
            elif src is rb:
                problems.append(f"block {i}: `method_budgets` must map method names to budgets")
        kw["method_budgets"] = {m: _tuple(v, f"method_budgets.{m}", problems) for m, v in mb.items()}
        for key in ("methods", "tasks"):
            if not kw.get(key):
                problems.append(f"block {i}: `{key}` is missing or empty")
        blocks.append(Block(**{"methods": (), "tasks": (), **kw}, hparams=dict(block_hparams)))
    hparams = spec.get("hparams", {}) or {}
    task_options = spec.get("task_options", {}) or {}
    for key, val in (("hparams", hparams), ("task_options", task_options)):
        if not _is_table_of_tables(val):
            problems.append(f"`{key}` must map names to tables, e.g. [{key}.NAME]")
    if "method_budgets" in spec and not isinstance(spec["method_budgets"], dict):
        problems.append("`method_budgets` must map method names to budgets, e.g. [method_budgets]")
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
    from .adapters import ADAPTER_MODULES, base

    for mod in ADAPTER_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    return dict(base._REGISTRY)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(cls: type, task: Any, dim: int, layers: int, hparams: dict[str, Any]) -> str | None:
    """``cls.check`` with the resolved hyperparameters when the adapter's ``check`` accepts them."""
    if "hparams" in inspect.signature(cls.check).parameters:
        return cls.check(task, dim, layers, hparams=hparams)
    return cls.check(task, dim, layers)


def check_static(matrix: Matrix) -> dict[str, type]:
    """The checks of :func:`validate` that build nothing (names, dims, budgets, hyperparameters, eval settings,
    the device) and the resource pre-flight (:func:`ebflow_bench.preflight.check_cells`); returns the adapter
    registry, or raises one :class:`MatrixError` (or a ``ResourceError`` line).

    It reads declarations only and imports no torch (the adapters and tasks name it lazily, ``ebflow_bench._lazy``;
    only a matrix's own ``imports``, or a ``cuda`` device to check, may import it): the CLI calls it before it
    imports the runner, so an impossible matrix is refused in a fraction of a second (``validate`` repeats it
    before building the tasks)."""
    from . import preflight
    from .adapters.base import HParamError
    from .device import check_device
    from .tasks import available_tasks, task_dim

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
        checks = [("layers", b.layers, 1), ("budgets", b.budgets, 1)]
        checks += [(k, getattr(b, k), 0) for k in _SEED_KEYS if getattr(b, k) is not None]
        checks += [(f"method_budgets.{m}", v, 1) for m, v in b.method_budgets.items()]
        for key, vals, lo in checks:
            if not vals:
                problems.append(f"{where}`{key}` is empty")
            bad = [v for v in vals if not _is_int(v) or v < lo]
            if bad:
                problems.append(f"{where}bad {key} {bad}: must be integers >= {lo}")
        for m in b.method_budgets:
            if m not in b.methods:
                problems.append(f"{where}method_budgets given for {m!r}, which is not among the block's methods")
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
            elif m in registry:  # names, types and ranges (per-task values are resolved below)
                known = registry[m].hparam_spec
                unknown = sorted(set(hp) - set(known))
                if unknown:
                    problems.append(f"{where}unknown hyperparameter(s) {unknown} for {m!r}; known: {sorted(known)}")
                try:
                    registry[m].resolve_hparams(None, {k: v for k, v in hp.items() if k in known})
                except HParamError as e:
                    problems += [f"{where}{m}: {p}" for p in e.problems]
    for t in matrix.task_options:
        if t not in matrix.tasks:
            problems.append(f"task_options given for {t!r}, which is not among the matrix's tasks {matrix.tasks}")
    ev = matrix.eval
    for key, lo in (("n_samples", 1), ("checkpoints", 0), ("checkpoint_test", 1), ("threads", 1)):
        v = getattr(ev, key)
        if not _is_int(v) or v < lo:
            problems.append(f"eval.{key} = {v!r}: must be an integer >= {lo}")
    if ev.max_test is not None and (not _is_int(ev.max_test) or ev.max_test < 1):
        problems.append(f"eval.max_test = {ev.max_test!r}: must be an integer >= 1")
    _, problem = check_device(ev.device, resolve=False)  # `auto` resolves in validate (a CUDA query imports torch)
    if problem:
        problems.append(problem)
    if problems:
        raise MatrixError(problems)

    raw = matrix.raw_cells()

    # the resource pre-flight: every cell's estimated peak memory against the memory there is, before any
    # task or model is built (one ResourceError line)
    preflight.check_cells([(registry[c.method], c) for c in raw], ev.n_samples)
    return registry


def validate(matrix: Matrix) -> list[CellSpec]:
    """Check the whole matrix before any work; return its resolved cell specs or raise one :class:`MatrixError`.

    Checks: known methods and tasks (the message lists the known names); each dim an integer >= 1 and equal to
    the task's fixed D where it has one; layers, seeds and budgets (also ``method_budgets``) integers (layers,
    budgets >= 1, seeds >= 0); every hyperparameter known to the adapter and of its declared type and range
    (``Adapter.resolve_hparams``); eval settings in range, threads >= 1 and the device usable (``cpu``, ``cuda``,
    ``cuda:N`` or ``auto``, resolved here); every (task, dim) builds (with the block's first data seed) and has
    finite data; and each adapter's ``check(task, dim, layers, hparams=...)`` (e.g. ``arch="cnn"`` on 2-D data).
    Every problem found is listed at once. A task whose optional data is not on this machine
    (``TaskUnavailable``, e.g. UCI without its folder) is skipped: its cells are left out with a
    :class:`TaskSkipped` warning saying why (an error if no cell is left).
    """
    import torch

    from . import preflight
    from .device import cell_threads, check_device
    from .tasks import DATA_HASH_OPTION, TaskUnavailable, get_task, task_dim

    registry = check_static(matrix)
    ev = matrix.eval
    device, _ = check_device(ev.device)  # usable (checked above); `auto` resolved here
    raw = matrix.raw_cells()
    problems: list[str] = []
    # build each (task, dim) once with its first data seed: data must be finite, adapters must accept it
    checked: dict[tuple[str, int], Any] = {}
    reported: set[tuple] = set()
    unavailable: dict[str, str] = {}
    specs: dict[str, CellSpec] = {}
    for c in raw:
        key = (c.task, c.dim)
        if key not in checked:
            size = sum(preflight.task_parts(c.task, c.dim, c.task_options).values())
            if size > preflight.ANNOUNCE_BYTES:  # a long build says what it does
                preflight.announce(f"building task {c.task!r} at D={c.dim} to check its data (estimated "
                                   f"{preflight.fmt_bytes(size)})")
            try:
                with cell_threads(ev.threads):  # a task cached here is the one a serial run's cells reuse
                    task = get_task(c.task, dim=None if task_dim(c.task) is not None else c.dim, seed=c.data_seed,
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
        if task is None:
            continue
        cls = registry[c.method]
        hparams = cls.resolve_hparams(task, c.hparams)  # names, types and ranges passed above
        rkey = (c.method, c.task, c.dim, c.layers, repr(sorted(hparams.items())))
        if rkey not in reported:
            reported.add(rkey)
            reason = _check(cls, task, c.dim, c.layers, hparams)
            if reason:
                problems.append(f"impossible cell {c.method} on {c.task} (D={c.dim}, L={c.layers}): {reason}")
        # a data file's content hash joins the spec: different data are different cells and tasks
        sha = (task.options or {}).get(DATA_HASH_OPTION)
        options = {**c.task_options, DATA_HASH_OPTION: sha} if sha else c.task_options
        spec = CellSpec(method=c.method, family=cls.family, objective=cls.objective, task=c.task, dim=c.dim,
                        layers=c.layers, hparams=hparams, data_seed=c.data_seed, train_seed=c.train_seed,
                        budget=c.budget, time_cap_s=None if c.time_cap_s is None else float(c.time_cap_s),
                        device=device, threads=int(ev.threads), task_options=options, eval=ev.spec(),
                        imports=tuple(matrix.imports))
        specs.setdefault(spec.cell_id, spec)
    if problems:
        raise MatrixError(problems)
    cells = list(specs.values())
    if unavailable:
        if not cells:
            raise MatrixError([f"task {t!r} unavailable: {m}" for t, m in unavailable.items()]
                              + ["no cell of the matrix can run"])
        for t, m in unavailable.items():
            warnings.warn(f"skipping task {t!r}: {m}", TaskSkipped, stacklevel=2)
    return cells
