"""Section Samples: model samples (2-D scatter or image grids) beside the target's test data."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import figures
from ..doc import Block, Figure, Heading, Para
from ..tables import cell_status, steps_text

#: tasks drawn as image grids (besides every 2-D task, drawn as scatter plots)
IMAGE_TASKS = ("digits", "mnist5k", "patches")


def _task_target(run_dirs: list[Path], cell_id: str) -> tuple[Any, str]:
    """(Task or None, note) for drawing the target of a cell: built exactly as the cell's recorded spec says
    (task options, data seed); without a cell record, or when the data cannot be had, no target is drawn."""
    from ...cell import CellRecord

    rec = next((p for d in run_dirs for p in [d / "cells" / f"{cell_id}.json"] if p.is_file()), None)
    if rec is None:
        return None, "target not drawn (no cell record beside the results)"
    try:
        from ...matrix import load_imports
        from ...tasks import get_task, task_dim

        spec = CellRecord.from_dict(json.loads(rec.read_text())).spec
        load_imports(spec.imports)
        return get_task(spec.task, dim=None if task_dim(spec.task) is not None else spec.dim, seed=spec.data_seed,
                        **spec.task_options), ""
    except Exception as e:  # noqa: BLE001  (any reason the data cannot be had: the plot goes without target)
        return None, f"target not drawn ({type(e).__name__}: {e})"


def _sample_files(run_dirs: list[Path]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for d in run_dirs:  # the first run folder holding a cell wins, as for the results
        for p in sorted((d / "samples").glob("*.npy")):
            files.setdefault(p.stem, p)
    return files


#: which cell of a configuration the sample figures show: a finished one first
_STATUS_RANK = {"ok": 0, "capped": 1, "degenerate": 2, "failed": 3}


def _status_note(status: str, reason: str, width: int = 34) -> str:
    """A sample panel's note: "degenerate: <reason>" (wrapped, at most two lines), "failed", "capped"."""
    import textwrap

    if status == "ok":
        return ""
    if status == "failed":
        return "failed"
    text = f"{status}: {reason}" if reason else status
    lines = textwrap.wrap(text, width)
    return "\n".join(lines[:2]) + ("..." if len(lines) > 2 else "")


def samples_section(run_dirs: list[Path], df: pd.DataFrame, fig_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("Samples")]
    files = _sample_files(run_dirs)
    cells = cell_status(df)
    # every configuration with saved samples is shown, whatever its status; a configuration whose cells all
    # failed without samples gets an empty panel saying "failed"
    has = cells.groupby("label")["cell_id"].transform(lambda ids: ids.isin(files).any())
    cells = cells[cells["cell_id"].isin(files) | (cells["status"].eq("failed") & ~has)]
    cells = cells.assign(rank=cells["status"].map(_STATUS_RANK).fillna(4))
    drawn = 0
    colors = figures.method_colors(cells["label"])
    n_dims = cells.groupby("task")["dim"].nunique()
    for (task, dim), g in cells.groupby(["task", "dim"], sort=True):
        if dim != 2 and task not in IMAGE_TASKS:
            continue
        picked = g.sort_values(["rank", "steps_done", "layers", "train_seed"], ascending=[True, False, False, True]) \
            .drop_duplicates("label").sort_values("label")
        with_file = picked[picked["cell_id"].isin(files)]
        if with_file.empty:
            continue
        target_task, note = _task_target(run_dirs, with_file["cell_id"].iloc[0])
        shape = getattr(target_task, "image_shape", None)
        if dim != 2 and shape is None:
            side = int(round(math.sqrt(dim)))
            if side * side != dim:
                continue
            shape = (1, side, side)
        samples: dict[str, np.ndarray | None] = {}
        for _, r in picked.iterrows():
            x = np.load(files[r["cell_id"]]) if r["cell_id"] in files else None
            samples[r["label"]] = x if x is None or (x.ndim == 2 and x.shape[1] == dim) else None
        if all(v is None for v in samples.values()):
            continue
        notes = {r["label"]: _status_note(r["status"], r["reason"]) for _, r in picked.iterrows()}
        notes = {k: v for k, v in notes.items() if v}
        target = target_task.test.numpy() if target_task is not None else None
        which = ", ".join(f"{r['label']}: seeds {r['data_seed']}/{r['train_seed']}, L={r['layers']}, "
                          f"{r['steps_done']} steps" + ("" if r["status"] == "ok" else f", {r['status']}")
                          for _, r in picked.iterrows())
        layers = "/".join(str(v) for v in sorted(set(picked["layers"])))
        title = f"{task}, D = {dim}, L = {layers}, {steps_text(picked['steps_done'])} steps"
        stem = f"samples_{task}" + (f"_D{dim}" if n_dims.get(task, 1) > 1 else "")
        if dim == 2:
            bounds = getattr(target_task, "bounds", None)
            path = figures.scatter_2d(target, samples, bounds, colors, f"{title}: model samples",
                                      fig_dir / f"{stem}.png", notes=notes)
            caption = f"{task}: model samples beside the test data ({which}; seeds: data/train)."
        else:
            path = figures.image_grid(target, samples, shape, f"{title}: sample images", fig_dir / f"{stem}.png",
                                      notes=notes)
            caption = f"{task}: sample images beside test images ({which}; seeds: data/train)."
        if notes:
            caption += " Panels of failed, capped or degenerate cells say so in their titles."
        blocks.append(Figure(path, caption + (f" {note}." if note else "")))
        drawn += 1
    if not drawn:
        blocks.append(Para("No 2-D or image task with saved samples in these runs."))
    return blocks
