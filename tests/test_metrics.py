"""Metrics against closed forms: MMD^2 and energy distance of Gaussians, sliced Wasserstein of a shift, grid
KL/TV of right and wrong densities, mode-weight error on constructed samples; the registry's error handling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ebflow_bench import metrics, tasks
from ebflow_bench.metrics import (MetricUnavailable, available_metrics, compute_metrics, energy_distance, get_metric,
                                  mmd2_unbiased, register_metric)
from ebflow_bench.tasks import Task, bits_per_dim, get_task

FIXED_NAMES = {"test_nll", "test_bpd", "sliced_wasserstein", "mmd", "energy_distance", "grid_kl", "grid_tv",
               "mode_weight_error", "mode_weight_error_samples", "mode_weight_ess", "mode_weight_outside",
               "log_density_error"}
RUNNER_NAMES = {"step_time", "train_time", "peak_memory", "nll_at_time", "log_z_stderr", "log_z_ess"}


def _plain_task(test: torch.Tensor, **kw) -> Task:
    return Task("plain", test.shape[1], test, test, **kw)


def _randn(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_registry():
    assert FIXED_NAMES <= set(available_metrics("metrics"))
    assert RUNNER_NAMES <= set(available_metrics("runner")) and not RUNNER_NAMES & set(available_metrics("metrics"))
    assert metrics.available() == available_metrics() == sorted(m.name for m in metrics.declared())
    m = get_metric("grid_kl")
    assert m.unit == "nats" and not m.applies(get_task("digits")) and m.applies(get_task("rings", n_train=10, n_test=10))
    for m in metrics.declared():  # every metric declares its label, unit, direction, group and needs once
        assert m.label and m.label != m.name and m.direction in metrics.DIRECTIONS and m.group in metrics.GROUPS
        assert m.needs <= metrics.NEEDS and (m.fn is None) == (m.computed_by == "runner")
    assert get_metric("mmd").direction == "zero" and get_metric("log_z_ess").direction == "higher"
    assert get_metric("mode_weight_error").needs == {"density"} and get_metric("test_nll").needs == {"nll"}
    assert get_metric("mode_weight_error_samples").label == "mode-weight MSE of the samples (negatives for EBMs)"
    assert get_metric("mmd").better(-0.01, 0.02) and get_metric("log_z_ess").better(50, 10)
    with pytest.raises(KeyError, match="unknown metric 'nope'.*mmd"):
        get_metric("nope")
    with pytest.raises(ValueError, match="registered twice"):
        register_metric("mmd", unit="")(lambda task, samples, nll, *, seed: 0.0)
    with pytest.raises(ValueError, match="direction must be one of"):
        register_metric("sideways", unit="", direction="up")(lambda task, samples, nll, *, seed: 0.0)
    with pytest.raises(ValueError, match="recorded by the runner"):
        compute_metrics(get_task("rings", n_train=10, n_test=10), torch.zeros(4, 2), None, names=["step_time"])


def test_mmd_closed_form_for_shifted_gaussians():
    # x ~ N(0, s^2 I), y ~ N(delta, s^2 I), k = exp(-|a-b|^2 / (2h^2)):
    # E k(x, x') = (h^2 / (h^2 + 2 s^2))^(D/2), E k(x, y) = same * exp(-|delta|^2 / (2 (h^2 + 2 s^2)))
    d, s, h = 2, 1.0, 1.5
    delta = torch.tensor([1.0, 0.5], dtype=torch.float64)
    c = (h**2 / (h**2 + 2 * s**2)) ** (d / 2)
    exact = 2 * c * (1 - math.exp(-float(delta @ delta) / (2 * (h**2 + 2 * s**2))))
    vals = [mmd2_unbiased(_randn(1500, d, 2 * r), _randn(1500, d, 2 * r + 1) + delta, h) for r in range(4)]
    assert abs(np.mean(vals) - exact) < 0.1 * exact, (vals, exact)
    same = [mmd2_unbiased(_randn(1500, d, 2 * r), _randn(1500, d, 2 * r + 1), h) for r in range(4)]
    assert abs(np.mean(same)) < 2e-3  # unbiased: zero in expectation for equal distributions
    assert abs(mmd2_unbiased(_randn(500, d, 0), _randn(500, d, 0), h)) < 2 / 500  # identical sets: O(1/n)


def _mean_abs_normal(mu: float, var: float, d: int) -> float:
    """E|Z| for Z ~ N(mu e_1, var I_d), d = 1 (folded normal) or 2 (Rice)."""
    s = math.sqrt(var)
    return stats.foldnorm(abs(mu) / s, scale=s).mean() if d == 1 else stats.rice(abs(mu) / s, scale=s).mean()


@pytest.mark.parametrize("d", [1, 2])
def test_energy_distance_closed_form(d):
    mu = 1.0
    exact = 2 * _mean_abs_normal(mu, 2.0, d) - 2 * _mean_abs_normal(0.0, 2.0, d)
    shift = torch.zeros(d, dtype=torch.float64)
    shift[0] = mu
    vals = [energy_distance(_randn(2000, d, 2 * r), _randn(2000, d, 2 * r + 1) + shift) for r in range(8)]
    assert abs(np.mean(vals) - exact) < 0.08 * exact, (vals, exact)  # ~3 standard errors
    assert abs(energy_distance(_randn(2000, d, 0), _randn(2000, d, 1))) < 0.01


def test_sample_metrics_through_the_registry():
    x = _randn(1000, 3, 0).float()
    task = _plain_task(x)
    n, x64 = len(x), x.double()
    # identical sets: SW is 0; the U-statistics are -O(1/n), exactly (S = the mean over pairs i != j):
    # MMD^2 = -(2/n)(1 - S_k), energy distance = -(2/n) S_|x - x'|
    assert get_metric("sliced_wasserstein")(task, x, None, seed=0) < 1e-6
    h = metrics.task_bandwidth(task)
    assert h == pytest.approx(float(torch.pdist(x64).median()))  # 1000 test points: all of them
    s_k = torch.exp(-torch.pdist(x64).square() / (2 * h**2)).mean()
    assert get_metric("mmd")(task, x, None, seed=0) == pytest.approx(float(-(2 / n) * (1 - s_k)), rel=1e-9)
    assert get_metric("energy_distance")(task, x, None, seed=0) == pytest.approx(-2 / n * float(torch.pdist(x64).mean()),
                                                                                 rel=1e-9)
    # a shift delta: each projection theta moves by theta.delta, so SW_2 = sqrt(E (theta.delta)^2) = |delta|/sqrt(D)
    delta = torch.tensor([0.6, -0.3, 0.9])
    sw = get_metric("sliced_wasserstein")(task, x + delta, None, seed=0)
    assert sw == pytest.approx(float(delta.norm()) / math.sqrt(3), rel=0.08)


def test_sample_metrics_are_deterministic_and_subsample():
    task = _plain_task(_randn(3000, 2, 0).float())
    s = _randn(2500, 2, 1).float()
    a, b, c = (compute_metrics(task, s, None, seed=k) for k in (4, 4, 5))
    assert a == b
    # more than MAX_POINTS points: the seed picks the subsample; at most MAX_POINTS points: the seed is irrelevant
    val = lambda rows, m: next(r["value"] for r in rows if r["metric"] == m)
    assert val(a, "mmd") != val(c, "mmd") and val(a, "energy_distance") != val(c, "energy_distance")
    small = _plain_task(task.test[:metrics.MAX_POINTS])
    assert val(compute_metrics(small, s[:500], None, seed=4), "mmd") == val(compute_metrics(small, s[:500], None, seed=5), "mmd")


def test_grid_metrics_right_vs_wrong_density():
    task = get_task("8gaussians", n_train=10, n_test=10)
    g = torch.Generator().manual_seed(1)
    right = task.sampler(4000, g)
    wrong = get_task("rings", n_train=10, n_test=10).sampler(4000, g) / 2.5  # rings squeezed into the bounds
    kl_right = get_metric("grid_kl")(task, right, None, seed=0)
    kl_wrong = get_metric("grid_kl")(task, wrong, None, seed=0)
    # the histogram estimate of exact samples is biased by ~ (cells in the support) / (2 n)
    assert kl_right < 0.08 and kl_wrong > 1.0, (kl_right, kl_wrong)
    tv_right = get_metric("grid_tv")(task, right, None, seed=0)
    tv_wrong = get_metric("grid_tv")(task, wrong, None, seed=0)
    assert tv_right < 0.1 and tv_wrong > 0.5
    far = torch.full((100, 2), 10.0)  # every sample outside the bounds: TV is exactly 1
    assert get_metric("grid_tv")(task, far, None, seed=0) == pytest.approx(1.0)


def test_grid_probabilities_integrate_the_density():
    task = get_task("checkerboard", n_train=10, n_test=10)
    p, _ = metrics.grid_probabilities(task)
    # 20 x 20 cells of 0.4 on [-4, 4]^2: the 8 black 2x2 squares hold 25 cells each, 1/200 per cell
    assert p.sum() == pytest.approx(1.0) and int((p > 0).sum()) == 200
    assert torch.allclose(p[p > 0], torch.full((200,), 1 / 200, dtype=torch.float64))


def test_mode_weight_error_of_samples_exact():
    task = get_task("mixture-4modes", n_train=10, n_test=10)
    centres = task.mode_means
    samples = torch.cat([centres[k] + 0.1 for k in range(4) for _ in range(25)]).reshape(100, 2)
    # fractions 1/4 each vs weights 0.1, 0.2, 0.3, 0.4
    exact = (0.15**2 + 0.05**2 + 0.05**2 + 0.15**2) / 4
    m = get_metric("mode_weight_error_samples")
    assert m(task, samples, None, seed=0) == pytest.approx(exact)
    counts = [10, 20, 30, 40]
    samples = torch.cat([centres[k].repeat(c, 1) for k, c in enumerate(counts)])
    assert m(task, samples, None, seed=0) == pytest.approx(0.0, abs=1e-14)
    # the density metric needs a density: unavailable without one, whatever the samples
    rows = {r["metric"]: r for r in compute_metrics(task, samples, None, seed=0)}
    assert rows["mode_weight_error"]["status"] == "unavailable" and "density" in rows["mode_weight_error"]["reason"]


def test_compute_metrics_statuses():
    task = get_task("digits")
    samples = task.train[:500]
    nll = torch.full((300,), 40.0)
    rows = {r["metric"]: r for r in compute_metrics(task, samples, nll, seed=0)}
    assert set(rows) == {"test_nll", "test_bpd", "sliced_wasserstein", "mmd", "energy_distance"}
    assert rows["test_nll"]["value"] == 40.0 and rows["test_nll"]["unit"] == "nats"
    assert rows["test_bpd"]["value"] == pytest.approx(bits_per_dim(40.0, task))
    assert all(r["status"] == "ok" for r in rows.values())
    # no likelihood: the NLL metrics are unavailable with a reason, the sample metrics still run
    rows = {r["metric"]: r for r in compute_metrics(task, samples, None, seed=0)}
    for m in ("test_nll", "test_bpd"):
        assert rows[m]["status"] == "unavailable" and "likelihood" in rows[m]["reason"]
        assert math.isnan(rows[m]["value"])
    assert rows["mmd"]["status"] == "ok"
    # non-finite samples: every sample metric fails with the reason, the NLL still counts
    bad = samples.clone()
    bad[3, 5] = float("nan")
    rows = {r["metric"]: r for r in compute_metrics(task, bad, nll, seed=0)}
    assert rows["test_nll"]["status"] == "ok"
    for m in ("sliced_wasserstein", "mmd", "energy_distance"):
        assert rows[m]["status"] == "failed" and "1 non-finite" in rows[m]["reason"] and math.isnan(rows[m]["value"])
    # wrong sample shape: a clear failure, not an exception
    rows = {r["metric"]: r for r in compute_metrics(task, samples[:, :10], nll, seed=0)}
    assert rows["mmd"]["status"] == "failed" and "expected [n >= 2, 64]" in rows["mmd"]["reason"]


def test_compute_metrics_survives_a_broken_metric(monkeypatch):
    registry = dict(metrics._METRICS)
    monkeypatch.setattr(metrics, "_METRICS", registry)

    @register_metric("boom", unit="")
    def boom(task, samples, nll, *, seed):
        raise ZeroDivisionError("bad")

    @register_metric("nan_valued", unit="")
    def nan_valued(task, samples, nll, *, seed):
        return float("nan")

    @register_metric("not_here", unit="")
    def not_here(task, samples, nll, *, seed):
        raise MetricUnavailable("no such thing for this method")

    task = get_task("rings", n_train=10, n_test=200)
    rows = {r["metric"]: r for r in compute_metrics(task, task.test, -task.log_prob(task.test), seed=0)}
    assert rows["boom"]["status"] == "failed" and rows["boom"]["reason"] == "ZeroDivisionError: bad"
    assert rows["nan_valued"]["status"] == "failed" and "non-finite" in rows["nan_valued"]["reason"]
    assert rows["not_here"]["status"] == "unavailable"
    assert rows["grid_kl"]["status"] == "ok" and "mode_weight_error" not in rows
    assert rows["test_nll"]["value"] == pytest.approx(float(-task.log_prob(task.test).mean()))


def test_log_density_error_against_known_densities():
    task = get_task("gaussian", dim=3, n_train=10, n_test=400)
    m = get_metric("log_density_error")
    assert m.applies(task) and not m.applies(get_task("digits"))
    true_nll = -task.log_prob(task.test)
    assert m(task, task.test, true_nll, seed=0) == pytest.approx(0.0, abs=1e-10)
    # a density off by a constant factor e^0.3 everywhere: every squared error is 0.09
    assert m(task, task.test, true_nll + 0.3, seed=0) == pytest.approx(0.09, rel=1e-6)
    # per-point errors delta_i: the metric is the median of delta_i^2 (not of delta_i, not the mean)
    delta = torch.linspace(-2.0, 1.0, 400, dtype=true_nll.dtype)
    assert m(task, task.test, true_nll + delta, seed=0) == pytest.approx(float(delta.double().square().median()),
                                                                          rel=1e-5)
    # NLL on an evaluation subset (tasks.evaluation_rows): compared with the same rows, not the first ones
    from ebflow_bench.tasks import evaluation_indices

    sub = true_nll[evaluation_indices(task, 50)]
    assert m(task, task.test, sub + 0.3, seed=0) == pytest.approx(0.09, rel=1e-6)
    assert m(task, task.test, true_nll[:50] + 0.3, seed=0) > 0.5  # the first rows are other rows
    with pytest.raises(MetricUnavailable):
        m(task, task.test, None, seed=0)


def test_mmd_of_collapsed_samples_is_finite_and_large():
    task = get_task("gaussian", dim=4, n_train=10, n_test=500)
    collapsed = task.test.mean(0).repeat(400, 1)  # every sample at the data mean
    rows = {r["metric"]: r for r in compute_metrics(task, collapsed, None, seed=0, names=["mmd"])}
    assert rows["mmd"]["status"] == "ok" and math.isfinite(rows["mmd"]["value"])
    exact = task.sampler(2000, torch.Generator().manual_seed(3))
    good = get_metric("mmd")(task, exact, None, seed=0)
    assert rows["mmd"]["value"] > 0.05 and rows["mmd"]["value"] > 50 * abs(good)
    flat = _plain_task(torch.zeros(50, 2))  # a test set with no spread has no bandwidth: a clear error
    rows = {r["metric"]: r for r in compute_metrics(flat, torch.randn(10, 2), None, seed=0, names=["mmd"])}
    assert rows["mmd"]["status"] == "failed"
    assert "median pairwise distance of its test points is 0" in rows["mmd"]["reason"]


def test_mmd_uses_one_kernel_per_task(monkeypatch):
    """Two methods on one task (very different samples, one collapsed) are scored with the same bandwidth, the
    median pairwise distance of the fixed test subsample; another data seed gives another task and bandwidth."""
    task = get_task("eight_gaussians", seed=0, n_train=10, n_test=3000)
    used = []
    real = metrics.mmd2_unbiased
    monkeypatch.setattr(metrics, "mmd2_unbiased", lambda x, y, h: used.append(h) or real(x, y, h))
    a = get_metric("mmd")(task, task.sampler(2000, torch.Generator().manual_seed(1)), None, seed=0)
    b = get_metric("mmd")(task, torch.full((2000, 2), 0.3), None, seed=1)
    assert len(used) == 2 and used[0] == used[1] and a < b
    idx = torch.randperm(3000, generator=torch.Generator().manual_seed(0))[:metrics.MMD_BANDWIDTH_POINTS]
    assert used[0] == pytest.approx(float(torch.pdist(task.test[idx].double()).median()))
    other = get_task("eight_gaussians", seed=1, n_train=10, n_test=3000)
    assert metrics.task_bandwidth(other) != used[0]


def _tilted_ebm_adapter(task):
    """A ULA-EBM adapter whose energy makes its tilted density exp(-E) rho exactly the task's mixture:
    E(x) = log rho(x) - log p(x) + 5 (the constant is arbitrary: the density's offset must not matter)."""
    from ebflow_bench.adapters.flowmc import ULAEBMAdapter

    a = ULAEBMAdapter(task, dim=task.dim, layers=1, seed=0, n_chains=8, n_is=512)
    rho = a.trainer.ebm.base

    class ExactEnergy(torch.nn.Module):
        def forward(self, x):
            return rho.log_prob(x) - task.log_prob(x.double()).to(x.dtype) + 5.0

    a.trainer.ebm.energy = ExactEnergy()
    return a


def test_ebm_mode_weights_from_its_density_by_quadrature():
    """A tilted EBM that is exactly the (0.1, 0.2, 0.3, 0.4) mixture: quadrature of its own density recovers the
    weights to 1e-3 whatever its samples say, and the mass outside the grid is negligible."""
    task = get_task("mixture-4modes", n_train=10, n_test=500)
    a = _tilted_ebm_adapter(task)
    density = a.density_fn()
    x = task.test[:7]
    assert torch.allclose(density(x), task.log_prob(x.double()) - 5.0, atol=1e-4)  # -E + log rho = log p - 5
    masses = metrics.mode_masses_quadrature(task, density)
    assert torch.allclose(masses, task.mode_weights.double(), atol=1e-3), masses
    wrong = task.mode_means[[0] * 50 + [3] * 50]  # samples (e.g. stuck chains) in two modes, half each
    rows = {r["metric"]: r for r in compute_metrics(task, wrong, None, seed=0, density=density)}
    assert rows["mode_weight_error"]["status"] == "ok" and rows["mode_weight_error"]["value"] < 1e-6
    assert rows["mode_weight_error_samples"]["value"] == pytest.approx((0.4**2 + 0.2**2 + 0.3**2 + 0.1**2) / 4)
    assert 0 <= rows["mode_weight_outside"]["value"] < 1e-3 and "mode_weight_ess" not in rows
    # a density with the weights reversed: MSE = mean((0.3, 0.1, -0.1, -0.3)^2) = 0.05
    rev = tasks._iso_mixture_log_prob(task.mode_means.double(), torch.full((4,), 0.05, dtype=torch.float64),
                                      torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64))
    assert get_metric("mode_weight_error")(task, wrong, None, seed=0, density=rev) == pytest.approx(0.05, abs=1e-4)


def _mixture4d(weights):
    means = 2.0 * torch.tensor([[1, 1, 0, 0], [-1, 1, 0, 0], [0, -1, 1, 0], [0, -1, -1, 1]], dtype=torch.float64)
    variances = torch.tensor([0.1, 0.2, 0.15, 0.1], dtype=torch.float64)
    task = tasks._mixture_task("mix4d", 0, 10, 1000, means, variances, torch.tensor(weights, dtype=torch.float64),
                               None, "4-D test mixture", "test")
    return task, means, variances


def test_ebm_mode_weights_by_importance_sampling_in_4d():
    task, means, variances = _mixture4d([0.1, 0.2, 0.3, 0.4])
    density = tasks._iso_mixture_log_prob(means, variances, torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64))
    masses, ess, y, w = metrics.mode_masses_snis(task, density, seed=0)
    assert torch.allclose(masses, torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64), atol=0.02), masses
    assert metrics.MIN_MODE_ESS < ess <= metrics.SNIS_DRAWS and w.sum() == pytest.approx(1.0)
    rows = {r["metric"]: r for r in compute_metrics(task, task.test, None, seed=0, density=density)}
    assert rows["mode_weight_error"]["status"] == "ok"
    assert rows["mode_weight_error"]["value"] == pytest.approx(0.05, abs=0.005)
    assert rows["mode_weight_ess"]["value"] == pytest.approx(ess) and "mode_weight_outside" not in rows
    assert rows["mode_weight_error_samples"]["value"] < 1e-3  # the test points themselves have the true weights
    # a density far from every proposal component: a handful of draws carry all the weight -> flagged
    spike = lambda x: -0.5 * (x.double() - 6.0).square().sum(-1) / 0.01
    rows = {r["metric"]: r for r in compute_metrics(task, task.test, None, seed=0, density=spike)}
    assert rows["mode_weight_ess"]["value"] < metrics.MIN_MODE_ESS
    assert rows["mode_weight_error"]["status"] == "unreliable" and "ESS" in rows["mode_weight_error"]["reason"]
    assert math.isfinite(rows["mode_weight_error"]["value"])


def test_nll_reliability_thresholds():
    assert metrics.nll_reliability(4000.0, 4096) == ("ok", "")
    assert metrics.nll_reliability(metrics.MIN_LOG_Z_ESS, 4096)[0] == "ok"
    status, reason = metrics.nll_reliability(99.0, 4096)
    assert status == "unreliable" and "99.0 of 4096" in reason and "biased low" in reason
    assert metrics.nll_reliability(500.0, 100_000)[0] == "unreliable"  # 0.5% of the draws
    assert metrics.nll_reliability(float("nan"), 4096)[0] == "unreliable"
    with pytest.raises(ValueError, match="positive integer"):
        metrics.nll_reliability(10.0, 0)


def test_low_log_z_ess_makes_the_nll_unreliable():
    """estimate_log_z's ESS feeds nll_reliability: a proposal much narrower than the EBM gives degenerate
    weights (log Z biased low, small stderr) and an unreliable NLL; a matching proposal does not."""
    from baselines.flowmc_ebm import EnergyNet, GaussianBase, TiltedEBM, estimate_log_z

    ebm = TiltedEBM(EnergyNet(16, 8, 1), GaussianBase(16, 3.0))  # E == 0: the EBM is N(0, 9 I), log Z = 0
    good = estimate_log_z(ebm.log_unnorm, GaussianBase(16, 3.0), 4096, torch.Generator().manual_seed(0))
    bad = estimate_log_z(ebm.log_unnorm, GaussianBase(16, 1.0), 4096, torch.Generator().manual_seed(0))
    assert good.ess == pytest.approx(4096) and abs(good.log_z) < 1e-9
    assert metrics.nll_reliability(good.ess, good.n) == ("ok", "")
    assert bad.ess < metrics.MIN_LOG_Z_ESS and bad.log_z < -1  # biased low
    assert metrics.nll_reliability(bad.ess, bad.n)[0] == "unreliable"


def test_density_fn_defaults_to_minus_nll_and_is_none_without_likelihood():
    from ebflow_bench.adapters import NLLUnavailable, get

    task = get_task("mixture-4modes", n_train=200, n_test=50)
    cls = get("mle-lu")
    a = cls(task, dim=2, layers=2, seed=0)
    x = task.test[:9]
    assert torch.allclose(a.density_fn()(x), -a.nll(x).double().cpu())

    class NoLikelihood(cls):
        def nll(self, x):
            raise NLLUnavailable("no likelihood here")

    b = NoLikelihood(task, dim=2, layers=2, seed=0)
    assert b.density_fn() is None
    rows = {r["metric"]: r for r in compute_metrics(task, task.test, None, seed=0, density=b.density_fn())}
    assert rows["mode_weight_error"]["status"] == "unavailable" and rows["mode_weight_error_samples"]["status"] == "ok"
