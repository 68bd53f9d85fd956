"""flowMC-EBM peer (baselines.flowmc_ebm) and its adapters: sampler invariance, the 2:1 mixture of the paper's
motivating example, importance-sampling log Z against closed forms, and argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from baselines.flowmc_ebm import (EnergyNet, FlowMCEBM, GaussianBase, RealNVP, TiltedEBM, ULAEBM, estimate_log_z,
                                  flowmc, isir, mala, mode_weights, ula)
from ebflow_bench.adapters.flowmc import FlowMCEBMAdapter, ULAEBMAdapter
from ebflow_bench.tasks import Task

# --------------------------------------------------------------------------- known 2-D targets

GAUSS_MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
GAUSS_COV = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
MIX_MEANS = torch.tensor([[-1.5, -1.5], [1.5, 1.5]], dtype=torch.float64)
MIX_VARS = torch.tensor([0.05, 0.1], dtype=torch.float64)
MIX_WEIGHTS = torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)


def gauss_log_prob(x: Tensor) -> Tensor:
    return torch.distributions.MultivariateNormal(GAUSS_MEAN, GAUSS_COV).log_prob(x)


def gauss_sample(n: int, g: torch.Generator) -> Tensor:
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return GAUSS_MEAN + z @ torch.linalg.cholesky(GAUSS_COV).T


def mix_log_prob(x: Tensor) -> Tensor:
    d2 = (x[:, None, :] - MIX_MEANS).pow(2).sum(-1)
    comp = -0.5 * d2 / MIX_VARS - torch.log(2 * math.pi * MIX_VARS)
    return torch.logsumexp(comp + MIX_WEIGHTS.log(), dim=1)


def mix_sample(n: int, g: torch.Generator) -> Tensor:
    k = torch.multinomial(MIX_WEIGHTS, n, replacement=True, generator=g)
    return MIX_MEANS[k] + MIX_VARS[k].sqrt()[:, None] * torch.randn(n, 2, generator=g, dtype=torch.float64)


def mix_moments() -> tuple[Tensor, Tensor]:
    mean = MIX_WEIGHTS @ MIX_MEANS
    second = sum(w * (torch.outer(m, m) + v * torch.eye(2, dtype=torch.float64))
                 for w, m, v in zip(MIX_WEIGHTS, MIX_MEANS, MIX_VARS))
    return mean, second - torch.outer(mean, mean)


TARGETS = {
    "gaussian": (gauss_log_prob, gauss_sample, lambda: (GAUSS_MEAN, GAUSS_COV)),
    "mixture": (mix_log_prob, mix_sample, mix_moments),
}


def broad_proposal(sigma: float) -> GaussianBase:
    """A fixed broad Gaussian proposal for i-SIR, in float64 like the targets."""
    return GaussianBase(2, sigma).double()


def pooled_moments(chains: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    x = torch.cat(chains)
    return x.mean(0), torch.cov(x.T), x


def check_moments(name: str, chains: list[Tensor]) -> None:
    mean, cov, x = pooled_moments(chains)
    true_mean, true_cov = TARGETS[name][2]()
    assert torch.allclose(mean, true_mean, atol=0.03), (mean, true_mean)
    assert torch.allclose(cov, true_cov, atol=0.03), (cov, true_cov)
    if name == "mixture":
        w = mode_weights(x, MIX_MEANS)
        assert torch.allclose(w, MIX_WEIGHTS, atol=0.03), w


# --------------------------------------------------------------------------- sampler invariance


@pytest.mark.parametrize("name", ["gaussian", "mixture"])
def test_isir_leaves_target_invariant(name):
    log_p, sample, _ = TARGETS[name]
    g = torch.Generator().manual_seed(1)
    proposal = broad_proposal(2.5)
    x = sample(10_000, g)
    chains, moved = [], []
    for _ in range(15):
        x, rate = isir(log_p, proposal, x, n_proposals=16, generator=g)
        chains.append(x)
        moved.append(rate)
    assert 0.1 < sum(moved) / len(moved) < 1.0  # the kernel really moves the chains
    check_moments(name, chains)


@pytest.mark.parametrize("name,step", [("gaussian", 0.2), ("mixture", 0.01)])
def test_mala_leaves_target_invariant(name, step):
    log_p, sample, _ = TARGETS[name]
    g = torch.Generator().manual_seed(2)
    x = sample(20_000, g)
    chains, rates = [], []
    for _ in range(10):
        x, rate = mala(log_p, x, step, 2, generator=g)
        chains.append(x)
        rates.append(rate)
    assert 0.3 < sum(rates) / len(rates) < 1.0
    check_moments(name, chains)


def test_ula_at_same_step_is_biased():
    """The invariance checks can fail: ULA at MALA's step 0.2 inflates the small-eigenvalue direction.

    For a Gaussian with covariance eigenvalue lam, ULA's stationary variance is lam / (1 - h / (2 lam)):
    0.2 -> 0.4 along (1, -1) here."""
    g = torch.Generator().manual_seed(3)
    x = gauss_sample(5000, g)
    for _ in range(60):
        x = ula(gauss_log_prob, x, 0.2, 1, generator=g)
    u = torch.tensor([1.0, -1.0], dtype=torch.float64) / math.sqrt(2)
    var_u = float((x @ u).var())
    assert abs(var_u - 0.4) < 0.04, var_u


def test_flowmc_combines_isir_and_mala():
    g = torch.Generator().manual_seed(4)
    x = mix_sample(5000, g)
    x, info = flowmc(mix_log_prob, broad_proposal(2.5), x, n_proposals=8, mala_steps=3, step=0.01,
                     repeats=3, generator=g)
    assert 0.1 < info["isir_accept"] < 1 and 0.5 < info["mala_accept"] <= 1
    w = mode_weights(x, MIX_MEANS)
    assert torch.allclose(w, MIX_WEIGHTS, atol=0.03), w


# --------------------------------------------------------------------------- models


def test_initial_ebm_and_flow_equal_the_base():
    torch.manual_seed(0)
    base = GaussianBase(3, sigma=1.7)
    energy = EnergyNet(3, hidden=16, depth=2)
    flow = RealNVP(base, blocks=3, hidden=8)
    x = torch.randn(50, 3)
    assert torch.equal(energy(x), torch.zeros(50))
    assert torch.allclose(flow.log_prob(x), base.log_prob(x), atol=1e-5)
    ref = torch.distributions.MultivariateNormal(torch.zeros(3), 1.7 ** 2 * torch.eye(3)).log_prob(x)
    assert torch.allclose(TiltedEBM(energy, base).log_unnorm(x), ref, atol=1e-5)


def test_flow_sample_log_prob_matches_density():
    """After perturbing the couplings, the log-density returned while sampling equals log_prob (inverse pass)."""
    torch.manual_seed(0)
    flow = RealNVP(GaussianBase(4, 1.0), blocks=3, hidden=16).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
        x, log_q = flow.sample_and_log_prob(200, torch.Generator().manual_seed(0))
    assert not torch.allclose(log_q, flow.base.log_prob(x), atol=1e-2)  # the flow is not the identity
    assert torch.allclose(log_q, flow.log_prob(x), atol=1e-8)


# --------------------------------------------------------------------------- log Z by importance sampling


class QuadraticEnergy(nn.Module):
    """E(x) = x^T A x / 2 - b^T x. Tilted by N(0, s^2 I): Z = s^-D det(P)^-1/2 exp(b^T P^-1 b / 2), P = A + I/s^2."""

    def __init__(self, a: Tensor, b: Tensor) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * ((x @ self.a) * x).sum(-1) - x @ self.b

    def log_z(self, s: float) -> float:
        p = self.a + torch.eye(len(self.b), dtype=self.a.dtype) / s ** 2
        return float(-len(self.b) * math.log(s) - 0.5 * torch.logdet(p) + 0.5 * self.b @ torch.linalg.solve(p, self.b))


def test_log_z_of_zero_energy_is_zero():
    torch.manual_seed(0)
    ebm = TiltedEBM(EnergyNet(2, 16, 2), GaussianBase(2, 1.0))  # E == 0 -> Z = 1
    flow = RealNVP(GaussianBase(2, 1.4), blocks=2, hidden=8)  # a proposal different from rho
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    log_z, se, ess, frac, n = estimate_log_z(ebm.log_unnorm, flow, 20_000, torch.Generator().manual_seed(0))
    assert n == 20_000 and ess == pytest.approx(frac * n) and 0.5 * n < ess <= n  # a close proposal
    assert 0 < se < 0.02
    assert abs(log_z) < 3 * se, (log_z, se)


def test_log_z_of_quadratic_energy_matches_closed_form():
    a = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=torch.float64)
    b = torch.tensor([2.5, -1.5], dtype=torch.float64)
    energy = QuadraticEnergy(a, b)
    ebm = TiltedEBM(energy, GaussianBase(2, 1.5))
    log_z, se, _, _, _ = estimate_log_z(ebm.log_unnorm, broad_proposal(2.0), 20_000, torch.Generator().manual_seed(0))
    true = energy.log_z(1.5)
    assert abs(true) > 1  # a non-trivial normaliser
    assert 0 < se < 0.02
    assert abs(log_z - true) < 3 * se, (log_z, true, se)


def test_mode_weights_nearest_centre():
    c = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    s = torch.tensor([[0.1, 0.2], [3.0, 0.5], [3.5, -1.0], [1.0, 3.5]])
    assert torch.equal(mode_weights(s, c), torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64))


# --------------------------------------------------------------------------- the paper's motivating example


def motivating_data(n: int, g: torch.Generator) -> Tensor:
    k = torch.rand(n, generator=g) < 2 / 3
    mean = torch.where(k[:, None], torch.tensor([1.5, 1.5]), torch.tensor([-1.5, -1.5]))
    std = torch.where(k[:, None], torch.tensor(0.1).sqrt(), torch.tensor(0.05).sqrt())
    return mean + std * torch.randn(n, 2, generator=g)


def ebm_mode_weight(ebm: TiltedEBM) -> float:
    """Mass of the normalised EBM on the half-plane x1 + x2 > 0 (the 2/3 mode), by quadrature on a grid."""
    xs = torch.linspace(-5, 5, 201)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        p = torch.softmax(ebm.log_unnorm(grid), 0)
    return float(p[grid.sum(1) > 0].sum())


def test_flowmc_ebm_learns_the_mode_weight_ula_ebm_does_not():
    """Fig. 1 of the paper: persistent ULA chains cannot move mass between modes, so ULA-EBM's density drifts
    off the 2:1 weight; flowMC-EBM's i-SIR jumps keep it at 2/3. Same data, EBM, steps and seed."""
    g = torch.Generator().manual_seed(0)
    data = motivating_data(4096, g)
    sigma = float(data.var(0).max().sqrt())
    errors = {}
    for kind in ("flowmc", "ula"):
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(100)
        base = GaussianBase(2, sigma)
        ebm = TiltedEBM(EnergyNet(2, hidden=32, depth=2), base)
        if kind == "flowmc":
            trainer = FlowMCEBM(ebm, RealNVP(base, blocks=2, hidden=16), n_chains=256, n_proposals=16,
                                mala_steps=4, repeats=2, step=0.01, lr=1e-3, generator=gen)
        else:
            trainer = ULAEBM(ebm, n_chains=256, ula_steps=10, step=0.01, lr=1e-3, generator=gen)
        for _ in range(200):
            trainer.step(data[torch.randint(len(data), (128,), generator=gen)])
        errors[kind] = abs(ebm_mode_weight(ebm) - 2 / 3)
        if kind == "flowmc":  # its samples agree with its density
            w = mode_weights(trainer.sample(2000), MIX_MEANS.float())[1]
            assert abs(float(w) - 2 / 3) < 0.05, w
    assert errors["flowmc"] < 0.05, errors
    assert errors["ula"] > 2 * errors["flowmc"], errors


# --------------------------------------------------------------------------- adapters


def small_task() -> Task:
    g = torch.Generator().manual_seed(0)
    x = motivating_data(600, g)
    return Task("mix2", 2, x[:500], x[500:], mode_means=MIX_MEANS.float(), mode_weights=MIX_WEIGHTS.float())


@pytest.mark.parametrize("cls,name,objective", [(FlowMCEBMAdapter, "flowmc-ebm", "flowmc"),
                                                (ULAEBMAdapter, "ula-ebm", "ula")])
def test_adapter_contract(cls, name, objective):
    task = small_task()
    assert (cls.name, cls.family, cls.objective) == (name, "flowmc-ebm", objective)
    a = cls(task, dim=2, layers=2, seed=0, n_chains=64, n_is=2000, batch_size=64)
    # at initialisation E == 0 and the flow is the identity: NLL = -log rho exactly (log Z_hat = 0)
    rho = a.trainer.ebm.base
    assert torch.allclose(a.nll(task.test), -rho.log_prob(task.test), atol=1e-5)
    for _ in range(3):
        loss = a.train_step(task.train[:64])
        assert math.isfinite(loss)
    nll1 = a.nll(task.test)
    assert nll1.shape == (100,) and torch.isfinite(nll1).all()
    assert a.log_z_stderr > 0
    assert 1 <= a.log_z_ess <= 2000  # Kish ESS of the n_is = 2000 importance weights
    assert a.log_z_estimate.n == 2000 and a.log_z_estimate.ess == a.log_z_ess
    assert torch.equal(a.nll(task.test), nll1)  # log Z cached within a parameter version
    # log_density is the tilted EBM's own -E + log rho: -NLL up to the constant log Z_hat
    log_z, _ = a.log_z()
    assert torch.allclose(a.log_density(task.test), -nll1 + log_z, atol=1e-5)
    assert torch.allclose(a.density_fn()(task.test), (-nll1 + log_z).double(), atol=1e-5)
    s = a.sample(50)
    assert s.shape == (50, 2) and s.dtype == torch.float32 and s.device.type == "cpu"
    n_ebm = sum(p.numel() for p in a.trainer.ebm.energy.parameters())
    n_flow = sum(p.numel() for p in a.trainer.flow.parameters()) if name == "flowmc-ebm" else 0
    assert a.num_params() == n_ebm + n_flow


def test_invalid_arguments_raise_clear_errors():
    x = torch.zeros(4, 2)
    prop = GaussianBase(2)
    with pytest.raises(ValueError, match="step size"):
        mala(gauss_log_prob, x, 0.0, 1)
    with pytest.raises(ValueError, match="step size"):
        ula(gauss_log_prob, x, -0.1, 1)
    with pytest.raises(ValueError, match="step size"):
        flowmc(gauss_log_prob, prop, x, 4, 2, float("nan"))
    with pytest.raises(ValueError, match="n_proposals"):
        isir(gauss_log_prob, prop, x, 0)
    with pytest.raises(ValueError, match=r"\[C, D\]"):
        mala(gauss_log_prob, torch.zeros(2), 0.1, 1)
    with pytest.raises(ValueError, match="n_proposals"):
        FlowMCEBM(TiltedEBM(EnergyNet(2), prop), RealNVP(prop), n_proposals=0)
    with pytest.raises(ValueError, match="sigma"):
        GaussianBase(2, sigma=0.0)
    with pytest.raises(ValueError, match="dim >= 2"):
        RealNVP(GaussianBase(1))
    assert "dim >= 2" in FlowMCEBMAdapter.check(small_task(), 1, 2)
    with pytest.raises(ValueError, match="layers >= 1"):
        FlowMCEBMAdapter(small_task(), dim=2, layers=0, seed=0)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        ULAEBMAdapter(small_task(), dim=2, layers=1, seed=0, n_proposals=3)
