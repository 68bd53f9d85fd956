"""Sections Runs and Tuning budget: run folders, commits, devices, versions, the commands that made them, and
the tuning grid behind each method's defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..doc import Block, Heading, Para, Table


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _command_text(cmd: list[str] | str | None) -> str:
    """A recorded command line as text, with the installed script's full path shortened to its name."""
    parts = list(cmd) if isinstance(cmd, list) else str(cmd or "").split(" ")
    if parts and (Path(parts[0]).name == "ebflow-bench" or parts[0].endswith("ebflow_bench/cli.py")):
        parts[0] = "ebflow-bench"
    return " ".join(parts)


def reproduce_commands(run_dirs: list[Path], command: str | None) -> list[str]:
    """The commands that made the runs (from each run folder's meta.json sessions), then this report's."""
    cmds = []
    for d in run_dirs:
        meta = _read_json(d / "meta.json")
        if not meta:
            cmds.append(f"# {d}: no meta.json: the command that produced this run is unknown")
            continue
        commit = str(meta.get("commit") or "")
        if commit and commit != "unknown":
            dirty = commit.endswith("+dirty")
            cmds.append(f"git checkout {commit.removesuffix('+dirty')} && pip install -e .   # the code of run "
                        f"{d.name}" + (" (it had uncommitted changes: not exactly reproducible)" if dirty else ""))
        for s in meta.get("sessions", []):
            cmds.append(_command_text(s.get("command")))
        if not meta.get("sessions") and meta.get("command"):
            cmds.append(_command_text(meta["command"]))
    if command:
        cmds.append(command)
    return list(dict.fromkeys(cmds))  # a resumed run's repeated command once, in first-use order


def runs_section(run_dirs: list[Path], df: pd.DataFrame) -> list[Block]:
    from ...rundir import run_provenance

    blocks: list[Block] = [Heading("Runs")]
    rows = []
    for d in run_dirs:
        meta = _read_json(d / "meta.json")
        versions = meta.get("versions") or {}
        vtext = ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) if isinstance(versions, dict) \
            else str(versions)
        n_cells = df.loc[df["run_id"].eq(meta.get("run_id")), "cell_id"].nunique() if meta.get("run_id") else ""
        commits, clean = run_provenance(meta)
        rows.append([f"`{d}`", str(meta.get("run_id", "")), commits, clean,
                     str(meta.get("device", "")) or "unknown", str(meta.get("started", "")),
                     str(meta.get("finished", "")), str(n_cells), vtext or "unknown"])
    blocks.append(Table(["run dir", "run id", "commit", "clean", "device", "started", "finished", "cells",
                         "versions"], rows, name="runs"))
    devices = sorted(set(df["device"]) - {""})
    commits = sorted(set(df["commit"]) - {""})
    blocks.append(Para(f"Devices in the results table: {', '.join(devices) or 'unknown'}; commits: "
                       f"{', '.join(commits) or 'unknown'}. The commands that reproduce this report are at the "
                       "end of the Summary."))
    return blocks


def tuning_section(df: pd.DataFrame) -> list[Block]:
    """The tuning budget behind each method's defaults: its declared ``tune_grid`` (the search space of
    ``ebflow-bench tune``), the same number of candidates for every family, and the resolved settings that ran."""
    from ...matrix import adapter_registry

    reg = adapter_registry()
    rows = []
    for method in sorted(set(df["method"])):
        cls = reg.get(method)
        if cls is None:
            continue
        grid = getattr(cls, "tune_grid", {}) or {}
        points = int(np.prod([len(v) for v in grid.values()])) if grid else 0
        space = " x ".join(f"{k} {{{', '.join('none' if x is None else f'{x:g}' if isinstance(x, float) else str(x) for x in v)}}}"
                           for k, v in grid.items()) or "none (a reference row: nothing is trained)"
        rows.append([f"`{method}`", cls.family, space, str(points)])
    if not rows:
        return []
    return [Heading("Tuning budget"), Para(
        "Every method family gets the same tuning budget: a 6-point grid declared on its adapter (`tune_grid`), "
        "searched by `ebflow-bench tune` with the same steps and seeds for every candidate on a validation split "
        "of the training data (the test set is never used); failed or degenerate candidates are never chosen. "
        "The suite's defaults were chosen this way (committed runs, commands and choices: `results/tuning/`, "
        "`docs/TUNING.md`); the hyperparameters each cell actually ran with are in the results table's `hparams` "
        "column."), Table(["method", "family", "search space", "candidates"], rows, name="tuning")]
