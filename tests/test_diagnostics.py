"""Degenerate-model detection and the reference rows: broken models are flagged with the reason in words, exact
samples are not; ``gaussian-fit`` is the closed-form Gaussian; ``truth`` rows are the metrics of exact samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ebflow_bench.adapters import get
from ebflow_bench.diagnostics import Diagnosis, diagnose, gaussian_fit
from conftest import cell_spec
from ebflow_bench.metrics import compute_metrics
from ebflow_bench.runner import run_cell
from ebflow_bench.tasks import get_task


def _truth(task, n=2000, seed=0):
    return task.sampler(n, torch.Generator().manual_seed(seed)), -task.log_prob(task.test.double())


@pytest.mark.parametrize("name,opts", [("eight_gaussians", {}), ("checkerboard", {"smooth": 0.375}),
                                       ("gaussian", {"dim": 10}), ("rings", {})])
def test_exact_samples_and_density_are_not_flagged(name, opts):
    task = get_task(name, n_train=5000, **opts)
    samples, nll = _truth(task)
    assert diagnose(task, samples, nll) is None


def test_real_data_held_out_split_is_not_flagged():
    task = get_task("wine")
    assert diagnose(task, task.test, None) is None


def test_escaping_mass_is_flagged_with_the_numbers():
    task = get_task("gaussian", dim=10, n_train=5000)
    samples, nll = _truth(task)
    broken = samples.clone()
    broken[:760] *= 1500.0  # 38% of the samples far away, as an L = 4 ssm model does
    d = diagnose(task, broken, nll)
    assert isinstance(d, Diagnosis)
    assert d.reason.startswith("mass escapes: 38% of samples lie beyond 10x the data radius")
    assert d.evidence["escaped_fraction"] == pytest.approx(0.38)
    assert f"median distance from the data mean {d.evidence['sample_median_distance']:.3g} vs 3.36" in d.reason


def test_median_drift_nonfinite_divergent_nll_and_collapse_are_flagged():
    task = get_task("gaussian", dim=10, n_train=5000)
    samples, nll = _truth(task)
    centre = task.train.mean(0)
    drift = centre + 8.0 * (samples - centre)  # nothing beyond 10x the radius, but the median is 8x the data's
    assert "mass escapes: 0% of samples" in diagnose(task, drift, nll).reason
    nan = samples.clone()
    nan[3, 2] = math.nan
    assert "non-finite samples: 1 of 2000" in diagnose(task, nan, nll).reason
    d = diagnose(task, samples, torch.full_like(nll, 1.5e12))
    assert "NLL far worse than a Gaussian fit: test NLL 1,500,000,000,000 nats" in d.reason
    assert d.evidence["gaussian_fit_nll"] == pytest.approx(float(nll.mean()), abs=0.1)
    # an NLL only a little worse than the Gaussian fit (less than 1 nat per dimension) is not degenerate
    assert diagnose(task, samples, nll + 5.0) is None
    collapsed = centre + 0.01 * (samples - centre)
    assert diagnose(task, collapsed, nll).reason.startswith("collapse: the samples' spread")
    with pytest.raises(ValueError, match="samples must be"):
        diagnose(task, samples[:, :3], nll)


def test_gaussian_fit_reference_is_the_analytic_gaussian():
    task = get_task("wine")
    x = task.train.double().numpy()
    cov = np.cov(x, rowvar=False, bias=True)
    cov += 1e-6 * np.trace(cov) / len(cov) * np.eye(len(cov))
    exact = -stats.multivariate_normal(x.mean(0), cov).logpdf(task.test.double().numpy())
    adapter = get("gaussian-fit")(task, dim=task.dim, layers=1, seed=0)
    np.testing.assert_allclose(adapter.nll(task.test).numpy(), exact, rtol=1e-9)
    s = adapter.sample(20000).double()
    assert (s.mean(0) - torch.from_numpy(x.mean(0))).abs().max() < 0.05
    # smoothed tasks: the fit is to the smoothed data, covariance + s^2 I
    sm = get_task("checkerboard", smooth=0.375)
    fit = gaussian_fit(sm)
    raw_cov = torch.cov(sm.train.double().T, correction=0)
    torch.testing.assert_close(fit.cov, raw_cov + (0.375**2 + 1e-6 * float((raw_cov.diagonal() + 0.375**2).mean()))
                               * torch.eye(2, dtype=torch.float64))


def _cell(method: str, task: str, **task_options):
    return cell_spec(method, task, layers=1, seed=4, budget=3, task_options=task_options, n_samples=600,
                     checkpoints=0, max_test=400)


def test_truth_rows_equal_the_metrics_of_exact_samples():
    record, _ = run_cell(_cell("truth", "eight_gaussians", smooth=0.2))
    assert record["status"] == "ok", record["reason"]
    task = get_task("eight_gaussians", seed=4, smooth=0.2)
    samples = task.sampler(600, torch.Generator().manual_seed(4))
    nll = -task.log_prob(task.test[:400].double())
    expected = {r["metric"]: r["value"] for r in compute_metrics(task, samples, nll, seed=4,
                                                                 density=lambda x: task.log_prob(x.double()))}
    got = {r["metric"]: r["value"] for r in record["rows"] if r["metric"] in expected}
    assert set(got) == set(expected) and "sliced_wasserstein" in got and "test_nll" in got
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k


def test_truth_without_a_sampler_uses_training_data_and_has_no_nll():
    task = get_task("iris")
    truth = get("truth")(task, dim=4, layers=1, seed=0)
    s = truth.sample(300)  # more than the 120 training rows: repeated permutations
    assert s.shape == (300, 4)
    train_rows = {tuple(r) for r in task.train.tolist()}
    assert all(tuple(r) in train_rows for r in s.tolist())
    from ebflow_bench.adapters import NLLUnavailable

    with pytest.raises(NLLUnavailable, match="no exact density"):
        truth.nll(task.test)
    assert truth.train_step(task.train) == 0.0 and truth.num_params() == 0
