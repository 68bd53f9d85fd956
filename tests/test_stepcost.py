"""ebflow_bench.stepcost on synthetic tables: multiples, crossover D, net peak memory, markdown."""

import math

import numpy as np
import pandas as pd
import pytest

from ebflow_bench import stepcost
from ebflow_bench.steptime import product_counts

DIMS = [64, 128, 256, 512, 1024, 2048, 4096]


def _asv_rows(method, dims, values, bench="bench_step.TimeStepD.time_step", layers=2):
    return [{"benchmark": bench, "params": f"method={method}, dim={d}, layers={layers}", "value": v}
            for d, v in zip(dims, values)]


def _sweep(ml=lambda d: 1e-9 * d**3, sm=lambda d: 4e-6 * d**2, extra=()):
    """ML ~ d^3 and SM ~ d^2 cross where 1e-9 d^3 = 4e-6 d^2, i.e. at d = 4000."""
    rows = _asv_rows("ebflow-ml", DIMS, [ml(d) for d in DIMS])
    rows += _asv_rows("ebflow-dsm", DIMS, [sm(d) for d in DIMS])
    for r in extra:
        rows += r
    return pd.DataFrame(rows)


def test_crossover_found_where_the_curves_cross():
    df = _sweep(extra=[_asv_rows("ebflow-ssm", DIMS, [1e-5 * d**2 for d in DIMS])])
    out = stepcost.crossover(df).set_index("method")
    # dsm: 4e-6 d^2 < 1e-9 d^3 for d > 4000; the sweep's bracket is (2048, 4096], interpolated log-linearly
    assert out.loc["ebflow-dsm", "crossover_d"] == pytest.approx(4000, rel=1e-9)
    assert out.loc["ebflow-dsm", "fit_d"] == pytest.approx(4000, rel=1e-9)  # the log-ratio is exactly linear
    assert out.loc["ebflow-dsm", "slope"] == pytest.approx(-1.0)
    assert out.loc["ebflow-dsm", "n"] == len(DIMS)
    # ssm (1e-5 d^2) crosses at 10,000: beyond the sweep, no bracket, but the fit extrapolates
    assert math.isnan(out.loc["ebflow-ssm", "crossover_d"])
    assert out.loc["ebflow-ssm", "fit_d"] == pytest.approx(10_000, rel=1e-9)


def test_crossover_cheaper_everywhere_and_last_bracket():
    df = _sweep(sm=lambda d: 1e-10 * d**3)  # always 10x cheaper
    assert stepcost.crossover(df).set_index("method").loc["ebflow-dsm", "crossover_d"] == 64
    # noisy small D: cheaper at 64, dearer at 128..256, cheaper from 512 on -> the last crossing counts
    ml = dict(zip(DIMS, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]))
    sm = dict(zip(DIMS, [0.5, 2.0, 2.0, 0.5, 0.5, 0.5, 0.5]))
    df = _sweep(ml=ml.get, sm=sm.get)
    d = stepcost.crossover(df).set_index("method").loc["ebflow-dsm", "crossover_d"]
    assert 256 < d < 512 and d == pytest.approx(math.exp((math.log(256) + math.log(512)) / 2))


def test_failed_and_nan_rows_are_excluded():
    df = _sweep()
    df.loc[(df["params"] == "method=ebflow-dsm, dim=4096, layers=2"), "value"] = np.nan
    df.loc[(df["params"] == "method=ebflow-ml, dim=64, layers=2"), "value"] = None
    out = stepcost.crossover(df).set_index("method")
    # without D = 4096 the dsm curve never ends below ML: no bracket; 5 common D remain for the fit
    assert math.isnan(out.loc["ebflow-dsm", "crossover_d"])
    assert out.loc["ebflow-dsm", "n"] == 5
    assert out.loc["ebflow-dsm", "fit_d"] == pytest.approx(4000, rel=1e-9)
    assert out.loc["ebflow-dsm", "dims"] == "128-2048"


def test_fewer_than_five_points_no_fit():
    df = _sweep()
    keep = df["params"].str.contains("dim=(?:1024|2048|4096),", regex=True)
    out = stepcost.crossover(df[keep]).set_index("method")
    assert out.loc["ebflow-dsm", "n"] == 3
    assert math.isnan(out.loc["ebflow-dsm", "fit_d"]) and math.isnan(out.loc["ebflow-dsm", "slope"])
    assert out.loc["ebflow-dsm", "crossover_d"] == pytest.approx(4000, rel=1e-9)  # the bracket still is


def test_step_multiples_against_plain_floor_and_ml():
    rows = _asv_rows("ebflow-dsm", [1024, 2048], [0.3, 1.0])
    rows += _asv_rows("ebflow-ml", [1024, 2048], [0.6, 8.0])
    rows += _asv_rows("plain-fb", [1024, 2048], [0.1, 0.4], bench="bench_step.TimeFloorD.time_floor")
    rows += _asv_rows("gemm-dsm", [1024, 2048], [0.2, 0.8], bench="bench_step.TimeFloorD.time_floor")
    rows += _asv_rows("plain-fb-noopt", [2048], [0.25], bench="bench_step.TimeFloorD.time_floor")
    rows += _asv_rows("ebflow-dsm", [1024], [0.5], layers=4)  # another depth: ignored at layers=2
    out = stepcost.step_multiples(pd.DataFrame(rows)).set_index(["dim", "method"])
    r = out.loc[(2048, "ebflow-dsm")]
    assert (r["x_plain"], r["x_floor"], r["floor_x_plain"], r["vs_ml"]) == pytest.approx((2.5, 1.25, 2.0, 8.0))
    assert out.loc[(1024, "ebflow-dsm"), "x_plain"] == pytest.approx(3.0)
    assert r["x_fb"] == pytest.approx(4.0) and math.isnan(out.loc[(1024, "ebflow-dsm"), "x_fb"])
    assert math.isnan(out.loc[(1024, "ebflow-ml"), "x_floor"])  # ML has no GEMM floor
    assert out.loc[(1024, "ebflow-ml"), "vs_ml"] == pytest.approx(1.0)


def test_tidy_reads_columns_params_dicts_and_the_latest_commit():
    df = pd.DataFrame([
        {"benchmark": "b.TimeStepD.time_step", "params": {"method": "ebflow-dsm", "dim": 64, "layers": 2},
         "value": 2.0, "commit": "new", "date": pd.Timestamp("2026-01-02")},
        {"benchmark": "b.TimeStepD.time_step", "params": {"method": "ebflow-dsm", "dim": 64, "layers": 2},
         "value": 9.0, "commit": "old", "date": pd.Timestamp("2026-01-01")},
        {"benchmark": "b.PeakMemStep.peakmem_step", "params": {"method": "baseline", "dim": 64, "layers": 2},
         "value": 100.0, "commit": "new", "date": pd.Timestamp("2026-01-02")},
    ])
    t = stepcost.tidy(df)
    assert list(t["value"]) == [100.0, 2.0] and list(t["metric"]) == ["peak_memory", "step_time"]
    assert list(stepcost.tidy(df, commit="old")["value"]) == [9.0]
    # the floor_table shape: no benchmark column, all step times
    ft = pd.DataFrame({"method": ["plain-fb"], "dim": [64], "layers": [2], "value": [0.1]})
    assert stepcost.tidy(ft)["metric"].tolist() == ["step_time"]
    with pytest.raises(KeyError, match="params"):
        stepcost.tidy(pd.DataFrame({"value": [1.0]}))


def test_memory_net_of_baseline_and_report_tables():
    mem = "bench_step.PeakMemStep.peakmem_step"
    rows = _asv_rows("baseline", [256, 2048], [300.0, 300.0], bench=mem)
    rows += _asv_rows("ebflow-ml", [256, 2048], [310.0, 500.0], bench=mem)
    rows += _asv_rows("ebflow-dsm", [256, 2048], [305.0, 400.0], bench=mem)
    df = pd.concat([_sweep(), pd.DataFrame(rows)], ignore_index=True)
    m = stepcost.memory_table(df).set_index(["dim", "method"])
    assert m.loc[(2048, "ebflow-dsm"), "net_mib"] == pytest.approx(100.0)
    assert m.loc[(2048, "ebflow-dsm"), "x_ml"] == pytest.approx(0.5)
    assert m.loc[(256, "ebflow-ml"), "x_ml"] == pytest.approx(1.0)
    tables = stepcost.report_tables(df)
    assert set(tables) == {"multiples", "crossover", "crossover_dsm", "memory"}
    assert list(tables["memory"].columns) == ["dim", "dsm MiB", "ml MiB"]
    assert "dsm ML /" in tables["multiples"].columns
    md = stepcost.to_markdown(tables["crossover"])
    assert md.splitlines()[0].startswith("| method | crossover_d") and "| ebflow-dsm | 4e+03 |" in md
    assert stepcost.memory_table(_sweep()).empty  # no baseline process, no net memory
    assert stepcost.to_markdown(pd.DataFrame()) == "_(no data)_\n"


def _products_of_one_step(run, dim: int) -> dict[tuple[str, int], int]:
    """Every matrix product a call runs, classified as :func:`product_counts` does (``[r, D] x [D, D]`` is an
    ``act`` product with r rows, ``[D, r] x [r, D]`` a ``wgrad`` with inner dimension r)."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    seen: Counter = Counter()

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name in ("mm", "addmm"):
                a, b = (args[1], args[2]) if name == "addmm" else (args[0], args[1])
                if tuple(b.shape) == (dim, dim):
                    seen[("act", a.shape[0])] += 1
                elif tuple(a.shape[:1]) == (dim,) and tuple(b.shape[1:]) == (dim,):
                    seen[("wgrad", a.shape[1])] += 1
                else:
                    seen[("other", tuple(a.shape), tuple(b.shape))] += 1
            return func(*args, **(kwargs or {}))

    with Record():
        run()
    return dict(seen)


@pytest.mark.parametrize("objective", ["plain", "dsm", "ssm", "fdssm"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_product_counts_are_the_products_the_step_runs(objective, layers):
    # the floor times exactly the products a training step runs: recorded at dispatch on a small dense model
    from ebflow_bench.steptime import build_step, plain_step

    dim, batch = 7, 5
    if objective == "plain":
        bench = plain_step(dim, layers, batch_size=batch, optimizer=True)
        run = bench.fn
    else:
        run = build_step(f"ebflow-{objective}", dim, layers, batch_size=batch).step
    assert _products_of_one_step(run, dim) == product_counts(objective, layers, batch)


def test_product_counts():
    # fused DSM at L = 2: 7 activation products and one stacked weight gradient per layer (2B rows), against 3 + 2
    # for a plain forward+backward
    assert product_counts("dsm", 2, 100) == {("act", 100): 7, ("wgrad", 200): 2}
    assert product_counts("plain", 2, 100) == {("act", 100): 3, ("wgrad", 100): 2}
    assert product_counts("ssm", 1, 100) == {("act", 100): 2, ("act", 200): 1, ("wgrad", 300): 1}
    assert product_counts("fdssm", 2, 100) == {("act", 300): 3, ("wgrad", 300): 2}
    with pytest.raises(ValueError, match="no floor"):
        product_counts("ml", 2)


def test_peers_crossovers_against_ml_and_dsm():
    """The determinant-free peers enter the multiples and both crossover tables (against ML and DSM)."""
    df = _sweep(extra=[_asv_rows("snf", DIMS, [2e-6 * d**2 for d in DIMS]),
                       _asv_rows("free-form-flow", DIMS, [8e-6 * d**2 for d in DIMS])])
    vs_ml = stepcost.crossover(df).set_index("method")
    # snf 2e-6 d^2 < 1e-9 d^3 from d = 2000; free-form-flow 8e-6 d^2 from 8000 (beyond the sweep, fitted)
    assert vs_ml.loc["snf", "crossover_d"] == pytest.approx(2000, rel=1e-9)
    assert math.isnan(vs_ml.loc["free-form-flow", "crossover_d"])
    assert vs_ml.loc["free-form-flow", "fit_d"] == pytest.approx(8000, rel=1e-9)
    vs_dsm = stepcost.report_tables(df)["crossover_dsm"].set_index("method")
    assert set(vs_dsm.index) == {"snf", "free-form-flow"}  # only the peers, against DSM
    assert vs_dsm.loc["snf", "crossover_d"] == 64  # half of DSM's cost at every D
    assert math.isnan(vs_dsm.loc["free-form-flow", "crossover_d"])  # twice DSM's at every D
    assert set(stepcost.step_multiples(df)["method"]) == {"ebflow-ml", "ebflow-dsm", "snf", "free-form-flow"}
