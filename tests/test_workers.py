"""Parallel by default (issue 22): without --workers, a run uses as many local workers as the machine's cores
hold at the matrix's eval.threads, at most one per cell left to run; serial when that is 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ebflow_bench.runner as runner
from ebflow_bench.cli import build_parser, main
from ebflow_bench.matrix import load_imports
from ebflow_bench.runner import default_workers

PLUGIN = str(Path(__file__).with_name("test_runner.py").resolve())
load_imports([PLUGIN])


@pytest.mark.parametrize("threads, n_cells, cores, expected", [
    (1, 10, 4, 4), (2, 10, 4, 2), (3, 10, 4, 1), (8, 10, 4, 1), (1, 3, 16, 3), (1, 1, 16, 1), (1, 0, 16, 1),
])
def test_default_workers(threads, n_cells, cores, expected):
    assert default_workers(threads, n_cells, cores=cores) == expected


def test_available_cores_is_the_affinity_mask():
    import os

    assert runner.available_cores() == len(os.sched_getaffinity(0))


def test_workers_option_defaults_to_none_for_run_tune_and_reference():
    p = build_parser()
    assert p.parse_args(["run", "--preset", "smoke"]).workers is None
    assert p.parse_args(["tune", "--methods", "a", "--tasks", "b"]).workers is None
    assert p.parse_args(["reference"]).workers is None
    assert p.parse_args(["run", "--preset", "smoke", "--workers", "3"]).workers == 3


def _matrix(tmp_path: Path, threads: int = 1) -> str:
    p = tmp_path / "m.toml"
    p.write_text(f'imports = [{json.dumps(PLUGIN)}]\nmethods = ["test-diag"]\ntasks = ["test-gauss"]\n'
                 f'dims = [2]\nlayers = [1]\nseeds = [0, 1, 2]\nbudgets = [5]\n[eval]\nn_samples = 50\n'
                 f'threads = {threads}\n')
    return str(p)


@pytest.mark.parametrize("cores, threads, message", [
    (1, 1, "3 cells on 1 local worker (1 cores, 1 thread per cell; --workers N to change)"),
    (3, 4, "3 cells on 1 local worker (3 cores, 4 threads per cell; --workers N to change)"),
])
def test_the_default_is_announced_and_recorded(tmp_path, capsys, monkeypatch, cores, threads, message):
    monkeypatch.setattr(runner, "available_cores", lambda: cores)
    run = tmp_path / "run"
    assert main(["run", "--matrix", _matrix(tmp_path, threads), "--out", str(run)]) in (0, 4)  # tiny cells may be diagnosed degenerate (exit 4)
    assert message in capsys.readouterr().err
    assert json.loads((run / "meta.json").read_text())["sessions"][-1]["workers"] == 1
    # resuming a finished run has nothing left to run: no cluster, nothing announced
    assert main(["run", "--matrix", _matrix(tmp_path, threads), "--out", str(run), "--resume"]) in (0, 4)
    assert "local worker" not in capsys.readouterr().err


def test_a_method_registered_in_this_process_only_runs_serially(tmp_path, capsys, monkeypatch):
    """Dask workers could not import an adapter that is neither installed nor in the matrix's imports: the
    default then stays serial (and says why) instead of failing every cell on the workers."""
    from ebflow_bench.adapters.base import _REGISTRY

    monkeypatch.setattr(runner, "available_cores", lambda: 4)
    monkeypatch.setattr(_REGISTRY["test-diag"], "__module__", "only_in_this_process")
    m = tmp_path / "m.toml"
    m.write_text('methods = ["test-diag"]\ntasks = ["test-gauss"]\ndims = [2]\nlayers = [1]\nseeds = [0, 1]\n'
                 'budgets = [5]\n[eval]\nn_samples = 50\n')
    run = tmp_path / "run"
    assert main(["run", "--matrix", str(m), "--out", str(run)]) in (0, 4)  # tiny cells may be diagnosed degenerate (exit 4)
    err = capsys.readouterr().err
    assert "2 cells on 1 local worker (4 cores, 1 thread per cell; serial: method 'test-diag' is registered in " \
           "this process only" in err
    assert json.loads((run / "meta.json").read_text())["sessions"][-1]["workers"] == 1
