"""The asv suite (benchmarks/), its results loader (asv's own API), ``track --compare`` and the track guards.

Two kinds of results fixtures: a trimmed copy of a real asv 0.6.6 results file (``asv run --python=same --quick``
of this suite on the reference container, machine ``scratch``: same keys, ``result_columns`` order, repr'd
parameters, +-Infinity intervals of single samples, trailing ``None`` columns dropped, one failed value), and
synthetic histories written with asv's own ``Results.add_result``/``Results.save`` (:func:`write_asv`).
"""

from __future__ import annotations

import datetime
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
from ebflow_bench.asv_results import AsvResultsError, history_table, load_asv_results, step_exponents  # noqa: E402
from ebflow_bench.scaling import MIN_FIT_POINTS, fit_exponents  # noqa: E402
from ebflow_bench.track import TrackError, _fits, compare, describe_machine, run_track  # noqa: E402

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
    from asv import util

    with pytest.raises(FileNotFoundError, match="not found"):
        load_asv_results(tmp_path / "missing")
    (tmp_path / "empty" / "m").mkdir(parents=True)
    util.write_json(str(tmp_path / "empty" / "m" / "machine.json"), {"machine": "m"}, api_version=1)
    with pytest.raises(AsvResultsError, match="no asv results"):
        load_asv_results(tmp_path / "empty")
    (tmp_path / "empty" / "m" / "abc-env.json").write_text('{"version": 1}')
    with pytest.raises(AsvResultsError, match="asv cannot load results file .*abc-env.json"):
        load_asv_results(tmp_path / "empty")


# ------------------------------------------------------------------------------------------- synthetic histories

QUALITY = "bench_quality.TrackQuality.track_test_nll"
STEP_D = "bench_step.TimeStepD.time_step"
BENCH_META = {
    QUALITY: {"param_names": ["method", "task"], "type": "track", "unit": "nats"},
    STEP_D: {"param_names": ["method", "dim", "layers"], "type": "time", "unit": "seconds"},
}


def write_asv(root: Path, machine: str, commits: list[tuple[str, dict[str, tuple[list, list]]]],
              env: str = "existing-py") -> Path:
    """An asv results directory written with asv's own API: ``benchmarks.json``, ``<machine>/machine.json`` and,
    per (commit hash, {benchmark: (params as Python values, flat results)}), one ``Results`` file. Commit dates
    follow the list order."""
    from asv import util
    from asv.results import Results
    from asv.runner import BenchmarkResult

    root.mkdir(parents=True, exist_ok=True)
    benches = {}
    for _, values in commits:
        for name, (params, _) in values.items():
            benches[name] = {**BENCH_META[name], "name": name, "version": "1",
                             "params": [[repr(v) for v in p] for p in params]}
    util.write_json(str(root / "benchmarks.json"), benches, api_version=2)
    (root / machine).mkdir(exist_ok=True)
    util.write_json(str(root / machine / "machine.json"), {"machine": machine, "cpu": "test cpu"}, api_version=1)
    for i, (commit, values) in enumerate(commits):
        res = Results({"machine": machine, "python": "3.11"}, {}, commit, 1_795_000_000_000 + 1000 * i, "3.11",
                      env, {})
        for name, (_, result) in values.items():
            n = len(result)
            res.add_result(benches[name], BenchmarkResult(result=result, samples=[None] * n, number=[None] * n,
                                                          errcode=0, stderr="", profile=None),
                           started_at=datetime.datetime.now(datetime.timezone.utc), duration=1.0)
        res.save(str(root))
    return root


def test_asv_table_keeps_tasks_apart(tmp_path: Path):
    """energy-flow's test NLL on two tasks (86.69 and 2.17) are two rows, never their mean 44.43."""
    a, b = "a" * 40, "b" * 40
    params = (["energy-flow", "ebflow-ml"], ["checkerboard", "eight_gaussians"])
    root = write_asv(tmp_path / "asv", "ref", [(a, {QUALITY: (params, [86.69, 2.17, 4.72, 2.89])}),
                                                (b, {QUALITY: (params, [80.0, 2.0, None, 2.5])})])
    df = load_asv_results(root)
    assert {"machine", "commit", "date", "benchmark", "method", "task", "value", "unit"} <= set(df.columns)
    assert len(df) == 8 and set(df["task"]) == {"checkerboard", "eight_gaussians"} and set(df["unit"]) == {"nats"}
    v = df[df["commit"] == a].set_index(["method", "task"])["value"]
    assert v[("energy-flow", "checkerboard")] == 86.69 and v[("energy-flow", "eight_gaussians")] == 2.17
    assert math.isnan(df[(df["commit"] == b) & (df["method"] == "ebflow-ml") & (df["task"] == "checkerboard")]
                      ["value"].iloc[0])  # a failed combination is kept as NaN
    hist = history_table(df)
    assert list(hist.columns) == ["benchmark", "method", "task", "unit", a, b]  # commits oldest first
    ef = hist[hist["method"] == "energy-flow"].set_index("task")
    assert len(ef) == 2 and ef.loc["checkerboard", a] == 86.69 and ef.loc["eight_gaussians", a] == 2.17
    assert not (hist[[a, b]] == pytest.approx(44.43)).any().any()
    assert list(history_table(df, last=1).columns)[-1] == b and a not in history_table(df, last=1).columns


def _step_params(dims):
    return (["ebflow-ml", "ebflow-dsm"], list(dims), [2])


def test_step_exponents_need_five_points(tmp_path: Path):
    """A D-sweep of 7 values: the whole-range fit is a result; D >= 1024 holds 3 values: insufficient."""
    dims = [64, 128, 256, 512, 1024, 2048, 4096]
    law = {"ebflow-ml": (1e-9, 3.0), "ebflow-dsm": (4e-8, 2.0)}
    values = [law[m][0] * d ** law[m][1] for m in law for d in dims]
    root = write_asv(tmp_path / "asv", "ref", [("c" * 40, {STEP_D: (_step_params(dims), values)})])
    fits = step_exponents(load_asv_results(root)).set_index(["range", "method"])
    for m, (_, a) in law.items():
        r = fits.loc[("all", m)]
        assert r["error"] == "" and r["slope"] == pytest.approx(a) and r["n"] == 7 and r["fixed"] == 2
        short = fits.loc[("D >= 1024", m)]
        assert short["error"].startswith("insufficient: 3 distinct D values") and math.isnan(short["slope"])
        assert math.isnan(short["ci_low"]) and short["n"] == 3
    assert MIN_FIT_POINTS == 5


def _git_repo(path: Path, n_commits: int) -> list[str]:
    path.mkdir(parents=True, exist_ok=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=path, check=True)
    for i in range(n_commits):
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", f"c{i}"], cwd=path, check=True)
    out = subprocess.run(["git", "rev-list", "--reverse", "HEAD"], cwd=path, capture_output=True, text=True)
    return out.stdout.split()


def test_track_compare_flags_regressions_like_asv_continuous(tmp_path: Path, capsys):
    if shutil.which("git") is None:
        pytest.skip("git not available")
    from ebflow_bench.cli import main

    base, head = _git_repo(tmp_path / "proj", 2)
    shutil.copy(ROOT / "asv.conf.json", tmp_path / "proj" / "asv.conf.json")
    params = (["energy-flow"], ["checkerboard", "eight_gaussians"])
    write_asv(tmp_path / "proj" / "results" / "asv", "ref",
              [(base, {QUALITY: (params, [2.0, 3.0])}), (head, {QUALITY: (params, [3.0, 3.05])})])
    # +50% on checkerboard (worse: asv's tracks are lower-is-better), +1.7% on eight_gaussians
    assert compare("HEAD~1", "HEAD", machine="ref", root=tmp_path / "proj") == (True, False)
    table = capsys.readouterr().out
    line = next(l for l in table.splitlines() if "checkerboard" in l)
    assert line.lstrip("| ").startswith("+") and "1.5" in line
    assert "eight_gaussians" in table
    assert compare(base, head, machine="ref", factor=2.0, root=tmp_path / "proj") == (False, False)
    assert compare(head, base, machine="ref", root=tmp_path / "proj") == (False, True)
    with pytest.raises(TrackError, match="not a commit"):
        compare("no-such-branch", "HEAD", machine="ref", root=tmp_path / "proj")
    with pytest.raises(TrackError, match="no-machine"):
        compare(base, head, machine="no-machine", root=tmp_path / "proj")
    with pytest.raises(ValueError, match="factor must be > 1"):
        compare(base, head, machine="ref", factor=0.9, root=tmp_path / "proj")
    # results that share no benchmark in one environment compare nothing: refused, never "no regression"
    other = tmp_path / "other"
    o_base, o_head = _git_repo(other, 2)
    shutil.copy(ROOT / "asv.conf.json", other / "asv.conf.json")
    write_asv(other / "results" / "asv", "ref", [(o_base, {QUALITY: (params, [2.0, 3.0])})])
    write_asv(other / "results" / "asv", "ref", [(o_head, {QUALITY: (params, [2.0, 3.0])})], env="existing-py3")
    with pytest.raises(TrackError, match="nothing to compare"):
        compare(o_base, o_head, machine="ref", root=other)
    # nor do results recorded on two CPUs under one machine name
    import json as _json

    for f in (other / "results" / "asv" / "ref").glob(f"{o_head[:8]}*.json"):
        d = _json.loads(f.read_text())
        d["params"]["cpu"], d["env_name"] = "CPU B", "existing-py"
        f.write_text(_json.dumps(d))
    for f in (other / "results" / "asv" / "ref").glob(f"{o_base[:8]}*.json"):
        d = _json.loads(f.read_text())
        d["params"]["cpu"] = "CPU A"
        f.write_text(_json.dumps(d))
    with pytest.raises(TrackError, match="not comparable"):
        compare(o_base, o_head, machine="ref", root=other)
    # the CLI exits 1 on a regression, 0 without, 2 on bad input
    import ebflow_bench.track as track

    old = track.ROOT
    track.ROOT = tmp_path / "proj"
    try:
        assert main(["track", "--machine", "ref", "--compare", base, head]) == 1
        assert "REGRESSION" in capsys.readouterr().out
        assert main(["track", "--machine", "ref", "--compare", base, head, "--factor", "2"]) == 0
        assert "no regression" in capsys.readouterr().out
        assert main(["track", "--machine", "ref", "--compare", base, "nope"]) == 2
        assert "not a commit" in capsys.readouterr().err
    finally:
        track.ROOT = old


def test_describe_machine_stores_asvs_full_description(tmp_path: Path):
    from asv.machine import Machine, MachineCollection

    info = describe_machine("fixed-name", path=tmp_path / "asv-machine.json")
    stored = MachineCollection.load("fixed-name", _path=str(tmp_path / "asv-machine.json"))
    assert stored == info and info["machine"] == "fixed-name"
    detected = Machine.get_defaults()
    for key in ("os", "arch", "cpu", "num_cpu", "ram"):
        assert info[key] == str(detected[key]) and info[key]


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


def test_step_exponents_and_report_section(tmp_path: Path):
    """The report's asv section from results written with asv's API: figure, exponents (whole sweep fitted,
    asymptotic range marked not fitted), speed-up against ebflow-ml, per-task history rows."""
    import numpy as np

    from ebflow_bench.matrix import load_matrix
    from ebflow_bench.report import build_report
    from ebflow_bench.report.tables import fmt
    from ebflow_bench.runner import run_matrix

    dims = [64, 128, 256, 512, 1024, 4096]
    noise = [1.0 + 0.1 * (i % 2) for i in range(len(dims))]  # measurements scatter about the power laws
    values = [1e-9 * d**3 * e for d, e in zip(dims, noise)] + [4e-8 * d**2 * e for d, e in zip(dims, noise)]
    params = (["energy-flow"], ["checkerboard", "eight_gaussians"])
    root = write_asv(tmp_path / "asv", "ref", [("d" * 40, {STEP_D: (_step_params(dims), values),
                                                            QUALITY: (params, [86.69, 2.17])})])
    df = load_asv_results(root)
    fits = step_exponents(df)
    steps = df[df["metric"] == "step_time"]
    for method, g in steps.groupby("method"):
        slope = np.polyfit(np.log(g["dim"].astype(float)), np.log(g["value"]), 1)[0]
        r = fits[(fits["method"] == method) & (fits["range"] == "all")].iloc[0]
        assert r["slope"] == pytest.approx(slope) and r["n"] == 6 and r["ci_low"] < slope < r["ci_high"]
    assert step_exponents(df, commit="0" * 40).empty  # another commit: nothing to fit
    run_matrix(load_matrix("smoke"), tmp_path / "smoke", progress=False)
    md = build_report([tmp_path / "smoke"], tmp_path / "rep", asv_results=root).read_text()
    sec = md[md.index("## asv: step-time scaling"):]
    assert "figures/asv_scaling_D.png" in sec and (tmp_path / "rep" / "figures" / "asv_scaling_D.png").is_file()
    ml = fits[(fits["method"] == "ebflow-ml") & (fits["range"] == "all")].iloc[0]
    assert f"| ebflow-ml | {fmt(ml['slope'], 3)} | all |" in sec
    assert "| ebflow-ml | not fitted | D >= 1024 |" in sec
    speed = values[len(dims) - 1] / values[-1]
    assert f"{speed:.3g}x" in sec
