"""ebflow_bench.scaling: log-log OLS exponents with t-intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ebflow_bench.scaling import fit_exponents, speedup_at


def _power_law(method: str, c: float, a: float, xs, *, noise: float, rng, x: str = "dim", reps: int = 2):
    rows = []
    for v in xs:
        for _ in range(reps):
            rows.append({"method": method, x: v, "value": c * v**a * float(np.exp(rng.normal(0, noise)))})
    return rows


def test_recovers_known_slopes_with_noise():
    rng = np.random.default_rng(0)
    dims = [64, 128, 256, 512, 1024, 2048, 4096]
    df = pd.DataFrame(_power_law("ebflow-ml", 1e-10, 3.0, dims, noise=0.05, rng=rng)
                      + _power_law("ebflow-dsm", 4e-8, 2.0, dims, noise=0.05, rng=rng))
    fit = fit_exponents(df, by="method", x="dim").set_index("method")
    assert list(fit.columns) == ["slope", "ci_low", "ci_high", "n"]
    for m, a in (("ebflow-ml", 3.0), ("ebflow-dsm", 2.0)):
        r = fit.loc[m]
        assert r["ci_low"] < a < r["ci_high"], r
        assert abs(r["slope"] - a) < 0.05 and r["n"] == 14
        assert r["ci_high"] - r["ci_low"] < 0.2


def test_exact_power_law_and_layers():
    df = pd.DataFrame({"method": "m", "layers": [1, 2, 4, 8], "value": [0.5 * l for l in (1, 2, 4, 8)]})
    r = fit_exponents(df, x="layers").iloc[0]
    assert r["slope"] == pytest.approx(1.0) and r["ci_low"] == pytest.approx(1.0, abs=1e-6)


def test_min_x_restricts_to_the_asymptotic_range():
    # t = c3 D^3 + c2 D^2: the slope is only ~3 at large D
    dims = np.array([64, 128, 256, 512, 1024, 2048, 4096, 8192], float)
    df = pd.DataFrame({"method": "ml", "dim": dims, "value": 1e-3 * dims**3 + dims**2})
    whole = fit_exponents(df).iloc[0]
    top = fit_exponents(df, min_x=1024).iloc[0]
    assert whole["slope"] < 2.6 and top["slope"] > 2.7 and top["n"] == 4


def test_too_few_points_or_bad_values_raise_naming_the_group():
    ok = [{"method": "a", "dim": d, "value": float(d)} for d in (8, 16, 32)]
    two = [{"method": "b", "dim": d, "value": float(d)} for d in (8, 16, 16)]
    with pytest.raises(ValueError, match=r"method='b' has 2 distinct dim"):
        fit_exponents(pd.DataFrame(ok + two))
    neg = [{"method": "c", "dim": d, "value": v} for d, v in ((8, 1.0), (16, 0.0), (32, 2.0))]
    with pytest.raises(ValueError, match=r"method='c'.*non-positive"):
        fit_exponents(pd.DataFrame(ok + neg))
    with pytest.raises(ValueError, match=r"method='a' has 1 distinct dim value\(s\) >= 32"):
        fit_exponents(pd.DataFrame(ok), min_x=32)
    with pytest.raises(ValueError, match="no rows"):
        fit_exponents(pd.DataFrame(ok), min_x=1e6)
    with pytest.raises(KeyError, match="layers"):
        fit_exponents(pd.DataFrame(ok), x="layers")


def test_speedup_at_largest_dim():
    df = pd.DataFrame({"method": ["ebflow-ml", "ebflow-ml", "ebflow-dsm", "ebflow-dsm"], "dim": [8, 16, 8, 16],
                       "value": [1.0, 8.0, 0.5, 2.0]})
    sp = speedup_at(df).set_index("method")["speedup"]
    assert sp["ebflow-dsm"] == pytest.approx(4.0) and sp["ebflow-ml"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="baseline 'nope'"):
        speedup_at(df, baseline="nope")
