"""Energy-objective flows: the energy score estimator, the flow generator, SAEF and their adapters."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import gamma, hyp1f1

from baselines.energy_flows import FlowGenerator, SemiAutoregressiveFlow, energy_score_loss
from ebflow.architectures import fully_connected
from ebflow.preprocessing import LogitTransform
from ebflow_bench.adapters.base import NLLUnavailable
from ebflow_bench.adapters.energy_flow import EnergyFlow, EnergyFlowSAEF
from ebflow_bench.tasks import Task


def rice_moment(nu: float, sigma2: float, beta: float) -> float:
    """E||W||^beta for W ~ N(nu, sigma2 I_2): (2 sigma2)^(beta/2) Gamma(1 + beta/2) 1F1(-beta/2; 1; -|nu|^2 / (2 sigma2))."""
    return (2 * sigma2) ** (beta / 2) * gamma(1 + beta / 2) * hyp1f1(-beta / 2, 1.0, -nu ** 2 / (2 * sigma2))


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """V-statistic 2 E||X-Y|| - E||X-X'|| - E||Y-Y'|| between two sample sets."""
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


def gaussian_target(n: int) -> torch.Tensor:
    mean = torch.tensor([1.0, -0.5])
    chol = torch.tensor([[1.0, 0.0], [0.6, 0.5]])
    return mean + torch.randn(n, 2) @ chol.T


def toy_task(train: torch.Tensor, image_shape=None) -> Task:
    return Task(name="toy", dim=train.shape[1], train=train, test=train[:256], image_shape=image_shape)


# ---------------------------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("beta", [0.5, 1.0, 1.5])
def test_energy_score_unbiased_against_closed_form(beta):
    """Mean of the estimator over y ~ Q and m draws of P equals E_Q ES_beta(P, y) (closed form in 2-D)."""
    gen = torch.Generator().manual_seed(1)
    mu1, s1, mu2, s2 = torch.tensor([0.3, -0.2]), 0.8, torch.tensor([1.0, 0.5]), 1.3
    n, m = 100_000, 3
    y = mu2 + s2 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    x = mu1 + s1 * torch.randn(m, n, 2, generator=gen, dtype=torch.float64)
    est = energy_score_loss(x, y, beta, reduction="none")
    nu = float((mu1 - mu2).norm())
    exact = rice_moment(nu, s1 ** 2 + s2 ** 2, beta) - 0.5 * rice_moment(0.0, 2 * s1 ** 2, beta)
    se = float(est.std()) / math.sqrt(n)
    assert abs(float(est.mean()) - exact) < 4 * se, (float(est.mean()), exact, se)
    # the check has power: the V-statistic (pairs i = j included) is biased by E||X-X'||^b / (2m), >> 4 se
    assert rice_moment(0.0, 2 * s1 ** 2, beta) / (2 * m) > 10 * se


def test_energy_score_matches_explicit_sums():
    """Symmetric form: mean_i ||x_i - y||^b - 1/2 mean_{i != j} ||x_i - x_j||^b, averaged over the batch."""
    m, b, d, beta = 4, 3, 5, 0.7
    x, y = torch.randn(m, b, d, dtype=torch.float64), torch.randn(b, d, dtype=torch.float64)
    expected = []
    for n in range(b):
        fit = sum(float((x[i, n] - y[n]).norm()) ** beta for i in range(m)) / m
        pairs = [(i, j) for i, j in itertools.product(range(m), repeat=2) if i != j]
        spread = sum(float((x[i, n] - x[j, n]).norm()) ** beta for i, j in pairs) / len(pairs)
        expected.append(fit - 0.5 * spread)
    got = energy_score_loss(x, y, beta, reduction="none")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    assert float(energy_score_loss(x, y, beta)) == pytest.approx(float(np.mean(expected)), rel=1e-12)


@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_energy_score_gradient_guarded_at_zero(beta):
    """Coincident points: exact value and finite gradients (no NaN from the norm at 0)."""
    y = torch.randn(4, 3)
    x = y.unsqueeze(0).repeat(2, 1, 1).requires_grad_(True)
    loss = energy_score_loss(x, y, beta)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert torch.isfinite(x.grad).all()
    # finite differences away from the kink agree with autograd
    x2 = torch.randn(3, 4, 3, dtype=torch.float64, requires_grad=True)
    y2 = torch.randn(4, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: energy_score_loss(s, y2, beta), (x2,))


@pytest.mark.parametrize("beta", [0.0, 2.0, -1.0, 2.5, float("nan")])
def test_invalid_beta_raises(beta):
    with pytest.raises(ValueError, match="beta must lie in the open interval"):
        energy_score_loss(torch.randn(2, 3, 2), torch.randn(3, 2), beta)


def test_invalid_m_and_shapes_raise():
    with pytest.raises(ValueError, match="m .* must be an integer >= 2"):
        energy_score_loss(torch.randn(1, 3, 2), torch.randn(3, 2))
    with pytest.raises(ValueError, match="expected \\[B, D\\]"):
        energy_score_loss(torch.randn(2, 3, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="m .* must be an integer >= 2"):
        FlowGenerator(fully_connected(2, 1)).energy_loss(torch.randn(3, 2), m=1)
    with pytest.raises(ValueError, match="beta"):
        SemiAutoregressiveFlow(2, 1).energy_loss(torch.randn(3, 2), beta=2.0)
    with pytest.raises(ValueError, match="beta"):
        EnergyFlow(toy_task(torch.randn(64, 2)), dim=2, layers=1, seed=0, beta=3.0)
    with pytest.raises(ValueError, match="energy-flow-saef: m = 1: must be >= 2"):  # the declared range
        EnergyFlowSAEF(toy_task(torch.randn(64, 2)), dim=2, layers=1, seed=0, m=1)


def test_energy_score_fits_a_gaussian():
    """beta = 1, pathwise samples of N(mu, L L^T), Adam: the minimiser recovers the data's mean and covariance."""
    mean = torch.tensor([1.0, -2.0])
    cov = torch.tensor([[2.0, 0.8], [0.8, 1.0]])
    chol = torch.linalg.cholesky(cov)
    mu = torch.zeros(2, requires_grad=True)
    raw = torch.zeros(2, 2, requires_grad=True)
    opt = torch.optim.Adam([mu, raw], lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 400)

    def factor() -> torch.Tensor:
        return torch.tril(raw, -1) + torch.diag(raw.diagonal().exp())

    for _ in range(400):
        y = mean + torch.randn(512, 2) @ chol.T
        x = mu + torch.randn(4, 512, 2) @ factor().T
        loss = energy_score_loss(x, y, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    fitted = (factor() @ factor().T).detach()
    assert torch.allclose(mu.detach(), mean, atol=0.06), mu
    assert torch.allclose(fitted, cov, atol=0.12), fitted


# ------------------------------------------------------------------------------------- flow generator
def brute_force_log_prob(gen: FlowGenerator, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x = G(eps) and log N(eps) - log|det dG/deps| with the full Jacobian from autograd (one point at a time)."""
    xs, logps = [], []
    for e in eps:
        def g(v: torch.Tensor) -> torch.Tensor:
            flow = gen.flow
            return flow.postprocess(flow.flow(v[None])[0])[0]
        jac = torch.autograd.functional.jacobian(g, e)
        xs.append(g(e))
        log_base = -0.5 * float(e @ e) - 0.5 * e.numel() * math.log(2 * math.pi)
        logps.append(log_base - torch.linalg.slogdet(jac)[1])
    return torch.stack(xs), torch.stack(logps)


@pytest.mark.parametrize("with_logit", [False, True])
def test_flow_generator_log_prob_is_change_of_variables(with_logit):
    torch.manual_seed(3)
    flow = fully_connected(3, 3, preprocessing=LogitTransform() if with_logit else None, init="orthogonal")
    gen = FlowGenerator(flow).double()
    with torch.no_grad():  # move away from the symmetric initialisation
        for p in gen.parameters():
            p.add_(0.2 * torch.randn_like(p))
    eps = torch.randn(4, 3, dtype=torch.float64)
    x, expected = brute_force_log_prob(gen, eps)
    got = gen.log_prob(x)
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-8)
    if with_logit:
        assert bool(((x > 0) & (x < 1)).all())


def test_flow_generator_trains_and_nll_is_exact():
    """The EBFlow dense architecture as a generator: loss and energy distance drop, every parameter gets a
    gradient, the exact NLL is finite and agrees with brute-force change of variables after training."""
    torch.manual_seed(0)
    gen = FlowGenerator(fully_connected(2, 2))
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    test = gaussian_target(1000)
    with torch.no_grad():
        ed0 = energy_distance(gen.sample(1000), test)
    losses = []
    for step in range(300):
        loss = gen.energy_loss(gaussian_target(256), m=2, beta=1.0)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for name, p in gen.named_parameters():
                assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        ed1 = energy_distance(gen.sample(1000), test)
        nll = -gen.log_prob(test)
    # the expected score's minimum (P = Q) is 1/2 E||Y - Y'|| (0.753 here): the loss drops onto it
    optimum = 0.5 * float(torch.pdist(test).mean())
    assert np.mean(losses[:20]) > optimum + 0.2
    assert abs(np.mean(losses[-50:]) - optimum) < 0.04, (np.mean(losses[-50:]), optimum)
    assert ed1 < 0.2 * ed0 and ed1 < 0.05, (ed0, ed1)
    assert torch.isfinite(nll).all()
    # data entropy of the target is 2.14 nats; the trained model should be in that neighbourhood
    assert 1.9 < float(nll.mean()) < 3.5, float(nll.mean())
    gen64 = gen.double()
    eps = torch.randn(3, 2, dtype=torch.float64)
    x, expected = brute_force_log_prob(gen64, eps)
    torch.testing.assert_close(gen64.log_prob(x), expected, rtol=1e-8, atol=1e-8)


def test_flow_generator_accepts_normflows():
    normflows = pytest.importorskip("normflows")
    torch.manual_seed(0)
    flows = []
    for i in range(2):
        net = normflows.nets.MLP([1, 16, 2], init_zeros=True)
        flows += [normflows.flows.AffineCouplingBlock(net), normflows.flows.Permute(2, mode="swap")]
    model = normflows.NormalizingFlow(normflows.distributions.DiagGaussian(2), flows)
    gen = FlowGenerator(model, dim=2)
    loss = gen.energy_loss(gaussian_target(64), m=3, beta=0.5)
    loss.backward()
    assert all(p.grad is not None for p in gen.parameters() if p.requires_grad)
    x = torch.randn(5, 2)
    torch.testing.assert_close(gen.log_prob(x), model.log_prob(x))
    with pytest.raises(ValueError, match="dim="):
        FlowGenerator(model)
    with pytest.raises(TypeError, match="neither"):
        FlowGenerator(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------- no determinants
@pytest.fixture
def no_determinants(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a determinant or linear solve was computed")

    for mod, names in ((torch, ("slogdet", "det", "logdet")),
                       (torch.linalg, ("slogdet", "det", "solve", "inv"))):
        for name in names:
            monkeypatch.setattr(mod, name, forbidden)


def test_training_step_computes_no_determinant(no_determinants):
    task = toy_task(gaussian_target(512))
    for cls in (EnergyFlow, EnergyFlowSAEF):
        adapter = cls(task, dim=2, layers=2, seed=0)
        for _ in range(3):
            assert math.isfinite(adapter.train_step(task.train[:128]))
        assert adapter.sample(10).shape == (10, 2)
    # the patch is live: the exact NLL does need the linear log-dets and solves
    with pytest.raises(AssertionError, match="determinant or linear solve"):
        EnergyFlow(task, dim=2, layers=2, seed=0).nll(task.test[:4])


# -------------------------------------------------------------------------------------------- SAEF
@pytest.mark.parametrize("dim,k", [(2, 1), (5, 2), (4, 4)])
def test_saef_shapes_and_causality(dim, k):
    torch.manual_seed(0)
    model = SemiAutoregressiveFlow(dim, k, hidden=16, num_hidden=2, context=4)
    s = model.sample(7)
    assert s.shape == (7, dim) and s.dtype == torch.float32 and torch.isfinite(s).all()
    assert model.double().sample(3).dtype == torch.float64
    model.float()
    # block b's context depends only on the data blocks before b
    y = torch.randn(1, dim, requires_grad=True)
    ctx = model._contexts(y)
    for b in range(model.n_blocks):
        (g,) = torch.autograd.grad(ctx[0, b].sum(), y, retain_graph=True, allow_unused=True)
        g = torch.zeros(dim) if g is None else g[0]
        assert float(g[b * k:].abs().sum()) == 0.0
        if b > 0:
            assert float(g[:b * k].abs().sum()) > 0.0  # and it does see them


@pytest.mark.parametrize("dim,k", [(2, 1), (4, 2)])
def test_saef_training_lowers_energy_distance(dim, k):
    torch.manual_seed(0)
    if dim == 2:
        sampler = gaussian_target
    else:  # correlated 4-D: second block = rotation of the first + noise
        def sampler(n: int) -> torch.Tensor:
            a = torch.randn(n, 2) * torch.tensor([1.0, 0.3])
            return torch.cat([a, a.flip(1) + 0.2 * torch.randn(n, 2)], dim=1)
    adapter = EnergyFlowSAEF(toy_task(sampler(256)), dim=dim, layers=2, seed=0, block_size=k, hidden=64,
                             lr=3e-3)
    test = sampler(1000)
    ed0 = energy_distance(adapter.sample(1000), test)
    for _ in range(300):
        adapter.train_step(sampler(256))
    ed1 = energy_distance(adapter.sample(1000), test)
    assert ed1 < 0.1 * ed0 and ed1 < 0.05, (ed0, ed1)
    with pytest.raises(NLLUnavailable, match="no tractable density"):
        adapter.nll(test)


def test_saef_invalid_configuration():
    with pytest.raises(ValueError, match="block_size"):
        SemiAutoregressiveFlow(3, 4)
    with pytest.raises(ValueError, match="n_blocks - 1"):
        SemiAutoregressiveFlow(100, 1, hidden=16)


# ---------------------------------------------------------------------------------------- adapters
def test_energy_flow_adapter_contract_on_image_task():
    torch.manual_seed(0)
    train = torch.rand(128, 16)
    adapter = EnergyFlow(toy_task(train, image_shape=(1, 4, 4)), dim=16, layers=2, seed=0)
    assert adapter.describe() == {"method": "energy-flow", "family": "energy-flow", "objective": "energy-score"}
    assert adapter.num_params() == 2 * (16 * 16 + 16)
    loss = adapter.train_step(train[:64])
    assert math.isfinite(loss)
    s = adapter.sample(20)
    assert s.shape == (20, 16) and s.dtype == torch.float32 and s.device.type == "cpu"
    assert bool(((s > -1e-5) & (s < 1 + 1e-5)).all())  # MaP: samples live in the pixel range
    nll = adapter.nll(train[:10])
    assert nll.shape == (10,) and torch.isfinite(nll).all()
    saef = EnergyFlowSAEF(toy_task(train, image_shape=(1, 4, 4)), dim=16, layers=1, seed=0)
    assert saef.model.block_size == 4
    s = saef.sample(5)
    assert bool(((s > 0) & (s < 1)).all())
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        EnergyFlow(toy_task(train), dim=16, layers=2, seed=0, nonsense=1)
