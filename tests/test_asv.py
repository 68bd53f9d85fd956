"""The asv suite (benchmarks/), its results loader and the track command's guards.

The results fixture is a trimmed copy of a real asv 0.6.6 results file (``asv run --python=same --quick``
of this suite on the reference container, machine ``scratch``): same keys, ``result_columns`` order, repr'd
parameters, +-Infinity intervals of single samples, trailing ``None`` columns dropped, one failed value.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_quality, bench_step, common  # noqa: E402
from ebflow_bench.asv_results import AsvResultsError, load_asv_results  # noqa: E402
from ebflow_bench.scaling import fit_exponents  # noqa: E402
from ebflow_bench.track import _fits, run_track  # noqa: E402

COMMIT = "4697c188893f9ed86921ec25343bfe8b340274ed"
RESULTS = """{"commit_hash": "4697c188893f9ed86921ec25343bfe8b340274ed", "env_name": "existing-py_root_.pyenv_versions_3.11.7_bin_python3.11", "date": 1795552619000, "params": {"machine": "scratch", "python": "/root/.pyenv/versions/3.11.7/bin/python3.11"}, "python": "/root/.pyenv/versions/3.11.7/bin/python3.11", "requirements": {}, "env_vars": {}, "result_columns": ["result", "params", "version", "started_at", "duration", "stats_ci_99_a", "stats_ci_99_b", "stats_q_25", "stats_q_75", "stats_number", "stats_repeat", "samples", "profile"], "results": {"bench_step.TimeStepD.time_step": [[0.1299710999992385, 0.7246854200002417, 5.015447652000148, 0.035852675000569434, 0.13891220000004978, 0.7311481199994887], [["'ebflow-ml'", "'ebflow-dsm'"], ["1024", "2048", "4096"], ["2"]], "bb4fbf30c44948f028150cce68019e81146dd51156fbe0f76f71e3d312c610e6", 1795553208831, 123.72, [-Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity], [Infinity, Infinity, Infinity, Infinity, Infinity, Infinity], [0.12997, 0.72469, 5.0154, 0.035853, 0.13891, 0.73115], [0.12997, 0.72469, 5.0154, 0.035853, 0.13891, 0.73115], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], "bench_step.PeakMemStep.peakmem_step": [[282132480, 610037760, 282157056, 611520512], [["'ebflow-ml'", "'ebflow-dsm'"], ["256", "2048"], ["2"]], "313409d89dcf446634e1944cb9398e461d7072814641019ecbf90c3a37b32d86", 1795553433755, 12.027], "bench_quality.TrackQuality.track_test_nll": [[4.720712018489838, 2.8929650433063507, 86.68960814857483, null], [["'ebflow-ml'", "'energy-flow'"], ["'checkerboard'", "'eight_gaussians'"]], "b60119641a26b75b7ff083897af292ab3a2067f0f5fe10db5913b98da82aa432", 1795553433502, 0.25197]}, "durations": {"<build>": 4.267692565917969e-05, "<setup_cache bench_quality:21>": 18.107235}, "version": 2}"""
BENCHMARKS = """{"bench_step.TimeStepD.time_step": {"name": "bench_step.TimeStepD.time_step", "param_names": ["method", "dim", "layers"], "type": "time", "unit": "seconds"}, "bench_step.PeakMemStep.peakmem_step": {"name": "bench_step.PeakMemStep.peakmem_step", "param_names": ["method", "dim", "layers"], "type": "peakmemory", "unit": "bytes"}, "bench_quality.TrackQuality.track_test_nll": {"name": "bench_quality.TrackQuality.track_test_nll", "param_names": ["method", "task"], "type": "track", "unit": "nats"}, "version": 2}"""


@pytest.fixture(autouse=True)
def _restore_threads():
    """The suite pins 2 threads; the rest of the test session runs with what conftest set."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    d = tmp_path / "asv"
    (d / "scratch").mkdir(parents=True)
    (d / "benchmarks.json").write_text(BENCHMARKS)
    (d / "scratch" / "machine.json").write_text('{"machine": "scratch", "version": 1}')
    (d / "scratch" / "4697c188-existing-py_root_.pyenv_versions_3.11.7_bin_python3.11.json").write_text(RESULTS)
    return d


# ------------------------------------------------------------------------------------------- asv check


def test_asv_check_passes():
    if shutil.which("git") is None:
        pytest.skip("git not available")
    out = subprocess.run([sys.executable, "-m", "asv", "check", "--python=same"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No problems found" in out.stdout


def test_config_keys():
    text = "\n".join(l for l in (ROOT / "asv.conf.json").read_text().splitlines() if not l.strip().startswith("//"))
    conf = json.loads(text)
    assert conf["environment_type"] == "existing" and conf["launch_method"] == "forkserver"
    assert (conf["benchmark_dir"], conf["results_dir"], conf["html_dir"]) == \
        ("benchmarks", "results/asv", "results/asv-html")
    assert conf["repo"] == "." and conf["branches"] == ["main"]


# ------------------------------------------------------------------------------------------- loader


def test_load_asv_results(results_dir: Path):
    df = load_asv_results(results_dir)
    assert {"benchmark", "commit", "machine", "date", "method", "dim", "layers", "metric", "value",
            "unit"} <= set(df.columns)
    assert set(df["commit"]) == {COMMIT} and set(df["machine"]) == {"scratch"}
    assert str(df["date"].iloc[0].date()) == "2026-11-24"
    steps = df[df["metric"] == "step_time"]
    assert len(steps) == 6 and set(steps["unit"]) == {"s"} and set(steps["layers"]) == {2}
    v = steps.set_index(["method", "dim"])["value"]
    assert v[("ebflow-ml", 4096)] == pytest.approx(5.015447652000148)
    assert v[("ebflow-dsm", 1024)] == pytest.approx(0.035852675000569434)
    assert steps["ci_low"].isna().all()  # asv's +-inf interval of a single sample
    mem = df[df["metric"] == "peak_memory"].set_index(["method", "dim"])
    assert set(mem["unit"]) == {"MiB"} and mem.loc[("ebflow-ml", 256), "value"] == pytest.approx(282132480 / 2**20)
    nll = df[df["metric"] == "test_nll"].set_index(["method", "task"])
    assert nll.loc[("ebflow-ml", "checkerboard"), "value"] == pytest.approx(4.720712018489838)
    assert nll.loc[("energy-flow", "checkerboard"), "unit"] == "nats"
    assert math.isnan(nll.loc[("energy-flow", "eight_gaussians"), "value"])  # failed combination kept as NaN
    fit = fit_exponents(steps, x="dim").set_index("method")
    assert fit.loc["ebflow-ml", "slope"] > 2.5 and fit.loc["ebflow-dsm", "slope"] < 2.3
    summary = "\n".join(_fits(df))
    assert "TimeStepD" in summary and "ebflow-ml" in summary


def test_load_asv_results_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_asv_results(tmp_path / "missing")
    (tmp_path / "empty" / "m").mkdir(parents=True)
    (tmp_path / "empty" / "m" / "machine.json").write_text("{}")
    with pytest.raises(AsvResultsError, match="no asv results"):
        load_asv_results(tmp_path / "empty")
    (tmp_path / "empty" / "m" / "abc-env.json").write_text('{"version": 1}')
    with pytest.raises(AsvResultsError, match="api_version 1"):
        load_asv_results(tmp_path / "empty")


# ------------------------------------------------------------------------------------------- benchmarks


def test_every_step_benchmark_builds():
    """setup + one timed call of every method of both sweeps at their smallest size."""
    for cls in (bench_step.TimeStepD, bench_step.TimeStepL):
        methods, dims, layers = cls.params
        assert cls.number == 1 and cls.warmup_time == 0 and cls.timeout > 0
        for m in methods:
            b = cls()
            b.setup(m, min(dims), min(layers))
            assert torch.get_num_threads() == common.THREADS
            b.time_step(m, min(dims), min(layers))
            assert b.bench.adapter.batch_size == common.STEP_BATCH
    assert bench_step.TimeStepD.params[1] == common.D_SWEEP and bench_step.TimeStepL.params[2] == common.L_SWEEP
    methods, dims, layers = bench_step.PeakMemStep.params
    for m in methods:
        b = bench_step.PeakMemStep()
        b.setup(m, min(dims), layers[0])
        b.peakmem_step(m, min(dims), layers[0])
    methods, dims, layers = bench_step.TimeFloorD.params
    assert dims == common.D_SWEEP and "plain-fb" in methods and "gemm-dsm" in methods
    for m in methods:
        b = bench_step.TimeFloorD()
        b.setup(m, min(dims), layers[0])
        assert torch.get_num_threads() == common.THREADS
        b.time_floor(m, min(dims), layers[0])


def test_step_setup_is_seeded():
    a = common.build_step("ebflow-dsm", 64, 2, seed=common.SEED)
    b = common.build_step("ebflow-dsm", 64, 2, seed=common.SEED)
    assert torch.equal(a.batch, b.batch)
    assert a.step() == b.step()


def test_track_values_are_deterministic_and_cover_every_cell():
    kw = dict(steps=10, n_samples=200, threads=1)
    first = common.quality_table(**kw)
    second = common.quality_table(**kw)
    assert set(first) == {(m, t) for m in common.TRACK_METHODS for t in common.TRACK_TASKS}
    assert first == second
    bench = bench_quality.TrackQuality()
    for (m, t), entry in first.items():
        assert isinstance(entry, dict), entry
        bench.setup(first, m, t)
        assert math.isfinite(bench.track_test_nll(first, m, t))
        assert bench.track_sliced_wasserstein(first, m, t) >= 0
    assert bench.track_test_nll.unit == "nats"
    with pytest.raises(RuntimeError, match="boom"):
        bench.track_test_nll({("x", "y"): "boom"}, "x", "y")


# ------------------------------------------------------------------------------------------- track guards


def test_run_track_refuses_outside_git(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="asv.conf.json"):
        run_track(root=tmp_path)
    shutil.copy(ROOT / "asv.conf.json", tmp_path / "asv.conf.json")
    if shutil.which("git") is None:
        pytest.skip("git not available")
    with pytest.raises(FileNotFoundError, match="not a git working tree"):
        run_track(root=tmp_path)
    with pytest.raises(ValueError, match="machine name"):
        run_track(machine="a b", root=tmp_path)


def test_step_exponents_and_report_section(results_dir: Path, tmp_path: Path):
    import numpy as np

    from ebflow_bench.asv_results import step_exponents
    from ebflow_bench.report import build_report

    df = load_asv_results(results_dir)
    fits = step_exponents(df)
    assert set(fits["range"]) == {"all", "D >= 1024"} and set(fits["sweep"]) == {"TimeStepD"}
    steps = df[df["metric"] == "step_time"]
    for method, g in steps.groupby("method"):
        slope = np.polyfit(np.log(g["dim"].astype(float)), np.log(g["value"]), 1)[0]
        r = fits[(fits["method"] == method) & (fits["range"] == "all")].iloc[0]
        assert r["slope"] == pytest.approx(slope) and r["n"] == 3 and r["ci_low"] < slope < r["ci_high"]
        assert r["fixed"] == 2 and r["error"] == ""
    assert step_exponents(df, commit="0" * 40).empty  # another commit: nothing to fit
    # the report shows the asv scaling section: figure, exponents, speedup against ebflow-ml
    from ebflow_bench.matrix import load_matrix
    from ebflow_bench.report.tables import fmt
    from ebflow_bench.runner import run_matrix

    run_matrix(load_matrix("smoke"), tmp_path / "smoke", progress=False)
    md = build_report([tmp_path / "smoke"], tmp_path / "rep", asv_results=results_dir).read_text()
    sec = md[md.index("## asv: step-time scaling"):]
    assert "figures/asv_scaling_D.png" in sec and (tmp_path / "rep" / "figures" / "asv_scaling_D.png").is_file()
    ml = fits[(fits["method"] == "ebflow-ml") & (fits["range"] == "all")].iloc[0]
    assert f"| ebflow-ml | {fmt(ml['slope'], 3)} | all |" in sec
    speed = 5.015447652000148 / 0.7311481199994887
    assert f"{speed:.3g}x" in sec
