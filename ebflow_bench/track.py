"""Continuous performance tracking with asv: record the suite (``benchmarks/``) for a commit, publish it, and
compare two recorded commits with regressions flagged.

The usual asv workflow, on this project's ``existing`` environment (the installed working tree; asv cannot
build environments per commit here, so ``asv continuous`` is not available and commits are recorded one at a
time, then compared from their saved results):

1. ``ebflow-bench track`` (:func:`run_track`) records HEAD, from the repository root (``asv.conf.json``):

   a. the machine is described by asv itself: ``asv.machine.Machine.get_defaults()`` (asv's detected os, arch,
      cpu, num_cpu, ram: what ``asv machine --yes`` asks about) is stored under the fixed machine name
      (default ``ebflow-bench-ref``) in asv's machine file. ``asv machine --machine NAME --yes`` alone would
      store only the fields that differ from asv's detection (asv 0.6.6), which left ``machine.json`` with
      the RAM only;
   b. ``asv run --python=same --set-commit-hash <git rev-parse HEAD> --machine NAME [--quick] [--bench REGEX]``:
      the benchmarks run in this interpreter against the installed (editable) working tree; uncommitted
      changes are measured under HEAD's hash (the summary says so). ``--quick`` runs each benchmark once (a
      smoke test whose values are still saved);
   c. ``asv publish`` (HTML into ``results/asv-html``; ``asv preview`` serves it).

   It returns a text summary: where results and HTML went, the fitted step-time exponents of the new results
   (``asv_results.step_exponents``: D at D >= 1024, L at D = 512; fits over fewer than 5 distinct values are
   reported as insufficient) and the quality tracks.

2. ``ebflow-bench track --compare BASE HEAD [--factor 1.1]`` (:func:`compare`) compares two commits already
   recorded on the machine (any git names: ``main``, ``HEAD~3``, hashes) with asv's own comparison
   (``asv.commands.compare.Compare.print_table``, the table ``asv compare BASE HEAD`` prints, with its
   ``+``/``-`` marks), and exits non-zero when a benchmark got worse by more than ``factor`` (and
   significantly, by asv's statistics), as ``asv continuous`` does. Every ``track_*`` benchmark of the suite is
   lower-is-better, so asv's "worse" is a regression for every benchmark. To compare a change against main::

       git checkout main && ebflow-bench track && git checkout my-branch && ebflow-bench track
       ebflow-bench track --compare main my-branch

asv is called as ``python -m asv`` with this interpreter (or imported), so "asv missing" means "not importable
here".
"""

from __future__ import annotations

import importlib.util
import os
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


def describe_machine(machine: str, *, path: str | Path | None = None) -> dict[str, str]:
    """Store asv's own description of this host (``asv.machine.Machine.get_defaults()``: os, arch, cpu,
    num_cpu, ram) under the name ``machine`` in asv's machine file (``~/.asv-machine.json``, or ``path``), which
    ``asv run --machine NAME`` copies into ``results/asv/NAME/machine.json``. Returns the description."""
    from asv.machine import Machine, MachineCollection

    info = {k: str(v) for k, v in Machine.get_defaults().items()}
    info["machine"] = machine
    MachineCollection.save(machine, info, _path=None if path is None else str(path))
    return info


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


DEFAULT_MACHINE = "ebflow-bench-ref"
#: ``--factor`` default of ``track --compare`` (asv's own default for ``asv compare``/``continuous``)
DEFAULT_FACTOR = 1.1


def _check_machine_name(machine: str) -> None:
    if not machine or any(c in machine for c in "/\\ "):
        raise ValueError(f"machine name must be non-empty without spaces or slashes, got {machine!r}")


def _check_setup(root: Path) -> None:
    if importlib.util.find_spec("asv") is None:
        raise FileNotFoundError("asv is not installed in this interpreter (pip install 'asv==0.6.6')")
    if not (root / CONFIG).is_file():
        raise FileNotFoundError(f"no {CONFIG} in {root}: run `ebflow-bench track` from the ebflow-bench checkout")


def compare(base: str, head: str, *, machine: str = DEFAULT_MACHINE, factor: float = DEFAULT_FACTOR,
            split: bool = False, only_changed: bool = False, root: str | Path | None = None) -> tuple[bool, bool]:
    """Compare the saved asv results of commits ``base`` and ``head`` (git names or hashes) on ``machine``
    with asv's own comparison table (printed to stdout, as ``asv compare``); return ``(worsened, improved)``:
    whether some benchmark got worse (or better) by more than ``factor``, asv's significance test permitting.

    Raises ``FileNotFoundError`` (no asv, no config, not a git tree), ``ValueError`` (bad factor or machine
    name) and :class:`TrackError` when a name is not a commit or a commit has no saved results on ``machine``.
    """
    root = Path(root) if root is not None else ROOT
    _check_machine_name(machine)
    if not factor > 1:
        raise ValueError(f"--factor must be > 1 (e.g. 1.1 flags a 10% change), got {factor}")
    _check_setup(root)
    _git_head(root)
    from asv import util
    from asv.commands.compare import Compare
    from asv.config import Config
    from asv.repo import NoSuchNameError, get_repo

    cwd = os.getcwd()
    os.chdir(root)  # asv resolves the config's relative paths against the working directory
    try:
        conf = Config.load(CONFIG)
        repo = get_repo(conf)
        hashes = []
        for name in (base, head):
            try:
                hashes.append(repo.get_hash_from_name(name))
            except NoSuchNameError:
                raise TrackError(f"{name!r} is not a commit of {root}") from None
        _check_comparable(root / RESULTS_DIR, machine, base, head, *hashes)
        try:
            worsened, improved = Compare.print_table(
                conf, hashes[0], hashes[1], factor=factor, split=split, machine=machine,
                only_changed=only_changed, sort="default", use_stats=True,
                commit_names={hashes[0]: base, hashes[1]: head})
        except util.UserError as e:
            raise TrackError(f"asv compare {base} {head} on machine {machine!r}: {e} (record both commits with "
                             f"`ebflow-bench track --machine {machine}` first)") from e
    finally:
        os.chdir(cwd)
    return bool(worsened), bool(improved)


def _recorded_cpu(results: Path, machine: str, commit: str) -> set[str]:
    """The CPU names in the saved result files of ``commit`` on ``machine`` (asv's ``params.cpu``; empty when
    a file does not say)."""
    import json

    cpus = set()
    for f in (results / machine).glob(f"{commit[:8]}*-*.json"):
        try:
            cpu = json.loads(f.read_text()).get("params", {}).get("cpu")
        except (OSError, ValueError):
            continue
        if cpu:
            cpus.add(str(cpu))
    return cpus


def _check_comparable(results: Path, machine: str, base: str, head: str, base_hash: str, head_hash: str) -> None:
    """Refuse a comparison that would compare nothing: two commits recorded on different CPUs (the same machine
    name on another host), or with no benchmark measured in the same environment at both (e.g. asv's
    environment named after ``python`` at one and ``python3`` at the other): asv prints ``n/a`` rows then and
    finds no change, which would read as "no regression"."""
    from .asv_results import load_asv_results

    cpu_base, cpu_head = _recorded_cpu(results, machine, base_hash), _recorded_cpu(results, machine, head_hash)
    if cpu_base and cpu_head and cpu_base != cpu_head:
        raise TrackError(f"{base} was recorded on CPU {', '.join(sorted(cpu_base))} and {head} on "
                         f"{', '.join(sorted(cpu_head))} (machine {machine!r}): their times are not comparable; "
                         f"record both on one CPU (`ebflow-bench track` at each commit)")
    try:
        df = load_asv_results(results)
    except (FileNotFoundError, ValueError):
        return  # asv's own comparison reports what is missing
    df = df[(df["machine"] == machine) & df["value"].notna()]
    key = ["benchmark", "params", "env"]
    both = df[df["commit"] == base_hash][key].drop_duplicates().merge(
        df[df["commit"] == head_hash][key].drop_duplicates(), on=key)
    if both.empty and not df[df["commit"].isin([base_hash, head_hash])].empty:
        envs = {c: sorted(df.loc[df["commit"] == h, "env"].unique()) for c, h in ((base, base_hash), (head, head_hash))}
        raise TrackError(f"no benchmark has a value at both {base} and {head} in one environment on machine "
                         f"{machine!r} (environments: {envs}): nothing to compare")


def run_track(machine: str = DEFAULT_MACHINE, quick: bool = False, bench: str | None = None, *,
              root: str | Path | None = None) -> str:
    """Run the asv suite for HEAD on ``machine`` and publish; return a summary (see the module docstring).

    Raises ``FileNotFoundError`` when ``root`` (default: this checkout) is not a git working tree, has no
    ``asv.conf.json``, or asv is not installed; :class:`TrackError` when ``asv machine``/``asv publish`` fail
    or ``asv run`` produced no results for this commit.
    """
    root = Path(root) if root is not None else ROOT
    _check_machine_name(machine)
    _check_setup(root)
    head, dirty = _git_head(root)

    info = describe_machine(machine)
    print(f"+ asv machine {machine}: " + ", ".join(f"{k}={v}" for k, v in info.items() if k != "machine"),
          file=sys.stderr, flush=True)
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
