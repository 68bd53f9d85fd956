"""CLI: `list`, bad arguments (exit 2 with a message), refused matrices, and the smoke preset end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ebflow_bench.cli import main
from ebflow_bench.matrix import load_imports
from ebflow_bench.results import load_results

PLUGIN = str(Path(__file__).with_name("test_runner.py").resolve())  # registers test-diag and test-* tasks
load_imports([PLUGIN])


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _matrix(tmp_path: Path, **over) -> str:
    spec = {"imports": [PLUGIN], "methods": ["test-diag"], "tasks": ["test-gauss"], "dims": [2], "layers": [1],
            "seeds": [0], "budgets": [20], **over}
    p = tmp_path / "m.toml"
    p.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in spec.items()) + "\n[eval]\nn_samples = 100\n")
    return str(p)


def test_list_shows_methods_tasks_metrics_presets(capsys):
    code, out, _ = _run(capsys, "list")
    assert code == 0
    sections = out.split("\n")
    for head in ("methods:", "tasks:", "metrics:", "presets:"):
        assert head in sections
    assert any("test-diag" in ln and "family=mle-flow" in ln and "objective=ml" in ln for ln in sections)
    assert any("test-gauss" in ln and "D=any" in ln for ln in sections)
    assert any("test-fixed2" in ln and "D=2" in ln for ln in sections)
    assert any(ln.strip().startswith("smoke ") for ln in sections)
    # every metric with its registered label, unit and direction
    line = {ln.split()[0]: ln for ln in sections[sections.index("metrics:") + 1:sections.index("presets:")]}
    assert "mean training-step wall time [s], lower is better" in line["step_time"]
    assert "computed by runner" in line["step_time"] and "computed by metrics" in line["test_nll"]
    assert "best at 0" in line["mmd"] and "higher is better" in line["log_z_ess"]


@pytest.mark.parametrize("argv, message", [
    (["run"], "give exactly one of --preset NAME or --matrix FILE"),
    (["run", "--preset", "nonesuch"], "unknown preset 'nonesuch'"),
    (["run", "--matrix", "/nonexistent/m.toml"], "matrix file '/nonexistent/m.toml' not found"),
    (["run", "--preset", "smoke", "--workers", "0"], "--workers must be >= 1"),
    (["report", "/nonexistent/run"], "run directory not found: /nonexistent/run"),
    (["steptime", "--methods", "nope"], "unknown method(s) ['nope']"),
])
def test_bad_input_exits_2_with_message(capsys, argv, message):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and err.startswith("error: ") and message in err


def test_argparse_errors_exit_2(capsys):
    for argv in (["frobnicate"], ["run", "--workers", "two"], ["steptime", "--dims", "1,x"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("over, message", [
    ({"methods": ["nope"]}, "unknown method 'nope'; known: "),
    ({"tasks": ["nowhere"]}, "unknown task 'nowhere'; known: "),
    ({"tasks": ["test-fixed2"], "dims": [5]}, "impossible D 5 for task 'test-fixed2': its dimension is fixed at 2"),
    ({"tasks": ["test-nan"], "dims": [2]}, "task 'test-nan' (D=2): task 'test-nan': train contains non-finite"),
])
def test_refused_matrices(tmp_path, capsys, over, message):
    code, _, err = _run(capsys, "run", "--workers", "1", "--matrix", _matrix(tmp_path, **over), "--out", str(tmp_path / "r"))
    assert code == 2 and "invalid matrix" in err and message in err
    assert not (tmp_path / "r").exists()  # refused before any work


def test_run_then_refuse_then_resume(tmp_path, capsys):
    m, out = _matrix(tmp_path), str(tmp_path / "r")
    code, stdout, _ = _run(capsys, "run", "--workers", "1", "--matrix", m, "--out", out)
    assert code == 0 and "1 cells (0 failed)" in stdout
    before = (tmp_path / "r" / "results.csv").read_text()
    code, _, err = _run(capsys, "run", "--workers", "1", "--matrix", m, "--out", out)
    assert code == 2 and "already exists and is not empty; pass --resume" in err
    assert (tmp_path / "r" / "results.csv").read_text() == before
    code, _, _ = _run(capsys, "run", "--workers", "1", "--matrix", m, "--out", out, "--resume", "--quiet")
    assert code == 0 and len(load_results(out)) == len(load_results(tmp_path / "r" / "results.csv"))
    # "auto" resolves to the CPU here: the same cells, so the run resumes (nothing left to do)
    code, _, err = _run(capsys, "run", "--workers", "1", "--matrix", m, "--out", out, "--resume", "--device", "auto", "--quiet")
    assert code == 0, err
    assert (tmp_path / "r" / "results.csv").read_text().count("\n") == before.count("\n")
    code, _, err = _run(capsys, "run", "--workers", "1", "--matrix", _matrix(tmp_path, seeds=[1]), "--out", out, "--resume")
    assert code == 2 and "started with a different matrix" in err
    code, _, err = _run(capsys, "run", "--workers", "1", "--matrix", m, "--out", out, "--resume", "--device", "mps")
    assert code == 2 and "device 'mps' is not supported" in err


def test_smoke_preset_end_to_end(tmp_path, capsys):
    code, stdout, err = _run(capsys, "run", "--preset", "smoke", "--out", str(tmp_path / "smoke"), "--quiet")
    assert code == 0, err
    from ebflow_bench.runner import available_cores

    # no --workers: one local worker per core (the preset's cells are single-threaded), at most one per cell
    meta = json.loads((tmp_path / "smoke" / "meta.json").read_text())
    assert meta["sessions"][-1]["workers"] == min(available_cores(), meta["n_cells"])
    df = load_results(tmp_path / "smoke")
    assert df["cell_id"].nunique() >= 2 and (df["status"] != "failed").all(), df[df["status"] == "failed"]
    ok = df[(df["metric"] == "test_nll") & (df["status"] == "ok")]
    assert len(ok) >= 1 and ok["value"].notna().all()
