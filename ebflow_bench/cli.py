"""The ``ebflow-bench`` command line: ``list | run | tune | report | reference | track | steptime``.

``report RUN_DIR ...`` writes to ``--out`` or, by default, to ``<first run dir>/report/`` (inside the run
folder, never over the committed reference results in ``results/``). ``reference`` is the maintainer command
that regenerates the committed reference results: it runs a preset into ``runs/<preset>`` (resuming what is
there) and writes its report, ``claims.csv`` and ``results.parquet`` to ``results/<preset>/``.

Every subcommand imports what it needs lazily, so each works as soon as its own modules exist.

Exit status (:data:`EXIT_OK` ...; README "Exit codes"):

- 0: done, every cell ``ok``;
- 1: an error of the environment after the input was accepted (e.g. the disk filled up), one line on stderr;
- 2: bad input, refused before any work: unknown names, impossible dims or hyperparameters, an architecture
  that does not fit the task, a cell whose estimated peak memory exceeds the memory available, an unusable run
  folder (a file, not writable, not empty without ``--resume``, in use by another run), an unreachable
  scheduler, mismatched versions on the cluster; argparse errors too. One ``error: ...`` line, no traceback;
- 3: the run finished but at least one cell ``failed`` (one line on stderr says how many, even with ``--quiet``);
- 4: no cell failed but at least one is ``degenerate`` (finished with a result flagged unusable) or ``capped``
  (stopped by the safety limit ``time_cap_s`` before its step budget);
- 130: interrupted (Ctrl-C); finished cells are kept, ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence


EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_CELLS_FAILED, EXIT_DEGENERATE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class _BadInput(Exception):
    """A user error: printed without a traceback, exit status 2."""


def run_exit_code(cell_status: Sequence[str]) -> int:
    """The exit status of a finished run from its cells' statuses (one entry per cell)."""
    statuses = set(cell_status)
    if "failed" in statuses:
        return EXIT_CELLS_FAILED
    if statuses & {"degenerate", "capped"}:
        return EXIT_DEGENERATE
    return EXIT_OK


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _check_device(name: str) -> None:
    """Refuse a device string torch cannot parse, or CUDA where there is none (bad input, exit 2)."""
    import torch

    if name == "auto":
        return
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise _BadInput(f"bad device {name!r}: {e}; expected cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise _BadInput(f"device {name!r} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise _BadInput(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type not in ("cpu", "cuda"):
        raise _BadInput(f"device {name!r} is not supported; expected cpu, cuda, cuda:N or auto")


# ------------------------------------------------------------------------------------------- commands


def _describe_method(cls: type) -> list[str]:
    """``list METHOD``: a method's identity, docstring summary, declared hyperparameters and tune grid."""
    from .adapters import describe_hparam

    doc = (cls.__doc__ or "").strip().splitlines()
    out = [f"{cls.name}: family={cls.family} objective={cls.objective}"]
    if doc:
        out.append(f"  {doc[0]}")
    out.append("hyperparameters (matrix: [hparams.NAME] or [block.hparams.NAME]):" if cls.hparam_spec
               else "hyperparameters: none")
    rows = [(k, describe_hparam(h)) for k, h in cls.hparam_spec.items()]
    for name, d in rows:
        out.append(f"  {name:<18} {d['type']:<6} default {d['default']:<10} {d['allowed']}")
        if d["doc"]:
            out.append(f"  {'':<18} {d['doc']}")
    grid = getattr(cls, "tune_grid", {}) or {}
    out.append("tune grid: " + ("; ".join(f"{k} in {list(v)}" for k, v in grid.items()) if grid else "none"))
    return out


def cmd_list(args: argparse.Namespace) -> int:
    from .matrix import adapter_registry, available_presets, load_matrix
    from .tasks import available_tasks, task_dim

    reg = adapter_registry()
    if args.names:
        unknown = [n for n in args.names if n not in reg]
        if unknown:
            raise _BadInput(f"unknown method(s) {unknown}; known: {', '.join(sorted(reg))}")
        print("\n\n".join("\n".join(_describe_method(reg[n])) for n in args.names))
        return 0
    print("methods:")
    for name in sorted(reg):
        print(f"  {name:<22} family={reg[name].family:<12} objective={reg[name].objective}")
    if not reg:
        print("  (none registered)")
    print("tasks:")
    for name in available_tasks():
        d = task_dim(name)
        print(f"  {name:<22} D={'any' if d is None else d}")
    print("metrics:")
    try:
        from . import metrics

        for m in metrics.declared():
            best = {"lower": "lower is better", "higher": "higher is better", "zero": "best at 0"}[m.direction]
            print(f"  {m.name:<26} {m.label} [{m.unit}], {best}, {m.group}, computed by {m.computed_by}")
    except ImportError as e:
        print(f"  (metrics module unavailable: {e})")
    print("presets:")
    for name in available_presets():
        try:
            m = load_matrix(name)
            print(f"  {name:<22} {len(m.methods)} methods x {len(m.tasks)} tasks, {len(m.blocks)} block(s)")
        except ValueError as e:
            print(f"  {name:<22} (unreadable: {e})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .matrix import check_static, load_matrix

    if bool(args.preset) == bool(args.matrix):
        raise _BadInput("give exactly one of --preset NAME or --matrix FILE")
    if args.workers is not None and args.workers < 1:
        raise _BadInput(f"--workers must be >= 1, got {args.workers}")
    if args.workers is not None and args.workers > 1 and args.scheduler:
        raise _BadInput("give --workers N (local cluster) or --scheduler ADDR (existing cluster), not both")
    matrix = load_matrix(args.preset or args.matrix)
    if args.device:
        _check_device(args.device)
        matrix = matrix.with_device(args.device)
    check_static(matrix)  # names, sizes and the memory pre-flight before the runner (pandas, Dask) is imported
    from .rundir import resolve_run_dir
    from .runner import run_matrix

    out = resolve_run_dir(args.out) if args.out else Path("runs") / (args.preset or matrix.name)
    args.out_resolved = out
    df = run_matrix(matrix, out, resume=args.resume, workers=args.workers, scheduler=args.scheduler,
                    progress=not args.quiet)
    per_cell = df.drop_duplicates("cell_id")["cell_status"].tolist() if len(df) else []
    failed = per_cell.count("failed")
    extra = "".join(f", {per_cell.count(k)} {k}" for k in ("capped", "degenerate") if per_cell.count(k))
    summary = f"{len(per_cell)} cells ({failed} failed{extra})"
    code = run_exit_code(per_cell)
    if not args.quiet:
        print(f"{summary} -> {out / 'results.parquet'}")
    elif code != EXIT_OK:
        print(f"{summary} -> {out / 'results.parquet'}", file=sys.stderr)
    return code


def cmd_report(args: argparse.Namespace) -> int:
    missing = [d for d in args.run_dirs if not Path(d).is_dir()]
    if missing:
        raise _BadInput(f"run director{'y' if len(missing) == 1 else 'ies'} not found: {', '.join(missing)}")
    if args.asv_results and not Path(args.asv_results).is_dir():
        raise _BadInput(f"--asv-results {args.asv_results!r} is not a directory")
    if args.previous_claims and not Path(args.previous_claims).is_file():
        raise _BadInput(f"--previous-claims {args.previous_claims!r} is not a file")
    from .report import build_report

    out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "report"
    try:
        path = build_report([Path(d) for d in args.run_dirs], out,
                            asv_results=Path(args.asv_results) if args.asv_results else None,
                            command=" ".join(["ebflow-bench", *sys.argv[1:]]),
                            # several folders: the combined table (each cell once), so others can report beside it
                            write_table=len(args.run_dirs) > 1, previous_claims=args.previous_claims)
    except ValueError as e:  # e.g. no finished cell in the folders
        raise _BadInput(str(e)) from None
    print(path)
    return 0


def cmd_reference(args: argparse.Namespace) -> int:
    """Regenerate the committed reference results of a preset (maintainers): run it into ``runs/<preset>``
    (resuming), optionally record the current commit with asv (``--asv``: ``ebflow-bench track``), then write the
    report with the asv history of ``results/asv`` (when present) to ``results/<preset>/`` and copy the run's
    ``results.parquet`` beside it."""
    import shutil

    from .matrix import load_matrix
    from .runner import run_matrix

    run_dir = Path(args.run_dir or Path("runs") / args.preset)
    out = Path(args.out or Path("results") / args.preset)
    matrix = load_matrix(args.preset)
    resume = run_dir.is_dir() and any(run_dir.iterdir())
    args.out_resolved = run_dir
    df = run_matrix(matrix, run_dir, resume=resume, workers=args.workers, progress=not args.quiet)
    asv_dir = Path("results/asv")
    if args.asv:
        from .track import TrackError, run_track

        try:
            print(run_track())
        except (TrackError, ValueError) as e:
            raise _BadInput(str(e)) from e
    from .report import build_report

    command = " ".join(["ebflow-bench", *sys.argv[1:]]) if sys.argv[1:2] == ["reference"] else \
        f"ebflow-bench reference --preset {args.preset}" + (" --asv" if args.asv else "")
    path = build_report([run_dir], out, asv_results=asv_dir if asv_dir.is_dir() else None, command=command)
    shutil.copyfile(run_dir / "results.parquet", out / "results.parquet")  # a run others can report beside
    if (run_dir / "meta.json").is_file():  # its provenance (commit, versions, commands) travels with it
        shutil.copyfile(run_dir / "meta.json", out / "meta.json")
    print(path)
    per_cell = df.drop_duplicates("cell_id")["cell_status"].tolist() if len(df) else []
    return run_exit_code(per_cell)


def cmd_track(args: argparse.Namespace) -> int:
    from .track import TrackError, compare, run_track

    try:
        if args.compare:
            if args.quick or args.bench:
                raise _BadInput("--compare reads saved results: it takes no --quick or --bench")
            base, head = args.compare
            worsened, improved = compare(base, head, machine=args.machine, factor=args.factor,
                                         split=args.split, only_changed=args.only_changed)
            print(f"{'REGRESSION' if worsened else 'no regression'}: {head} against {base} on machine "
                  f"{args.machine!r} (factor {args.factor})" + ("; some benchmarks improved" if improved else ""))
            return 1 if worsened else 0
        print(run_track(machine=args.machine, quick=args.quick, bench=args.bench))
    except (TrackError, ValueError) as e:
        raise _BadInput(str(e)) from e
    return 0


def cmd_steptime(args: argparse.Namespace) -> int:
    from .matrix import adapter_registry

    reg = adapter_registry()
    unknown = [m for m in args.methods if m not in reg]
    if unknown:
        raise _BadInput(f"unknown method(s) {unknown}; known: {', '.join(sorted(reg))}")
    bad = [d for d in args.dims if d < 1]
    if bad or not args.dims or args.layers < 1:
        raise _BadInput(f"dims and --layers must be >= 1 (got dims {args.dims}, layers {args.layers})")
    if args.repeats < 1 or args.batch_size < 1:
        raise _BadInput(f"--repeats and --batch-size must be >= 1 (got {args.repeats}, {args.batch_size})")
    if not args.methods:
        raise _BadInput("--methods is empty")
    device = args.device or "cpu"
    _check_device(device)
    if args.floor:
        return _steptime_floor(args, device)
    from .steptime import MIN_BLOCK_S, step_times

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"step time (s): median of {args.repeats} interleaved blocks of >= {MIN_BLOCK_S:g} s, (IQR) their "
          f"interquartile range; L={args.layers}, batch={args.batch_size}, device={device}")
    results = {d: step_times(args.methods, d, args.layers, blocks=args.repeats, batch_size=args.batch_size,
                             device=device) for d in args.dims}
    width = 22
    print(f"{'method':<22}" + "".join(f"{'D=' + str(d):>{width}}" for d in args.dims))
    for m in args.methods:
        cells = []
        for d in args.dims:
            t = results[d][m]
            if isinstance(t, Exception):  # an impossible size is shown, the table goes on
                cells.append(f"{'n/a':>{width}}")
                print(f"  {m} at D={d}: {type(t).__name__}: {t}", file=sys.stderr)
            else:
                cells.append(f"{f'{t.median:.4g} ({t.iqr:.2g})':>{width}}")
        print(f"{m:<22}" + "".join(cells))
    return 0


def _steptime_floor(args: argparse.Namespace, device: str) -> int:
    """``steptime --floor``: every method's step beside the plain forward+backward and the GEMM floors, timed
    interleaved per D (median of ``--repeats`` blocks, with their IQR), printed as the multiples of
    ``ebflow_bench.stepcost``."""
    import torch

    from .stepcost import crossover, step_multiples, to_markdown
    from .steptime import floor_table

    if args.threads:
        torch.set_num_threads(args.threads)
    table = floor_table(args.methods, args.dims, args.layers, repeats=args.repeats, batch_size=args.batch_size,
                        device=device)
    print(f"step cost, L={args.layers}, batch={args.batch_size}, device={device}, threads="
          f"{torch.get_num_threads()}, median of {args.repeats} interleaved blocks of >= 0.05 s")
    print("raw times (s):")
    print(to_markdown(table.pivot(index="dim", columns="method", values="value").reset_index(), digits=4))
    print("spread (s): interquartile range of the blocks")
    print(to_markdown(table.pivot(index="dim", columns="method", values="iqr").reset_index(), digits=2))
    print("multiples (x_plain: step / plain forward+backward; x_floor: step / its GEMM floor; "
          "vs_ml: ML step / step):")
    print(to_markdown(step_multiples(table, layers=args.layers)))
    if "ebflow-ml" in args.methods and len(args.dims) > 1:
        print("crossover D (score matching cheaper than ML above it):")
        print(to_markdown(crossover(table, layers=args.layers)))
    return 0


def _assignments(items: list[str], flag: str) -> dict[str, dict]:
    """``["NAME.KEY=VALUE", ...]`` -> ``{NAME: {KEY: VALUE}}``; VALUE parsed as JSON (``0.375``, ``true``,
    ``null``), else kept as a string. NAME may contain dots only before the last one (``KEY`` has none)."""
    import json

    out: dict[str, dict] = {}
    for item in items or []:
        left, eq, value = item.partition("=")
        name, dot, key = left.rpartition(".")
        if not eq or not dot or not name or not key:
            raise _BadInput(f"{flag} {item!r}: expected NAME.KEY=VALUE")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        out.setdefault(name, {})[key] = parsed
    return out


def cmd_tune(args: argparse.Namespace) -> int:
    from .tune import tune

    if args.workers is not None and args.workers < 1:
        raise _BadInput(f"--workers must be >= 1, got {args.workers}")
    if args.steps < 1 or args.layers < 1:
        raise _BadInput(f"--steps and --layers must be >= 1 (got {args.steps}, {args.layers})")
    if not args.seeds or any(s < 0 for s in args.seeds):
        raise _BadInput(f"--seeds must be integers >= 0, got {args.seeds}")
    if not args.methods or not args.tasks:
        raise _BadInput("give --methods and --tasks (comma-separated)")
    device = args.device or "cpu"
    _check_device(device)
    out = Path(args.out)
    args.out_resolved = out / "runs"
    result = tune(args.methods, args.tasks, out, steps=args.steps, seeds=args.seeds, layers=args.layers,
                  validation=args.validation, workers=args.workers, device=device,
                  task_options=_assignments(args.task_option, "--task-option"),
                  hparams=_assignments(args.hparam, "--hparam"), resume=args.resume, progress=not args.quiet,
                  command=" ".join(["ebflow-bench", *sys.argv[1:]]))
    if not args.quiet:
        for (m, t), c in result.chosen().items():
            print(f"{m:<20} {t:<16} {', '.join(f'{k}={v}' for k, v in c.values.items())}"
                  f"{'  (default)' if c.is_default else ''}")
        print(f"-> {out / 'tuning.md'}, {out / 'tuned.toml'}, {out / 'tuning.csv'}")
    return 0


# --------------------------------------------------------------------------------------------- parser

_WORKERS_HELP = ("local Dask worker processes (default: as many as the machine's cores hold at the matrix's "
                 "eval.threads torch threads per cell, at most one per cell to run; 1: serial)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ebflow-bench",
                                description="Benchmark determinant-free training of normalizing flows.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="methods, tasks, metrics and presets; `list METHOD` a method's hyperparameters")
    s.add_argument("names", nargs="*", metavar="METHOD",
                   help="print these methods' declared hyperparameters (type, default, range or choices, doc)")
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("run", help="run a benchmark matrix into a run directory")
    s.add_argument("--preset", help="named matrix: smoke, default, scaling, paper, reproduce")
    s.add_argument("--matrix", help="matrix file (.toml, .yaml)")
    s.add_argument("--out", help="run directory (default runs/<preset or matrix name>)")
    s.add_argument("--resume", action="store_true", help="continue a run: skip cells already recorded")
    s.add_argument("--workers", type=int, default=None,
                   help=_WORKERS_HELP)
    s.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://host:8786")
    s.add_argument("--device", help="cpu, cuda, cuda:1 or auto (overrides the matrix's eval.device)")
    s.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser(
        "tune", help="choose hyperparameters on a validation split with an equal grid budget per method",
        description="Run every point of each method's tune_grid (declared on its adapter) for --steps steps on "
                    "each task's training set minus a validation split, score on the validation split (NLL, else "
                    "sliced W2), never choose a failed or degenerate candidate, and write tuning.csv, tuned.toml "
                    "and tuning.md into --out (the candidate cells in --out/runs).")
    s.add_argument("--methods", type=_csv, required=True, help="comma-separated method names")
    s.add_argument("--tasks", type=_csv, required=True, help="comma-separated task names (fixed-D tasks)")
    s.add_argument("--steps", type=int, default=500, help="training steps of every candidate (default 500)")
    s.add_argument("--seeds", type=_ints, default=[0], help="seeds (data and training), scores averaged (default 0)")
    s.add_argument("--layers", type=int, default=2, help="model depth of every candidate (default 2)")
    s.add_argument("--validation", type=float, default=0.1,
                   help="held-out fraction of the training set used for selection (default 0.1)")
    s.add_argument("--task-option", action="append", metavar="TASK.KEY=VALUE",
                   help="task option, e.g. checkerboard.smooth=0.375 (repeatable)")
    s.add_argument("--hparam", action="append", metavar="METHOD.KEY=VALUE",
                   help="fixed hyperparameter under the grid, e.g. ebflow-ml.arch=toy2d (repeatable)")
    s.add_argument("--out", default="results/tuning", help="output folder (default results/tuning)")
    s.add_argument("--workers", type=int, default=None,
                   help=_WORKERS_HELP)
    s.add_argument("--device", help="cpu (default), cuda, cuda:N or auto")
    s.add_argument("--resume", action="store_true", help="continue: skip candidate cells already recorded")
    s.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    s.set_defaults(fn=cmd_tune)

    s = sub.add_parser("report", help="build report.md/.html and figures from run directories")
    s.add_argument("run_dirs", nargs="+")
    s.add_argument("--out", help="output directory (default: RUN_DIR/report/ of the first run directory)")
    s.add_argument("--asv-results", help="asv results directory to include (e.g. results/asv)")
    s.add_argument("--previous-claims", help="an earlier claims.csv: the Claims section lists the verdicts "
                   "changed since (default: the claims.csv already in --out, read before it is overwritten)")
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser(
        "reference", help="maintainers: regenerate the committed reference results of a preset in results/<preset>/",
        description="Run --preset into runs/<preset> (resuming what is there), with --asv first record the "
                    "current commit with asv (ebflow-bench track), then write report.md/.html, figures, tables, "
                    "claims.csv and a copy of results.parquet to results/<preset>/ (asv history from results/asv "
                    "when present).")
    s.add_argument("--preset", default="default", help="preset to run (default: default; also reproduce)")
    s.add_argument("--run-dir", help="run directory (default runs/<preset>)")
    s.add_argument("--out", help="report directory (default results/<preset>)")
    s.add_argument("--asv", action="store_true", help="record the current commit with asv first (~10 min)")
    s.add_argument("--workers", type=int, default=None,
                   help=_WORKERS_HELP)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=cmd_reference)

    s = sub.add_parser(
        "track", help="asv: record the current commit (asv run + publish), or compare two recorded commits",
        description="Without --compare: describe this machine to asv, `asv run --python=same --set-commit-hash "
                    "HEAD`, `asv publish`, and print fitted step-time exponents. With --compare BASE HEAD: asv's "
                    "comparison table of two commits already recorded on --machine (as `asv compare`); exit "
                    "status 1 when a benchmark regressed by more than --factor, as `asv continuous` (which the "
                    "existing environment cannot run). Workflow: `git checkout main && ebflow-bench track`, "
                    "`git checkout BRANCH && ebflow-bench track`, `ebflow-bench track --compare main BRANCH`.")
    s.add_argument("--machine", default="ebflow-bench-ref", help="asv machine name (default ebflow-bench-ref)")
    s.add_argument("--quick", action="store_true", help="each benchmark once (values still saved)")
    s.add_argument("--bench", help="regular expression selecting benchmarks")
    s.add_argument("--compare", nargs=2, metavar=("BASE", "HEAD"),
                   help="compare the saved results of two commits (git names or hashes) instead of running")
    s.add_argument("--factor", type=float, default=1.1,
                   help="with --compare: ratio beyond which a change counts (default 1.1, asv's)")
    s.add_argument("--split", action="store_true", help="with --compare: split the table into worse/better/same")
    s.add_argument("--only-changed", action="store_true", help="with --compare: show changed benchmarks only")
    s.set_defaults(fn=cmd_track)

    s = sub.add_parser("steptime", help="training step time of methods over D at a fixed depth (median of "
                                        "interleaved blocks, with its IQR)")
    s.add_argument("--methods", type=_csv, default=["ebflow-ml", "ebflow-dsm", "ebflow-ssm"])
    s.add_argument("--dims", type=_ints, default=[128, 256, 512, 1024, 2048])
    s.add_argument("--layers", type=int, default=2)
    s.add_argument("--repeats", type=int, default=7,
                   help="timed blocks per method (default 7; each block repeats the step for >= 0.05 s); with "
                        "--floor: interleaved rounds")
    s.add_argument("--batch-size", type=int, default=100)
    s.add_argument("--device")
    s.add_argument("--floor", action="store_true",
                   help="also time a plain forward+backward and each objective's GEMM floor, interleaved, and "
                        "print each step as a multiple of both (median of --repeats)")
    s.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's; asv pins 2)")
    s.set_defaults(fn=cmd_steptime)
    return p


def _bad_input_errors() -> tuple[type[BaseException], ...]:
    """Exceptions shown as one ``error:`` line with exit status 2 (evaluated when an error propagates, so that
    the Dask-dependent cluster module is only imported by runs that use it)."""
    from .matrix import MatrixError
    from .preflight import ResourceError
    from .rundir import RunDirError

    out: tuple[type[BaseException], ...] = (_BadInput, MatrixError, ResourceError, RunDirError, FileNotFoundError)
    cluster = sys.modules.get(f"{__package__}.cluster")
    return out + ((cluster.ClusterError,) if cluster is not None else ())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for key in ("out", "matrix", "asv_results", "run_dir"):  # a quoted `--out=~/x` reaches us unexpanded
        if getattr(args, key, None):
            setattr(args, key, os.path.expanduser(getattr(args, key)))
    if getattr(args, "run_dirs", None):
        args.run_dirs = [os.path.expanduser(d) for d in args.run_dirs]
    formatted = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        return args.fn(args)
    except _bad_input_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        where = getattr(args, "out_resolved", None)
        hint = f"; finished cells are kept in {where}: resume with --resume" if where else \
            ("; resume with --resume" if args.command == "run" else "")
        print(f"\ninterrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        warnings.formatwarning = formatted


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings of a command (a skipped task, a damaged record, a stale lock taken over) as one line each."""
    return f"warning: {message}\n"


if __name__ == "__main__":
    sys.exit(main())
