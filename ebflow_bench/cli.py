"""The ``ebflow-bench`` command line: ``list | run | report | track | steptime``.

Every subcommand imports what it needs lazily, so each works as soon as its own modules exist. Bad input
(unknown names, impossible dims, an existing run directory, missing files) prints ``error: ...`` to stderr and
exits with status 2; argparse errors exit with 2 as well.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


class _BadInput(Exception):
    """A user error: printed without a traceback, exit status 2."""


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


# ------------------------------------------------------------------------------------------- commands


def cmd_list(args: argparse.Namespace) -> int:
    from .matrix import adapter_registry, available_presets, load_matrix
    from .tasks import available_tasks, task_dim

    reg = adapter_registry()
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
        from .runner import RUNNER_METRICS

        for name in sorted(set(metrics.available()) | set(RUNNER_METRICS)):
            print(f"  {name}")
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
    from .matrix import load_matrix
    from .runner import run_matrix

    if bool(args.preset) == bool(args.matrix):
        raise _BadInput("give exactly one of --preset NAME or --matrix FILE")
    if args.workers < 1:
        raise _BadInput(f"--workers must be >= 1, got {args.workers}")
    if args.workers > 1 and args.scheduler:
        raise _BadInput("give --workers N (local cluster) or --scheduler ADDR (existing cluster), not both")
    matrix = load_matrix(args.preset or args.matrix)
    if args.device:
        matrix = matrix.with_device(args.device)
    out = Path(args.out) if args.out else Path("runs") / (args.preset or matrix.name)
    df = run_matrix(matrix, out, resume=args.resume, workers=args.workers, scheduler=args.scheduler,
                    progress=not args.quiet)
    n_cells = df["cell_id"].nunique() if len(df) else 0
    failed = df.loc[df["status"] == "failed", "cell_id"].nunique() if len(df) else 0
    if not args.quiet:
        print(f"{n_cells} cells ({failed} failed) -> {out / 'results.parquet'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    missing = [d for d in args.run_dirs if not Path(d).is_dir()]
    if missing:
        raise _BadInput(f"run director{'y' if len(missing) == 1 else 'ies'} not found: {', '.join(missing)}")
    if args.asv_results and not Path(args.asv_results).is_dir():
        raise _BadInput(f"--asv-results {args.asv_results!r} is not a directory")
    from .report import build_report

    path = build_report([Path(d) for d in args.run_dirs], Path(args.out),
                        asv_results=Path(args.asv_results) if args.asv_results else None,
                        command=" ".join(["ebflow-bench", *sys.argv[1:]]))
    print(path)
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from .track import run_track

    print(run_track(machine=args.machine, quick=args.quick, bench=args.bench))
    return 0


def cmd_steptime(args: argparse.Namespace) -> int:
    from .matrix import adapter_registry

    reg = adapter_registry()
    unknown = [m for m in args.methods if m not in reg]
    if unknown:
        raise _BadInput(f"unknown method(s) {unknown}; known: {', '.join(sorted(reg))}")
    bad = [d for d in args.dims if d < 1]
    if bad or args.layers < 1:
        raise _BadInput(f"dims and --layers must be >= 1 (got dims {args.dims}, layers {args.layers})")
    from .steptime import step_time

    device = args.device or "cpu"
    if args.floor:
        return _steptime_floor(args, device)
    print(f"mean step time (s), L={args.layers}, batch={args.batch_size}, device={device}")
    print(f"{'method':<22}" + "".join(f"{'D=' + str(d):>12}" for d in args.dims))
    for m in args.methods:
        cells = []
        for d in args.dims:
            try:
                cells.append(f"{step_time(m, d, args.layers, repeats=args.repeats, batch_size=args.batch_size, device=device):>12.4g}")
            except Exception as e:  # noqa: BLE001  (an impossible size is shown, the table goes on)
                cells.append(f"{'n/a':>12}")
                print(f"  {m} at D={d}: {type(e).__name__}: {e}", file=sys.stderr)
        print(f"{m:<22}" + "".join(cells))
    return 0


def _steptime_floor(args: argparse.Namespace, device: str) -> int:
    """``steptime --floor``: every method's step beside the plain forward+backward and the GEMM floors, timed
    interleaved per D (median of ``--repeats``), printed as the multiples of ``ebflow_bench.stepcost``."""
    import torch

    from .stepcost import crossover, step_multiples, to_markdown
    from .steptime import floor_table

    if args.threads:
        torch.set_num_threads(args.threads)
    table = floor_table(args.methods, args.dims, args.layers, repeats=args.repeats, batch_size=args.batch_size,
                        device=device)
    print(f"step cost, L={args.layers}, batch={args.batch_size}, device={device}, threads="
          f"{torch.get_num_threads()}, median of {args.repeats} interleaved rounds")
    print("raw times (s):")
    print(to_markdown(table.pivot(index="dim", columns="method", values="value").reset_index(), digits=4))
    print("multiples (x_plain: step / plain forward+backward; x_floor: step / its GEMM floor; "
          "vs_ml: ML step / step):")
    print(to_markdown(step_multiples(table, layers=args.layers)))
    if "ebflow-ml" in args.methods and len(args.dims) > 1:
        print("crossover D (score matching cheaper than ML above it):")
        print(to_markdown(crossover(table, layers=args.layers)))
    return 0


# --------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ebflow-bench",
                                description="Benchmark determinant-free training of normalizing flows.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="methods, tasks, metrics and presets")
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("run", help="run a benchmark matrix into a run directory")
    s.add_argument("--preset", help="named matrix: smoke, default, scaling, paper")
    s.add_argument("--matrix", help="matrix file (.toml, .yaml)")
    s.add_argument("--out", help="run directory (default runs/<preset or matrix name>)")
    s.add_argument("--resume", action="store_true", help="continue a run: skip cells already recorded")
    s.add_argument("--workers", type=int, default=1, help="local Dask worker processes (default 1: serial)")
    s.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://host:8786")
    s.add_argument("--device", help="cpu, cuda, cuda:1 or auto (overrides the matrix's eval.device)")
    s.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("report", help="build report.md/.html and figures from run directories")
    s.add_argument("run_dirs", nargs="+")
    s.add_argument("--out", default="results", help="output directory (default results/)")
    s.add_argument("--asv-results", help="asv results directory to include")
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("track", help="asv run for the current commit, then asv publish")
    s.add_argument("--machine", default="ebflow-bench-ref")
    s.add_argument("--quick", action="store_true")
    s.add_argument("--bench", help="regular expression selecting benchmarks")
    s.set_defaults(fn=cmd_track)

    s = sub.add_parser("steptime", help="mean training step time of methods over D at a fixed depth")
    s.add_argument("--methods", type=_csv, default=["ebflow-ml", "ebflow-dsm", "ebflow-ssm"])
    s.add_argument("--dims", type=_ints, default=[128, 256, 512, 1024, 2048])
    s.add_argument("--layers", type=int, default=2)
    s.add_argument("--repeats", type=int, default=5)
    s.add_argument("--batch-size", type=int, default=100)
    s.add_argument("--device")
    s.add_argument("--floor", action="store_true",
                   help="also time a plain forward+backward and each objective's GEMM floor, interleaved, and "
                        "print each step as a multiple of both (median of --repeats)")
    s.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's; asv pins 2)")
    s.set_defaults(fn=cmd_steptime)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .matrix import MatrixError
    from .runner import RunDirExists

    try:
        return args.fn(args)
    except (_BadInput, MatrixError, RunDirExists, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
