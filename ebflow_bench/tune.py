"""``ebflow-bench tune``: every method family gets the same, documented tuning budget on a validation split.

Search space: each adapter's ``tune_grid`` (declared next to its ``hparam_spec``; 6 points for every family in
this suite), searched as a full product. Each candidate is an ordinary cell, run by the ordinary runner
(:func:`ebflow_bench.runner.run_matrix`, so ``--workers`` and ``--resume`` work as for ``run``), on the task with
the option ``validation`` (:func:`ebflow_bench.tasks.validation_split`): the model trains on the training set
minus a held-out fraction (default the last 10% of a seeded permutation) and is scored on that fraction; the
task's test set is never used. Every candidate of every method gets the same step budget, depth and seeds.

Selection, per (method, task): a ``failed``, ``capped`` or ``degenerate`` candidate (on any seed) is never chosen
and is listed with its reason. The score is the validation NLL (mean over seeds) when every remaining candidate
of the method on that task has one, otherwise the sliced 2-Wasserstein distance of its samples to the validation
points (the same metric for all candidates of a method on a task, never mixed). Lower is better; candidates
within ``TIE_TOLERANCE`` (1%, of the best score's magnitude) of the best are ties, and a tie goes to the
candidate nearest the adapter's current default (distance: sum over the grid's keys of ``|log(value/default)|``
for positive numbers, 1 for any other difference).

Outputs in ``out``: ``tuning.csv`` (every candidate: method, task, hyperparameters, score, metric, status,
reason, chosen), ``tuned.toml`` (``[hparams.METHOD]`` tables a matrix can use; values that differ between the
tuned tasks are left out of it, listed in a comment, and written per task to ``tuned-TASK.toml``),
``tuning.md`` (per method: search space, budget, choice against the default, and the command), and the run
folder ``runs/`` of the candidate cells.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TIE_TOLERANCE = 0.01
DEFAULT_VALIDATION = 0.1
#: the evaluation of a candidate: samples for the sample metrics (sliced W2), no training checkpoints
EVAL = {"n_samples": 1000, "checkpoints": 0, "checkpoint_test": 1000, "threads": 1}

__all__ = ["Candidate", "TuneResult", "grid_points", "select", "tune", "write_outputs", "TIE_TOLERANCE"]


def grid_points(grid: dict[str, tuple]) -> list[dict[str, Any]]:
    """The product of ``grid`` as a list of ``{name: value}`` (in the grid's order); ``[{}]`` for no grid."""
    keys = list(grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]


@dataclass
class Candidate:
    """One grid point of one method on one task, with its outcome over the seeds."""

    method: str
    task: str
    values: dict[str, Any]
    default: dict[str, Any]
    status: str = "ok"
    reason: str = ""
    nll: float = math.nan
    sliced_w2: float = math.nan
    score: float = math.nan
    metric: str = ""
    chosen: bool = False
    cell_ids: list[str] = field(default_factory=list)

    @property
    def is_default(self) -> bool:
        return all(_same(self.values[k], self.default.get(k)) for k in self.values)

    def distance_to_default(self) -> float:
        return sum(_distance(v, self.default.get(k)) for k, v in self.values.items())


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def _distance(v: Any, d: Any) -> float:
    if _same(v, d):
        return 0.0
    if (isinstance(v, (int, float)) and isinstance(d, (int, float)) and not isinstance(v, bool)
            and not isinstance(d, bool) and v > 0 and d > 0):
        return abs(math.log(float(v) / float(d)))
    return 1.0


def select(cands: list[Candidate]) -> Candidate | None:
    """Mark and return the chosen candidate of one (method, task) (see the module docstring), or None when no
    candidate is usable. Sets ``score`` and ``metric`` of every usable candidate."""
    usable = [c for c in cands if c.status == "ok"]
    if not usable:
        return None
    metric = "val_nll" if all(math.isfinite(c.nll) for c in usable) else "val_sliced_w2"
    for c in usable:
        c.metric = metric
        c.score = c.nll if metric == "val_nll" else c.sliced_w2
        if not math.isfinite(c.score):
            c.status, c.reason = "unscored", f"no finite {metric} (sliced W2 of its samples failed)"
    usable = [c for c in usable if c.status == "ok"]
    if not usable:
        return None
    best = min(c.score for c in usable)
    tol = TIE_TOLERANCE * max(abs(best), 1e-12)
    ties = [c for c in usable if c.score <= best + tol]
    chosen = min(ties, key=lambda c: (c.distance_to_default(), c.score))
    chosen.chosen = True
    return chosen


def _metric(rows: list[dict[str, Any]], name: str) -> float:
    for r in rows:
        if r.get("metric") == name and r.get("status") == "ok":
            return float(r["value"])
    return math.nan


def _score_records(cand: Candidate, records: list[dict[str, Any]]) -> None:
    """Fill ``cand``'s status and metrics from its cells' records (one per seed)."""
    bad = [r for r in records if r["status"] != "ok"]
    if bad:
        r = bad[0]
        cand.status = r["status"]
        seed = r["spec"]["train_seed"]
        cand.reason = f"seed {seed}: {r['reason']}" if len(records) > 1 else r["reason"]
        return
    nlls = [_metric(r["rows"], "test_nll") for r in records]
    w2s = [_metric(r["rows"], "sliced_wasserstein") for r in records]
    cand.nll = sum(nlls) / len(nlls)  # NaN if any seed has none
    cand.sliced_w2 = sum(w2s) / len(w2s)


@dataclass
class TuneResult:
    candidates: list[Candidate]
    skipped: dict[tuple[str, str], str]
    settings: dict[str, Any]
    grids: dict[str, dict[str, tuple]]

    def chosen(self) -> dict[tuple[str, str], Candidate]:
        return {(c.method, c.task): c for c in self.candidates if c.chosen}


def tune(methods: list[str], tasks: list[str], out: str | Path, *, steps: int = 500, seeds: list[int] = (0,),
         layers: int = 2, validation: float = DEFAULT_VALIDATION, workers: int | None = 1, device: str = "cpu",
         task_options: dict[str, dict[str, Any]] | None = None, hparams: dict[str, dict[str, Any]] | None = None,
         resume: bool = False, progress: bool = True, command: str = "") -> TuneResult:
    """Run every grid point of every method on every task (validation split) and select; see the module
    docstring. ``hparams``: fixed per-method hyperparameters under the grid (e.g. ``arch``); ``task_options``:
    per-task options (e.g. ``smooth``). Raises :class:`ebflow_bench.matrix.MatrixError` for bad input."""
    from .matrix import MatrixError, _check, adapter_registry, matrix_from_dict
    from .runner import run_matrix
    from .tasks import get_task, task_dim

    task_options = {t: dict(v) for t, v in (task_options or {}).items()}
    hparams = {m: dict(v) for m, v in (hparams or {}).items()}
    registry = adapter_registry()
    problems = [f"unknown method {m!r}; known: {', '.join(sorted(registry))}" for m in methods if m not in registry]
    problems += [f"--hparam given for {m!r}, which is not among the methods" for m in hparams if m not in methods]
    problems += [f"task option given for {t!r}, which is not among the tasks" for t in task_options if t not in tasks]
    if not isinstance(steps, int) or steps < 1:
        problems.append(f"steps must be an integer >= 1, got {steps!r}")
    if not 0 < validation < 1:
        problems.append(f"validation must be a fraction in (0, 1), got {validation!r}")
    for m in methods:
        if m in registry and not registry[m].tune_grid:
            problems.append(f"{m} declares no tune_grid (a reference adapter has nothing to tune)")
        for k in hparams.get(m, {}):
            if m in registry and k in registry[m].tune_grid:
                problems.append(f"--hparam {m}.{k}: {k} is searched by the grid; it cannot also be fixed")
    if problems:
        raise MatrixError(problems)

    opts = {t: {**task_options.get(t, {}), "validation": float(validation)} for t in tasks}
    built, skipped, blocks = {}, {}, []
    grids = {m: dict(registry[m].tune_grid) for m in methods}
    cands: list[Candidate] = []
    for t in tasks:
        try:
            dim = task_dim(t, opts[t])
            if dim is None:
                raise ValueError(f"task {t!r} takes any D; tune needs a task of fixed dimension")
            built[t] = get_task(t, seed=seeds[0], **opts[t])
        except (KeyError, ValueError, TypeError) as e:
            problems.append(f"task {t!r}: {e}")
    if problems:
        raise MatrixError(problems)
    for m in methods:
        cls = registry[m]
        for t in tasks:
            task = built[t]
            default = cls.resolve_hparams(task, hparams.get(m, {}))
            reason = _check(cls, task, task.dim, layers, default)
            if reason:
                skipped[(m, t)] = reason
                continue
            for point in grid_points(grids[m]):
                values = {k: cls.hparam_spec[k].coerce(k, v)[0] for k, v in point.items()}
                cands.append(Candidate(m, t, values, {k: default[k] for k in values}))
                blocks.append({"methods": [m], "tasks": [t], "hparams": {m: {**hparams.get(m, {}), **values}}})
    if not blocks:
        raise MatrixError(["no (method, task) pair can run: " + "; ".join(f"{m} on {t}: {r}"
                                                                          for (m, t), r in skipped.items())])
    matrix = matrix_from_dict({"name": "tune", "seeds": list(seeds), "budgets": [steps], "layers": [layers],
                               "task_options": opts, "block": blocks, "eval": {**EVAL, "device": device}})
    out = Path(out)
    run_dir = out / "runs"
    run_matrix(matrix, run_dir, resume=resume, workers=workers, progress=progress)
    records: dict[tuple, list[dict[str, Any]]] = {}
    for p in sorted((run_dir / "cells").glob("*.json")):
        r = json.loads(p.read_text())
        s = r["spec"]
        key = (s["method"], s["task"], repr([s["hparams"][k] for k in grids[s["method"]]]))
        records.setdefault(key, []).append(r)
    for c in cands:
        recs = records.get((c.method, c.task, repr(list(c.values.values()))), [])
        if len(recs) != len(seeds):
            c.status, c.reason = "failed", f"{len(recs)} cell records for {len(seeds)} seeds"
        else:
            c.cell_ids = [r["cell_id"] for r in recs]
            _score_records(c, recs)
    for m in methods:
        for t in tasks:
            select([c for c in cands if c.method == m and c.task == t])
    settings = {"steps": steps, "seeds": list(seeds), "layers": layers, "validation": validation,
                "device": device, "task_options": task_options, "hparams": hparams, "command": command,
                "n_samples": EVAL["n_samples"]}
    result = TuneResult(cands, skipped, settings, grids)
    write_outputs(result, out)
    return result


# -------------------------------------------------------------------------------------------------- outputs


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v)


def _fmt(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={'none' if v is None else f'{v:g}' if isinstance(v, float) else v}"
                     for k, v in values.items())


def _table(method: str, values: dict[str, Any]) -> list[str]:
    lines = [f"[hparams.{method}]"]
    for k, v in values.items():
        lines.append(f"# {k}: none (off; the default)" if v is None else f"{k} = {_toml_value(v)}")
    return lines


def write_outputs(result: TuneResult, out: str | Path) -> list[Path]:
    """Write ``tuning.csv``, ``tuned.toml`` (+ ``tuned-TASK.toml`` where choices differ by task), ``tuning.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "tuning.csv", out / "tuned.toml", out / "tuning.md"]
    with open(paths[0], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "task", "hparams", "score", "metric", "val_nll", "val_sliced_w2", "status",
                    "reason", "chosen", "is_default"])
        for c in result.candidates:
            w.writerow([c.method, c.task, json.dumps(c.values), f"{c.score:.6g}", c.metric, f"{c.nll:.6g}",
                        f"{c.sliced_w2:.6g}", c.status, c.reason, int(c.chosen), int(c.is_default)])
    chosen = result.chosen()
    methods = list(dict.fromkeys(c.method for c in result.candidates))
    tasks = list(dict.fromkeys(c.task for c in result.candidates))
    s = result.settings
    head = [f"# ebflow-bench tune: hyperparameters chosen on a validation split ({s['validation']:g} of the training "
            f"set), {s['steps']} steps, seeds {s['seeds']}, L = {s['layers']}, tasks {', '.join(tasks)}.",
            "# Copy these [hparams.METHOD] tables into a matrix file (see tuning.md for the search and budget)."]
    toml = list(head)
    per_task: dict[str, list[str]] = {t: [] for t in tasks}
    differs = False
    for m in methods:
        picks = {t: chosen[(m, t)].values for t in tasks if (m, t) in chosen}
        if not picks:
            continue
        keys = list(result.grids[m])
        common = {k: v[k] for k in keys for v in [next(iter(picks.values()))]
                  if all(_same(p[k], v[k]) for p in picks.values())}
        varying = [k for k in keys if k not in common]
        toml += [""] + _table(m, common)
        if varying:
            differs = True
            toml.append(f"# differs by task (see tuned-<task>.toml): " + "; ".join(
                f"{t}: {_fmt({k: p[k] for k in varying})}" for t, p in picks.items()))
        for t, p in picks.items():
            per_task[t] += [""] + _table(m, p)
    paths[1].write_text("\n".join(toml) + "\n")
    if differs and len(tasks) > 1:
        for t in tasks:
            if per_task[t]:
                p = out / f"tuned-{t}.toml"
                p.write_text("\n".join([head[0], f"# The choices for task {t}."] + per_task[t]) + "\n")
                paths.append(p)
    paths[2].write_text(_markdown(result, chosen, methods, tasks))
    return paths


def _markdown(result: TuneResult, chosen: dict, methods: list[str], tasks: list[str]) -> str:
    s = result.settings
    n_seeds = len(s["seeds"])
    lines = ["# Tuning: search space, budget and choice per method", "",
             f"Command: `{s['command']}`" if s["command"] else "", "",
             f"Every candidate is one cell per seed, trained for {s['steps']} steps (the same for every candidate "
             f"and every method) at depth L = {s['layers']} on the training set minus a validation split (the last "
             f"{s['validation']:g} of a seeded permutation of the training set; the test set is never used), seeds "
             f"{s['seeds']}. Score: validation NLL (nats) where every usable candidate of the method on the task "
             f"has one, otherwise the sliced 2-Wasserstein distance of {s['n_samples']} samples to the validation "
             f"points; lower is better. `failed`/`degenerate` candidates are never chosen. Ties within "
             f"{100 * TIE_TOLERANCE:g}% go to the candidate nearest the current default.", ""]
    if s["task_options"]:
        lines += [f"Task options: `{json.dumps(s['task_options'])}`.", ""]
    if s["hparams"]:
        lines += [f"Fixed hyperparameters under the grid: `{json.dumps(s['hparams'])}`.", ""]
    lines += ["| method | search space | budget (candidates x steps x seeds) | task | chosen | current default "
              "| score (metric) | excluded |", "|---|---|---|---|---|---|---|---|"]
    for m in methods:
        grid = result.grids[m]
        n = math.prod(len(v) for v in grid.values())
        space = " x ".join(f"{k} {{{', '.join('none' if v is None else f'{v:g}' for v in vals)}}}"
                           for k, vals in grid.items())
        for t in tasks:
            cands = [c for c in result.candidates if c.method == m and c.task == t]
            if (m, t) in result.skipped:
                lines.append(f"| {m} | {space} | - | {t} | not applicable: {result.skipped[(m, t)]} | | | |")
                continue
            excl = [c for c in cands if c.status != "ok"]
            ex = "; ".join(f"{_fmt(c.values)}: {c.status} ({c.reason[:90]})" for c in excl) or "none"
            c = chosen.get((m, t))
            pick = _fmt(c.values) if c else "none usable (default kept)"
            same = " (= default)" if c and c.is_default else ""
            default = _fmt(cands[0].default) if cands else ""
            score = f"{c.score:.4g} ({c.metric})" if c else ""
            lines.append(f"| {m} | {space} | {n} x {s['steps']} x {n_seeds} | {t} | {pick}{same} | {default} | "
                         f"{score} | {ex} |")
    return "\n".join(lines) + "\n"
