"""Objectives: closed forms on a linear-Gaussian model, agreement between estimators, no determinants."""

import math

import pytest
import torch

import ebflow
from ebflow import architectures as A
from ebflow import layers as L
from ebflow import objectives as O
from ebflow.preprocessing import LogitTransform


pytestmark = pytest.mark.usefixtures("float64")


def _gaussian_model(dim: int = 3, seed: int = 0) -> ebflow.EBFlow:
    """One dense layer z = W x + b: a Gaussian with linear score s(x) = -W^T (W x + b)."""
    g = torch.Generator().manual_seed(seed)
    layer = L.Dense(dim)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(dim) + 0.4 * torch.randn(dim, dim, generator=g))
        layer.bias.copy_(0.5 * torch.randn(dim, generator=g))
    return ebflow.EBFlow([layer], dim)


def _closed_form_sm(model: ebflow.EBFlow, x: torch.Tensor) -> torch.Tensor:
    """J = mean 0.5 ||W^T (W x + b)||^2 - ||W||_F^2 (tr grad s = -tr W^T W), differentiable in W, b."""
    layer = model.layers[0]
    W, b = layer.weight, layer.bias
    s = -(x @ W.T + b) @ W
    return 0.5 * s.pow(2).sum(1).mean() - W.pow(2).sum()


def _value_and_grads(model, loss_fn):
    """``loss_fn(model)`` and its gradient with respect to every parameter."""
    for p in model.parameters():
        p.grad = None
    value = loss_fn(model)
    value.backward()
    return value.detach(), [p.grad.clone() for p in model.parameters()]


X = torch.randn(40, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def _reference(model):
    return _value_and_grads(model, lambda m: _closed_form_sm(m, X))


def test_registry():
    assert O.available() == ["dsm", "fdssm", "ml", "sm", "sml", "ssm"]
    assert O.get("ssm") is O.ssm
    with pytest.raises(KeyError, match="known: dsm, fdssm"):
        O.get("nce")
    with pytest.raises(ValueError, match="twice"):
        O.register("ml")(lambda model, x: x.sum())


def test_exact_sm_equals_closed_form_value_and_gradient():
    model = _gaussian_model()
    ref_v, ref_g = _reference(model)
    v, g = _value_and_grads(model, lambda m: O.sm(m, X))
    assert v.item() == pytest.approx(ref_v.item(), abs=1e-10)
    for a, b in zip(g, ref_g):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_ssm_with_many_slices_matches_closed_form(noise):
    model = _gaussian_model()
    ref_v, ref_g = _reference(model)
    gen = torch.Generator().manual_seed(0)
    v, g = _value_and_grads(model, lambda m: O.ssm(m, X, slices=20_000, noise=noise, generator=gen))
    assert v.item() == pytest.approx(ref_v.item(), rel=1e-2)
    for a, b in zip(g, ref_g):
        assert torch.allclose(a, b, rtol=2e-2, atol=2e-2 * b.abs().max().item())


def test_fdssm_with_many_slices_matches_closed_form():
    model = _gaussian_model()
    ref_v, ref_g = _reference(model)
    gen = torch.Generator().manual_seed(0)
    v, g = _value_and_grads(model, lambda m: O.fdssm(m, X, eps=1e-2, slices=20_000, generator=gen))
    assert v.item() == pytest.approx(ref_v.item(), rel=1e-2)
    for a, b in zip(g, ref_g):
        assert torch.allclose(a, b, rtol=2e-2, atol=2e-2 * b.abs().max().item())


def test_dsm_expectation_is_sm_of_smoothed_data():
    """E_eps[dsm] = J of the smoothed data = J + 0.5 std^2 ||W^T W||_F^2 exactly for a linear score;
    value and parameter gradient, one million noise draws."""
    model = _gaussian_model()
    std = 0.5

    def smoothed_closed_form(m):
        W = m.layers[0].weight
        return _closed_form_sm(m, X) + 0.5 * std**2 * (W.T @ W).pow(2).sum()

    ref_v, ref_g = _value_and_grads(model, smoothed_closed_form)
    gen = torch.Generator().manual_seed(0)
    xs = X.repeat(25_000, 1)
    v, g = _value_and_grads(model, lambda m: O.dsm(m, xs, std=std, generator=gen))
    assert v.item() == pytest.approx(ref_v.item(), abs=1e-2)
    for a, b in zip(g, ref_g):
        assert torch.allclose(a, b, atol=1e-2 * b.abs().max().item())


def test_dsm_with_small_noise_matches_closed_form_sm():
    """std = 0.05: the smoothing bias is 0.017, the Monte Carlo error of 4e6 draws about 0.04."""
    model = _gaussian_model()
    ref = _closed_form_sm(model, X).item()
    gen = torch.Generator().manual_seed(0)
    xs = X.repeat(25_000, 1)
    values = [O.dsm(model, xs, std=0.05, generator=gen).item() for _ in range(4)]
    assert sum(values) / 4 == pytest.approx(ref, abs=0.15)


def _nonlinear_model():
    model = A.fully_connected(3, num_layers=3)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.4 * torch.randn(p.shape, generator=g))
    return model


def test_exact_sm_equals_hessian_trace_on_nonlinear_model():
    model = _nonlinear_model()
    x = X[:6]
    expected = []
    for xi in x:
        e = lambda v: model.energy(v.unsqueeze(0)).squeeze(0)  # noqa: E731
        grad = torch.autograd.functional.jacobian(e, xi)
        hess = torch.autograd.functional.hessian(e, xi)
        expected.append(0.5 * grad.pow(2).sum() - torch.trace(hess))
    assert O.sm(model, x).item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-10)


def test_estimators_agree_with_sm_on_nonlinear_model():
    model = _nonlinear_model()
    sm_v, sm_g = _value_and_grads(model, lambda m: O.sm(m, X))
    scale = 0.5 * model.score(X).pow(2).sum(1).mean().item()  # J is a small difference of O(scale) terms
    gen = torch.Generator().manual_seed(1)
    for name, hp in [("ssm", dict(slices=5000)), ("fdssm", dict(eps=1e-3, slices=5000))]:
        v, g = _value_and_grads(model, lambda m: O.get(name)(m, X, generator=gen, **hp))
        assert v.item() == pytest.approx(sm_v.item(), abs=1e-2 * scale), name
        for a, b in zip(g, sm_g):
            assert torch.allclose(a, b, atol=3e-2 * b.abs().max().item()), name


def test_ml_is_the_exact_nll_and_its_gradient_matches_finite_differences():
    model = _nonlinear_model()
    x = X[:10]
    loss = O.ml(model, x)
    assert loss.item() == pytest.approx(-model.log_prob(x).mean().item(), abs=1e-12)
    loss.backward()
    W = model.layers[2].weight
    h = 1e-6
    for idx in [(0, 0), (1, 2), (2, 1)]:
        with torch.no_grad():
            W[idx] += h
            up = O.ml(model, x).item()
            W[idx] -= 2 * h
            down = O.ml(model, x).item()
            W[idx] += h
        assert W.grad[idx].item() == pytest.approx((up - down) / (2 * h), abs=1e-6)


def test_sml_gradient_estimates_the_ml_gradient():
    model = _gaussian_model()
    _, ml_g = _value_and_grads(model, lambda m: O.ml(m, X))
    gen = torch.Generator().manual_seed(0)
    _, sml_g = _value_and_grads(model, lambda m: O.sml(m, X, num_samples=400_000, generator=gen))
    for a, b in zip(sml_g, ml_g):
        assert torch.allclose(a, b, atol=2e-2 * b.abs().max().item())


def test_score_gradient_wrt_data_matches_finite_differences():
    """d ssm / d x through the data path (the per-sample objective is a smooth function of x)."""
    model = _nonlinear_model()
    x = X[:4].clone().requires_grad_()
    (gx,) = torch.autograd.grad(O.sm(model, x), x)
    h = 1e-6
    for i, j in [(0, 0), (2, 1), (3, 2)]:
        xp, xm = X[:4].clone(), X[:4].clone()
        xp[i, j] += h
        xm[i, j] -= h
        fd = (O.sm(model, xp) - O.sm(model, xm)).item() / (2 * h)
        assert gx[i, j].item() == pytest.approx(fd, abs=1e-6)


def test_objectives_act_after_preprocessing():
    """With MaP, objectives equal those of the bare flow on u = logit(x)."""
    flow = _nonlinear_model()
    mapped = ebflow.EBFlow(list(flow.layers), 3, LogitTransform(1e-3))
    x = torch.rand(8, 3)
    u = mapped.preprocess(x)[0]
    assert O.sm(mapped, x).item() == pytest.approx(O.sm(flow, u).item(), abs=1e-10)
    assert O.ml(mapped, x).item() == pytest.approx(O.ml(flow, u).item(), abs=1e-10)
    for name in ["ssm", "dsm", "fdssm", "sml"]:
        a = O.get(name)(mapped, x, generator=torch.Generator().manual_seed(0)).item()
        b = O.get(name)(flow, u, generator=torch.Generator().manual_seed(0)).item()
        assert a == pytest.approx(b, abs=1e-10), name


def test_energy_regulariser():
    model = _nonlinear_model()
    base = O.sm(model, X).item()
    reg = O.sm(model, X, lam=0.1).item()
    assert reg - base == pytest.approx(0.1 * model.energy(X).mean().item(), abs=1e-10)


def test_bad_hyperparameters_are_named():
    model = _gaussian_model()
    with pytest.raises(ValueError, match="slices"):
        O.ssm(model, X, slices=0)
    with pytest.raises(ValueError, match="noise"):
        O.ssm(model, X, noise="uniform")
    with pytest.raises(ValueError, match="std"):
        O.dsm(model, X, std=0.0)
    with pytest.raises(TypeError, match="slices"):
        O.dsm(model, X, slices=3)


_DET_FUNCTIONS = [(torch.linalg, "slogdet"), (torch, "slogdet"), (torch, "det"), (torch, "logdet"),
                  (torch.linalg, "det"), (torch.linalg, "lu_factor")]


@pytest.fixture
def no_determinants(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a determinant was computed")

    for module, name in _DET_FUNCTIONS:
        monkeypatch.setattr(module, name, boom)


@pytest.mark.parametrize("name", ["ssm", "dsm", "fdssm", "sml"])
def test_score_matching_steps_compute_no_determinant(no_determinants, name):
    model = A.fully_connected(8, num_layers=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    loss = ebflow.training.train_step(model, opt, name, torch.randn(16, 8))
    assert math.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_ml_does_compute_a_determinant(no_determinants):
    model = A.fully_connected(8, num_layers=3)
    with pytest.raises(AssertionError, match="determinant"):
        O.ml(model, torch.randn(16, 8))


@pytest.mark.parametrize("name", ["ml", "sml", "ssm", "dsm", "fdssm", "sm"])
def test_objectives_run_in_float32(name):
    model = A.cnn((1, 3, 3), preprocessing=LogitTransform()).float()
    x = torch.rand(8, 9, dtype=torch.float32)
    loss = O.get(name)(model, x)
    assert loss.dtype == torch.float32 and loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
