"""The approx-ml family (baselines.approx_ml + its adapter): SNF, relative gradient, free-form flows.

Closed forms and exact references in float64: SNF's direction at R = W^-1, its reconstruction penalty; the
relative-gradient direction; the FFF estimator's expectation (statistical tolerance from the draws); each
method's NLL against a brute-force change of variables.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from baselines.approx_ml import (
    finite_mean, jacobian_log_prob, relative_fully_connected, relative_loss, sample_v, snf_fully_connected, snf_loss,
    volume_surrogate,
)
from baselines.approx_ml.snf import SelfNormDense
from ebflow_bench.adapters import get
from ebflow_bench.tasks.base import Task
from tests.conftest import randomise

D = 4


def _slr(y: torch.Tensor, alpha: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth leaky ReLU and its log-derivative (the reference, written independently of ebflow.layers)."""
    return alpha * y + (1 - alpha) * F.softplus(y), torch.log(alpha + (1 - alpha) * torch.sigmoid(y))


def _exact_nll(x, ws, bs):
    """Mean exact NLL of the dense/SLR flow z = W2 slr(W1 x + b1) + b2 (autograd-differentiable, slogdet)."""
    h, logdet = x, x.new_zeros(x.shape[0])
    for k, (w, b) in enumerate(zip(ws, bs)):
        if k:
            h, ld = _slr(h)
            logdet = logdet + ld.sum(1)
        h = h @ w.T + b
        logdet = logdet + torch.linalg.slogdet(w)[1]
    return (0.5 * h.pow(2).sum(1) + 0.5 * x.shape[1] * math.log(2 * math.pi) - logdet).mean()


def _random_snf(seed: int = 0):
    torch.manual_seed(seed)
    model = randomise(snf_fully_connected(D, 2), 0.3, seed=seed + 1)
    dense = [layer for layer in model.layers if isinstance(layer, SelfNormDense)]
    return model, dense


# ------------------------------------------------------------------------------------------------------ SNF


def test_snf_direction_is_the_exact_mixture_gradient_when_r_is_the_inverse(float64):
    model, dense = _random_snf()
    with torch.no_grad():
        for layer in dense:
            layer.inv_weight.copy_(torch.linalg.inv(layer.weight))
    x = torch.randn(16, D)
    loss, energy, n_bad = snf_loss(model, x, recon_weight=0.0)
    assert n_bad == 0
    loss.backward()
    # forward model: exact NLL through W; inverse model: encode z = R^-1 h + b, NLL with +log|det R|
    ws = [layer.weight.detach().clone().requires_grad_(True) for layer in dense]
    rs = [layer.inv_weight.detach().clone().requires_grad_(True) for layer in dense]
    bs = [layer.bias.detach().clone().requires_grad_(True) for layer in dense]
    gw = torch.autograd.grad(_exact_nll(x, ws, bs), ws + bs)
    bs2 = [b.detach().clone().requires_grad_(True) for b in bs]
    gr = torch.autograd.grad(_exact_nll(x, [torch.linalg.inv(r) for r in rs], bs2), rs + bs2)
    for k, layer in enumerate(dense):
        torch.testing.assert_close(layer.weight.grad, 0.5 * gw[k], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(layer.inv_weight.grad, 0.5 * gr[k], rtol=1e-9, atol=1e-10)
        # the bias is shared: half of each model's gradient, i.e. the exact one (both models agree at R = W^-1)
        torch.testing.assert_close(layer.bias.grad, 0.5 * (gw[2 + k] + gr[2 + k]), rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(layer.bias.grad, gw[2 + k], rtol=1e-9, atol=1e-10)


def test_snf_reconstruction_penalty_closed_form_zero_at_inverse_and_pulls_r_to_it(float64):
    model, dense = _random_snf(3)
    x = torch.randn(32, D)
    lam = 0.7

    def grads(recon_weight):
        model.zero_grad()
        snf_loss(model, x, recon_weight)[0].backward()
        return [(layer.weight.grad.clone(), layer.inv_weight.grad.clone()) for layer in dense]

    with_pen, without = grads(lam), grads(0.0)
    # closed form of lam * mean ||R W h - h||^2 with h the (detached) layer input: dR = 2 e (W h)^T, dW = 2 R^T e h^T
    h1 = x
    h2 = _slr(x @ dense[0].weight.T + dense[0].bias)[0].detach()
    for layer, h, (gw, gr), (gw0, gr0) in zip(dense, (h1, h2), with_pen, without):
        w, r = layer.weight.detach(), layer.inv_weight.detach()
        e = h @ w.T @ r.T - h
        torch.testing.assert_close(gr - gr0, lam * 2 * e.T @ (h @ w.T) / len(h), rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(gw - gw0, lam * 2 * (e @ r).T @ h / len(h), rtol=1e-9, atol=1e-10)
    # zero (value and gradient) at R = W^-1
    layer = dense[0]
    with torch.no_grad():
        layer.inv_weight.copy_(torch.linalg.inv(layer.weight))
    assert float(layer.reconstruction(x).detach().max()) < 1e-20
    # descent on the penalty alone (R only) moves R monotonically towards W^-1
    with torch.no_grad():
        layer.inv_weight.add_(0.1 * torch.randn(D, D))
    target = torch.linalg.inv(layer.weight.detach())
    dist = [float((layer.inv_weight - target).detach().norm())]
    for _ in range(20):
        (g,) = torch.autograd.grad(layer.reconstruction(x).mean(), layer.inv_weight)
        with torch.no_grad():
            layer.inv_weight.sub_(0.02 * g)
        dist.append(float((layer.inv_weight - target).detach().norm()))
    assert all(b < a for a, b in zip(dist, dist[1:]))
    assert dist[-1] < 0.5 * dist[0]


def test_snf_published_initialisation():
    layer = SelfNormDense(6)
    assert torch.equal(layer.weight.detach(), torch.eye(6))
    assert torch.equal(layer.inv_weight.detach(), layer.weight.detach().T)


# ------------------------------------------------------------------------------------- relative gradient


def test_relative_gradient_direction_is_euclidean_times_wtw(float64):
    torch.manual_seed(0)
    model = randomise(relative_fully_connected(D, 2), 0.3, seed=2)
    dense = [layer for layer in model.layers if layer.linear]
    x = torch.randn(16, D)
    loss, _, _ = relative_loss(model, x)
    loss.backward()
    ws = [layer.weight.detach().clone().requires_grad_(True) for layer in dense]
    bs = [layer.bias.detach().clone().requires_grad_(True) for layer in dense]
    g = torch.autograd.grad(_exact_nll(x, ws, bs), ws + bs)
    for k, layer in enumerate(dense):
        w, b = ws[k].detach(), bs[k].detach()
        gw_full, gb = g[k], g[2 + k]
        logdet_part = -torch.linalg.inv(w).T
        gw_data = gw_full - logdet_part
        # the log-det part W^-T W^T W is W (with the NLL's sign: -W)
        torch.testing.assert_close(logdet_part @ w.T @ w, -w, rtol=1e-9, atol=1e-10)
        # augmented form [G_W, g_b] A^T A for the data part, -W for the log-det part (weight only)
        aug = torch.zeros(D + 1, D + 1)
        aug[:D, :D], aug[:D, D], aug[D, D] = w, b, 1.0
        direction = torch.cat([gw_data, gb[:, None]], 1) @ aug.T @ aug
        torch.testing.assert_close(layer.weight.grad, direction[:, :D] + logdet_part @ w.T @ w, rtol=1e-9,
                                   atol=1e-10)
        torch.testing.assert_close(layer.bias.grad, direction[:, D], rtol=1e-9, atol=1e-10)
    # without biases the whole direction is the Euclidean gradient times W^T W
    model = randomise(relative_fully_connected(D, 2, bias=False), 0.3, seed=4)
    dense = [layer for layer in model.layers if layer.linear]
    relative_loss(model, x)[0].backward()
    ws = [layer.weight.detach().clone().requires_grad_(True) for layer in dense]
    g = torch.autograd.grad(_exact_nll(x, ws, [torch.zeros(D), torch.zeros(D)]), ws)
    for layer, gk, w in zip(dense, g, ws):
        torch.testing.assert_close(layer.weight.grad, gk @ w.detach().T @ w.detach(), rtol=1e-9, atol=1e-10)


# -------------------------------------------------------------------------------------------- free-form


class _SinhPair(torch.nn.Module):
    """f(x) = W2 sinh(W1 x + b1) + b2 and its exact inverse g (closed form, asinh)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.w1 = torch.nn.Parameter(torch.eye(d) + 0.3 * torch.randn(d, d, generator=g))
        self.w2 = torch.nn.Parameter(torch.eye(d) + 0.3 * torch.randn(d, d, generator=g))
        self.b1 = torch.nn.Parameter(0.2 * torch.randn(d, generator=g))
        self.b2 = torch.nn.Parameter(0.2 * torch.randn(d, generator=g))

    def encode(self, x):
        return torch.sinh(x @ self.w1.T + self.b1) @ self.w2.T + self.b2

    def decode(self, z):
        w1, w2, b1, b2 = (p.detach() for p in (self.w1, self.w2, self.b1, self.b2))
        return (torch.asinh(torch.linalg.solve(w2, (z - b2).T).T) - b1) @ torch.linalg.inv(w1).T

    def logdet(self, x):
        y = x @ self.w1.T + self.b1
        return torch.linalg.slogdet(self.w1)[1] + torch.linalg.slogdet(self.w2)[1] + torch.log(torch.cosh(y)).sum(1)


def test_sample_v_has_identity_second_moment(float64):
    v = sample_v(torch.zeros(20000, 3), torch.Generator().manual_seed(0))
    torch.testing.assert_close(v.norm(dim=1), torch.full((20000,), math.sqrt(3)))
    second = v.T @ v / len(v)
    assert float((second - torch.eye(3)).abs().max()) < 0.05  # sd of each entry ~ 0.01 at 20,000 draws


def test_fff_estimator_expectation_is_the_exact_logdet_gradient(float64):
    d, pair = 3, _SinhPair(3)
    x = 0.5 * torch.randn(4, d)
    params = list(pair.parameters())
    x_exact = x.detach()
    params = params[:3]  # b2 moves neither the Jacobian nor its log-det
    exact = torch.autograd.grad(pair.logdet(x_exact).mean(), params)
    torch.testing.assert_close(pair.decode(pair.encode(x)), x)  # g = f^-1
    gen = torch.Generator().manual_seed(1)
    reps, batches = 256, 60
    means = []
    for _ in range(batches):
        xr = x.repeat(reps, 1)
        surrogate, _, _ = volume_surrogate(xr, pair.encode, pair.decode, sample_v(xr, gen))
        g = torch.autograd.grad(surrogate.mean(), params)
        means.append(torch.cat([t.reshape(-1) for t in g]))
    means = torch.stack(means)
    mean, se = means.mean(0), means.std(0) / math.sqrt(batches)
    target = torch.cat([t.reshape(-1) for t in exact])
    assert bool((se > 0).all())
    assert float(((mean - target).abs() / se).max()) < 5.0, ((mean - target) / se)
    # and the estimator is not trivially exact: single batches scatter
    assert float(means.std(0).max()) > 1e-3


# ------------------------------------------------------------------------------- NLL vs change of variables


def _image_task(d_side: int = 3, n: int = 64) -> Task:
    g = torch.Generator().manual_seed(0)
    def draw(m):
        k = torch.randint(0, 16, (m, d_side * d_side), generator=g).float()
        return (k + torch.rand(k.shape, generator=g)) / 16
    return Task("tiny-image", d_side * d_side, draw(n), draw(n), image_shape=(1, d_side, d_side), discrete_scale=16.0)


def _gauss_task(d: int = 5, n: int = 64) -> Task:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(d, d, generator=g)
    return Task("tiny-gauss", d, torch.randn(n, d, generator=g) @ a.T, torch.randn(n, d, generator=g) @ a.T)


def _brute_nll(adapter, x: torch.Tensor) -> torch.Tensor:
    """-log N(F(x)) - log|det dF/dx| with F = the evaluated data -> latent map, Jacobian by reverse-mode autograd."""
    def data_to_latent(row):
        u, _ = adapter.preprocess(row[None])
        if adapter.name == "free-form-flow":
            return adapter.encode(u)[0]
        return adapter.model.flow(u)[0][0]

    out = []
    for row in x:
        jac = torch.autograd.functional.jacobian(data_to_latent, row)
        z = data_to_latent(row)
        out.append(0.5 * z.pow(2).sum() + 0.5 * len(z) * math.log(2 * math.pi) - torch.linalg.slogdet(jac)[1])
    return torch.stack(out).detach()


@pytest.mark.parametrize("method,hparams", [
    ("snf", {}), ("relative-gradient", {}), ("free-form-flow", {}),
    ("free-form-flow", {"arch": "resnet", "hidden": 8}),
])
@pytest.mark.parametrize("make_task", [_image_task, _gauss_task])
def test_nll_is_exact_against_brute_force_change_of_variables(float64, method, hparams, make_task):
    task = make_task()
    adapter = get(method)(task, dim=task.dim, layers=2, seed=0, batch_size=32, lr=1e-2, **hparams)
    for i in range(5):
        adapter.train_step(task.train[8 * i:8 * i + 32])
    randomise(adapter.trained(), 0.05, seed=7)  # away from any trivial (identity, zero-block) point
    if adapter.model is not None:
        adapter.model.invalidate_logdet_cache()
    x = task.test[:6]
    torch.testing.assert_close(adapter.nll(x).to(torch.float64), _brute_nll(adapter, x), rtol=1e-8, atol=1e-8)
    assert adapter.nonfinite_losses == 0


def test_jacobian_log_prob_matches_closed_form(float64):
    pair = _SinhPair(3)
    x = 0.5 * torch.randn(7, 3)
    z = pair.encode(x)
    expected = -0.5 * z.pow(2).sum(1) - 1.5 * math.log(2 * math.pi) + pair.logdet(x)
    torch.testing.assert_close(jacobian_log_prob(pair.encode, x, chunk=3), expected.detach())


# ------------------------------------------------------------------------------------------- counters


def test_finite_mean_zeroes_and_counts():
    mean, n = finite_mean(torch.tensor([1.0, float("nan"), 3.0, float("inf")]))
    assert n == 2 and float(mean) == 1.0
    mean, n = finite_mean(torch.tensor([float("nan")] * 3))
    assert n == 3 and math.isnan(float(mean))


def test_adapters_registered_with_grids_and_reconstruction():
    task = _gauss_task()
    for name in ("snf", "relative-gradient", "free-form-flow"):
        cls = get(name)
        assert cls.family == "approx-ml"
        assert math.prod(len(v) for v in cls.tune_grid.values()) == 6
        a = cls(task, dim=task.dim, layers=2, seed=0)
        err = a.reconstruction_error(task.test)
        assert (err is None) == (name == "relative-gradient")
        if err is not None:
            assert 0.0 <= err
    # SNF at its initialisation (R = W^T = I): the learned inverse is exact
    assert get("snf")(task, dim=task.dim, layers=2, seed=0).reconstruction_error(task.test) < 1e-10
