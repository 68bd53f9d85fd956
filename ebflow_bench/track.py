"""Continuous performance tracking: run the asv suite (``benchmarks/``) for the current commit and publish it.

:func:`run_track` runs, from the repository root (where ``asv.conf.json`` lives):

1. ``asv machine --machine NAME --yes --os .. --arch .. --cpu .. --num_cpu .. --ram ..`` with the host's
   description given explicitly (no interactive questions; the same machine name always gets the same
   description on the same host);
2. ``asv run --python=same --set-commit-hash <git rev-parse HEAD> --machine NAME [--quick] [--bench REGEX]``:
   ``environment_type`` is ``existing``, so the benchmarks run in this interpreter against the installed
   (editable) working tree; uncommitted changes are measured under HEAD's hash (the summary says so);
3. ``asv publish`` (HTML into ``results/asv-html``).

It returns a text summary: where results and HTML went, the fitted step-time exponents of the new results
(:func:`ebflow_bench.scaling.fit_exponents`: D at D >= 1024, L at D = 512) and the quality tracks. asv runs
with the real stdout/stderr, so its progress is visible. asv is called as ``python -m asv`` with this
interpreter, so "asv missing" means "not importable here".
"""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
CONFIG = "asv.conf.json"
RESULTS_DIR = "results/asv"
HTML_DIR = "results/asv-html"


class TrackError(RuntimeError):
    """An asv step failed (the message has its command and exit status)."""


def _git_head(root: Path) -> tuple[str, bool]:
    """(HEAD commit, tree has uncommitted changes to tracked files); FileNotFoundError outside a git repo."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True,
                             timeout=30)
    except OSError as e:
        raise FileNotFoundError(f"ebflow-bench track needs git, which cannot be run: {e}") from e
    if top.returncode != 0:
        raise FileNotFoundError(f"{root} is not a git working tree: asv needs a commit to record results "
                                f"under ({top.stderr.strip()})")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30)
    if head.returncode != 0:
        raise FileNotFoundError(f"{root} has no commit yet (git rev-parse HEAD failed: {head.stderr.strip()})")
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                           capture_output=True, text=True, timeout=30).stdout.strip()
    return head.stdout.strip(), bool(dirty)


def machine_info() -> dict[str, str]:
    """This host's description for ``asv machine`` (os, arch, cpu, num_cpu, ram)."""
    cpu = platform.processor() or "unknown"
    ram = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{round(int(line.split()[1]) / 2**20)}GB"
                break
    except OSError:
        pass
    return {"os": f"{platform.system()} {platform.release()}", "arch": platform.machine() or "unknown",
            "cpu": cpu, "num_cpu": str(os.cpu_count() or 1), "ram": ram}


def _asv(args: list[str], root: Path, *, check: bool = True) -> int:
    cmd = [sys.executable, "-m", "asv", *args]
    print("+ asv " + " ".join(args), file=sys.stderr, flush=True)
    rc = subprocess.run(cmd, cwd=root).returncode
    if check and rc != 0:
        raise TrackError(f"`asv {' '.join(args)}` exited with status {rc}")
    return rc


def _fits(df: pd.DataFrame) -> list[str]:
    from .asv_results import step_exponents

    lines = []
    for (sweep, x, rng), g in step_exponents(df).groupby(["sweep", "x", "range"], sort=False):
        lines.append(f"{sweep}: exponent in {'D' if x == 'dim' else 'L'} ({rng}), 95% CI")
        for _, r in g.iterrows():
            lines.append(f"  {r['method']:<14} not fitted: {r['error']}" if r["error"] else
                         f"  {r['method']:<14} {r['slope']:.2f}  [{r['ci_low']:.2f}, {r['ci_high']:.2f}]  n={r['n']}")
    return lines


def _tracks(df: pd.DataFrame) -> list[str]:
    q = df[df["benchmark"].str.contains(".track_", regex=False)]
    if q.empty:
        return []
    lines = ["quality tracks:"]
    for _, r in q.iterrows():
        lines.append(f"  {r['metric']:<20} {r['method']!s:<14} {r['task']!s:<16} {r['value']:.4g} {r['unit']}")
    return lines


def run_track(machine: str = "ebflow-bench-ref", quick: bool = False, bench: str | None = None, *,
              root: str | Path | None = None) -> str:
    """Run the asv suite for HEAD on ``machine`` and publish; return a summary (see the module docstring).

    Raises ``FileNotFoundError`` when ``root`` (default: this checkout) is not a git working tree, has no
    ``asv.conf.json``, or asv is not installed; :class:`TrackError` when ``asv machine``/``asv publish`` fail
    or ``asv run`` produced no results for this commit.
    """
    root = Path(root) if root is not None else ROOT
    if not machine or any(c in machine for c in "/\\ "):
        raise ValueError(f"machine name must be non-empty without spaces or slashes, got {machine!r}")
    if importlib.util.find_spec("asv") is None:
        raise FileNotFoundError("asv is not installed in this interpreter (pip install 'asv==0.6.6')")
    if not (root / CONFIG).is_file():
        raise FileNotFoundError(f"no {CONFIG} in {root}: run `ebflow-bench track` from the ebflow-bench checkout")
    head, dirty = _git_head(root)

    info = machine_info()
    _asv(["machine", "--machine", machine, "--yes", *[a for k, v in info.items() for a in (f"--{k}", v)]], root)
    run_args = ["run", "--python=same", "--set-commit-hash", head, "--machine", machine, "--show-stderr"]
    if quick:
        run_args.append("--quick")
    if bench:
        run_args += ["--bench", bench]
    rc = _asv(run_args, root, check=False)
    _asv(["publish"], root)

    from .asv_results import load_asv_results

    results = root / RESULTS_DIR
    try:
        df = load_asv_results(results)
    except (FileNotFoundError, ValueError) as e:
        raise TrackError(f"asv run (status {rc}) left no readable results in {results}: {e}") from e
    df = df[(df["machine"] == machine) & (df["commit"] == head)]
    if df.empty:
        raise TrackError(f"asv run (status {rc}) recorded no results for {head[:8]} on machine {machine!r}")
    n_failed = int(df["value"].isna().sum())
    lines = [f"asv results for {head[:8]}{' (uncommitted changes measured under this hash)' if dirty else ''} "
             f"on machine {machine!r}: {results}/{machine}/",
             f"HTML: {root / HTML_DIR}/index.html",
             f"{len(df)} values, {n_failed} failed or skipped" + (f"; asv run exited with status {rc}" if rc else ""),
             *_fits(df), *_tracks(df)]
    return "\n".join(lines)
