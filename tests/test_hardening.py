"""Issue 12's defects, each reproduced: a hanging batch size, a truncated cell record, exit codes, the run-folder
lock, `~` in --out, one-line errors (file/read-only --out, empty report, Ctrl-C), leftover temporary files,
--resume into a foreign folder or with `--device auto`, steptime's bad options, and requires-python."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import torch

from ebflow_bench.cli import EXIT_BAD_INPUT, EXIT_CELLS_FAILED, EXIT_INTERRUPTED, main, run_exit_code
from ebflow_bench.matrix import load_imports, load_matrix, validate
from ebflow_bench.results import load_results, write_results
from ebflow_bench.rundir import DamagedCellRecord, RunDirLocked, RunLock, scan_cells
from ebflow_bench.runner import _batches, run_cell

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = str(Path(__file__).with_name("test_runner.py").resolve())  # test-diag adapter, test-gauss task
load_imports([PLUGIN])
NON_TIMING = ["cell_id", "metric", "value", "status", "reason", "step"]


def _matrix(tmp_path: Path, name: str = "m.toml", hparams: str = "", **over) -> str:
    spec = {"imports": [PLUGIN], "methods": ["test-diag"], "tasks": ["test-gauss"], "dims": [2], "layers": [1],
            "seeds": [0, 1], "budgets": [20], **over}
    p = tmp_path / name
    p.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in spec.items())
                 + "\n[eval]\nn_samples = 100\ncheckpoints = 2\n" + hparams)
    return str(p)


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "ebflow_bench.cli", *argv]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}


def _non_timing(df: pd.DataFrame) -> pd.DataFrame:
    df = df[~df["metric"].isin(["step_time", "train_time", "peak_memory"])][NON_TIMING]
    return df.sort_values(["cell_id", "metric", "step"]).reset_index(drop=True)


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Wait for a state the run announces (``pred``); the timeout only guards against a hung test."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _held(tmp_path: Path, seed: int) -> tuple[Path, str]:
    """A gate folder and the matrix hparams that hold the cell of train seed ``seed`` in progress (announced by
    ``gate/started-<seed>``) until the test writes ``gate/release`` (``test_runner.hold_here``)."""
    gate = tmp_path / "gate"
    gate.mkdir(exist_ok=True)
    return gate, f"[hparams.test-diag]\nhold = {json.dumps(str(gate))}\nhold_seed = {seed}\n"


# ------------------------------------------------------------------------------------- 1: no endless loop


@pytest.mark.timeout(20)
def test_nonpositive_batch_size_raises_instead_of_spinning():
    g = torch.Generator().manual_seed(0)
    for bs in (-4, 0):
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            next(_batches(100, bs, g))
    assert len(next(_batches(10, 64, g))) == 10  # larger than the data: one full-data batch


@pytest.mark.timeout(20)
def test_negative_batch_size_is_refused_before_any_work(tmp_path):
    from ebflow_bench.matrix import MatrixError

    m = load_matrix(_matrix(tmp_path, seeds=[0], hparams="[hparams.test-diag]\nbatch_size = -4\n"))
    with pytest.raises(MatrixError, match="batch_size = -4: must be >= 1"):
        validate(m)
    assert main(["run", "--workers", "1", "--matrix", _matrix(tmp_path, seeds=[0], hparams="[hparams.test-diag]\nbatch_size = -4\n"),
                 "--out", str(tmp_path / "never"), "--quiet"]) == EXIT_BAD_INPUT
    assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------------------- 2: damaged cell records


def test_truncated_cell_record_is_named_skipped_and_rerun_on_resume(tmp_path, capsys):
    m = _matrix(tmp_path)
    run, full = tmp_path / "run", tmp_path / "full"
    assert main(["run", "--workers", "1", "--matrix", m, "--out", str(run), "--quiet"]) == 0
    assert main(["run", "--workers", "1", "--matrix", m, "--out", str(full), "--quiet"]) == 0
    victim = sorted((run / "cells").glob("*.json"))[0]
    text = victim.read_text()
    victim.write_text(text[:len(text) // 2])  # `truncate -s`: a write cut by a crash of the disk or the host
    # write_results and report: skip it with a warning naming the file, no raw JSONDecodeError
    with pytest.warns(DamagedCellRecord, match=f"{victim.name}.*not valid JSON"):
        df = write_results(run)
    assert df["cell_id"].nunique() == 1 and victim.stem not in set(df["cell_id"])
    for f in ("results.parquet", "results.csv"):
        (run / f).unlink()
    with pytest.warns(DamagedCellRecord, match=victim.name):
        assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").is_file()
    # a record that parses but lacks required keys is damaged too
    good, bad = scan_cells(run)
    assert len(good) == 1 and [p for p, _ in bad] == [victim]
    # --resume moves it aside (nothing silently lost) and runs that cell again: the table equals a full run's
    with pytest.warns(DamagedCellRecord, match="moved to"):
        assert main(["run", "--workers", "1", "--matrix", m, "--out", str(run), "--resume", "--quiet"]) == 0
    (moved,) = (run / "cells" / "corrupt").glob(f"{victim.stem}.*.json")
    assert moved.read_text() == text[:len(text) // 2]
    assert json.loads(victim.read_text())["cell_id"] == victim.stem
    pd.testing.assert_frame_equal(_non_timing(load_results(run)), _non_timing(load_results(full)))


def test_record_missing_required_keys_is_damaged(tmp_path):
    assert main(["run", "--workers", "1", "--matrix", _matrix(tmp_path, seeds=[0]), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    (p,) = (tmp_path / "r" / "cells").glob("*.json")
    rec = json.loads(p.read_text())
    del rec["rows"]
    p.write_text(json.dumps(rec))
    _, bad = scan_cells(tmp_path / "r")
    assert bad == [(p, "missing key(s) ['rows']")]


# ------------------------------------------------------------------------------------------ 4: exit codes


def test_exit_code_3_when_cells_failed_even_quiet(tmp_path, capsys):
    m = _matrix(tmp_path, hparams="[hparams.test-diag]\nnan_at_step = 1\n")
    code = main(["run", "--workers", "1", "--matrix", m, "--out", str(tmp_path / "r"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == EXIT_CELLS_FAILED == 3 and out == "" and "2 cells (2 failed)" in err
    assert run_exit_code(["ok", "ok"]) == 0 and run_exit_code(["ok", "degenerate"]) == 4
    assert run_exit_code(["capped", "ok"]) == 4
    assert run_exit_code(["degenerate", "failed"]) == 3


# ----------------------------------------------------------------------------------------------- 5: lock


def test_second_run_into_a_locked_folder_is_refused(tmp_path, capsys):
    gate, held = _held(tmp_path, seed=0)
    m = _matrix(tmp_path, hparams=held)
    run = tmp_path / "run"
    first = subprocess.Popen(_cli("run", "--matrix", m, "--out", str(run), "--quiet", "--workers", "1"),
                             env=_env(), stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (gate / "started-0").exists(), first)  # the first run holds its lock and a cell
        code = main(["run", "--workers", "1", "--matrix", m, "--out", str(run), "--resume", "--quiet"])
        err = capsys.readouterr().err
        assert code == EXIT_BAD_INPUT and f"pid {first.pid} on {socket.gethostname()}" in err
        assert "in use by another run" in err and err.count("\n") == 1
        (gate / "release").touch()
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        first.kill()
    assert not (run / ".lock").exists()
    assert load_results(run)["cell_id"].nunique() == 2  # each cell ran once, by the first run


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    with pytest.warns(UserWarning, match=f"taking over the stale lock of pid {dead.pid}"):
        with RunLock(run):
            info = json.loads((run / ".lock").read_text())
            assert info["pid"] == os.getpid()
            with pytest.raises(RunDirLocked, match=f"pid {os.getpid()}"):  # a live holder is respected
                RunLock(run).acquire()
    assert not (run / ".lock").exists()


# ------------------------------------------------------------------------------ 6, 7, 8: paths and errors


def test_tilde_out_is_expanded(tmp_path, monkeypatch, capsys):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    assert main(["run", "--workers", "1", "--matrix", _matrix(tmp_path, seeds=[0]), "--out=~/x"]) == 0
    assert (home / "x" / "results.parquet").is_file() and not (cwd / "~").exists()
    assert str(home / "x" / "results.parquet") in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["file", "readonly", "under-a-file"])
def test_unusable_out_is_one_line_before_any_work(tmp_path, capsys, kind):
    if kind == "file":
        out = tmp_path / "f.txt"
        out.write_text("mine")
        message = "is a file, not a folder"
    elif kind == "under-a-file":
        (tmp_path / "f.txt").write_text("mine")
        out = tmp_path / "f.txt" / "run"
        message = "is a file"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        out = ro / "run"
        if os.access(ro, os.W_OK):  # root ignores permission bits: use a read-only file system instead
            out = Path("/sys/ebflow-bench-test/run")
            if os.access("/sys", os.W_OK) and not Path("/sys").is_mount():
                pytest.skip("no read-only folder available")
        message = "not writable"
    code = main(["run", "--workers", "1", "--matrix", _matrix(tmp_path, seeds=[0]), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "f.txt").is_dir()


def test_report_on_a_folder_without_finished_cells_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "cells").mkdir(parents=True)
    (run / "matrix.json").write_text("{}")
    code = main(["report", str(run), "--out", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and "nothing to report" in err and err.count("\n") == 1


def test_resume_into_an_unrelated_folder_is_refused(tmp_path, capsys):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "cat.jpg").write_text("meow")
    code = main(["run", "--workers", "1", "--matrix", _matrix(tmp_path), "--out", str(mine), "--resume"])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and "not a run folder (no matrix.json; holds cat.jpg)" in err
    assert sorted(p.name for p in mine.iterdir()) == ["cat.jpg"]


def test_resume_cleans_temporary_files_and_accepts_device_auto(tmp_path):
    m = _matrix(tmp_path)
    run = tmp_path / "run"
    assert main(["run", "--workers", "1", "--matrix", m, "--out", str(run), "--quiet", "--device", "cpu"]) == 0
    started = {p.name: json.loads(p.read_text())["started"] for p in (run / "cells").glob("*.json")}
    leftovers = [run / "cells" / f".abc.json.tmp{os.getpid()}", run / "samples" / ".abc.tmp.npy",
                 run / ".results.parquet.tmp"]
    for p in leftovers:  # what a SIGKILL in the middle of a write leaves
        p.write_text("half")
    dev = "auto" if not torch.cuda.is_available() else "cpu"  # `auto` is the CPU here: the same matrix
    assert main(["run", "--workers", "1", "--matrix", m, "--out", str(run), "--resume", "--quiet", "--device", dev]) == 0
    assert not any(p.exists() for p in leftovers)
    assert {p.name: json.loads(p.read_text())["started"] for p in (run / "cells").glob("*.json")} == started


def test_ctrl_c_exits_130_with_the_resume_hint_and_frees_the_folder(tmp_path):
    """SIGINT while the second of three cells is held in progress (announced by the run, never a time): exit
    130 with the hint, the first cell kept, the lock gone; --resume finishes the other two."""
    gate, held = _held(tmp_path, seed=1)
    m = _matrix(tmp_path, seeds=[0, 1, 2], hparams=held)
    run = tmp_path / "run"
    # the child gets SIGINT's default disposition: a suite started in the background of a non-interactive shell
    # (`pytest &`, nohup) inherits SIGINT ignored, and Python installs no KeyboardInterrupt handler then
    proc = subprocess.Popen(_cli("run", "--matrix", m, "--out", str(run), "--quiet", "--workers", "1"), env=_env(),
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for(lambda: (gate / "started-1").exists(), proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED == 130, err
    assert "resume with --resume" in err and "Traceback" not in err
    assert not (run / ".lock").exists()
    assert len(list((run / "cells").glob("*.json"))) == 1  # the seed-0 cell, finished before the held one
    (gate / "release").touch()
    assert main(["run", "--workers", "1", "--matrix", m, "--out", str(run), "--resume", "--quiet"]) == 0
    assert load_results(run)["cell_id"].nunique() == 3


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "0"], "--repeats and --batch-size must be >= 1"),
    (["--batch-size", "-1"], "--repeats and --batch-size must be >= 1"),
    (["--device", "mps"], "device 'mps' is not supported"),
    (["--device", "gpu0"], "bad device 'gpu0'"),
])
def test_steptime_bad_options_exit_2(capsys, argv, message):
    code = main(["steptime", "--methods", "ebflow-dsm", "--dims", "4", *argv])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and message in err


def test_requires_python_covers_tomllib():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    uses_tomllib = any("import tomllib" in p.read_text() for p in (ROOT / "ebflow_bench").rglob("*.py"))
    lower = meta["requires-python"].split(">=")[1].split(",")[0].strip()
    assert not uses_tomllib or tuple(map(int, lower.split("."))) >= (3, 11), meta["requires-python"]
