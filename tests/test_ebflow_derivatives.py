"""Hand-written derivatives (float64): element-wise layers' closed forms, and EBFlow.energy_score's explicit
score and second directional derivative against nested autograd, including the parameter gradients that the
ssm/dsm backward passes take through them (second and third derivatives)."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import ebflow
from ebflow.preprocessing import LogitTransform
from ebflow import architectures as A
from ebflow import layers as L
from ebflow import objectives as O

from conftest import randomise

pytestmark = pytest.mark.usefixtures("float64")

ELEMENTWISE = [
    ("slrelu-0.3", lambda: L.SmoothLeakyReLU(0.3), lambda n: 4.0 * torch.randn(n)),
    ("slrelu-0.05", lambda: L.SmoothLeakyReLU(0.05), lambda n: 4.0 * torch.randn(n)),
    ("slrelu-residual-0.3", lambda: L.SmoothLeakyReLU(0.3, residual=True), lambda n: 4.0 * torch.randn(n)),
    ("logit", lambda: L.Logit(1e-2), lambda n: torch.rand(n)),
    ("logit-0", lambda: L.Logit(0.0), lambda n: 0.02 + 0.96 * torch.rand(n)),
    ("logit-smooth-0.5", lambda: LogitTransform(1e-2, smoothness=0.5), lambda n: torch.rand(n)),
]


@pytest.mark.parametrize("name,make,draw", ELEMENTWISE, ids=[c[0] for c in ELEMENTWISE])
def test_elementwise_derivatives_match_autograd(name, make, draw):
    layer = make()
    x = draw(50).requires_grad_()
    g, l, g1, l1, g2, l2 = layer.derivatives(x, 2)
    (ag1,) = torch.autograd.grad(g.sum(), x, create_graph=True)
    (al1,) = torch.autograd.grad(l.sum(), x, create_graph=True)
    (ag2,) = torch.autograd.grad(ag1.sum(), x, retain_graph=True)
    (al2,) = torch.autograd.grad(al1.sum(), x)
    for mine, ref in [(g1, ag1), (l1, al1), (g2, ag2), (l2, al2)]:
        assert torch.allclose(mine, ref, rtol=1e-10, atol=1e-10)
    assert torch.allclose(l, torch.log(ag1.abs()), atol=1e-12)  # l = log|g'|
    # lower orders are prefixes of higher ones, and forward is order 0
    assert all(torch.equal(a, b) for a, b in zip(layer.derivatives(x, 1), (g, l, g1, l1)))
    y, ld = layer(x.detach().reshape(5, 10))
    assert torch.equal(y.reshape(-1), g.detach()) and torch.allclose(ld, l.detach().reshape(5, 10).sum(1))


@pytest.mark.parametrize("name,make,draw", ELEMENTWISE, ids=[c[0] for c in ELEMENTWISE])
def test_elementwise_derivatives_gradcheck(name, make, draw):
    """Finite differences of the closed forms themselves (their autograd graph is what the training step's
    backward differentiates), to second order."""
    layer = make()
    x = draw(6).requires_grad_()
    assert gradcheck(lambda t: layer.derivatives(t, 2), (x,))
    assert gradgradcheck(lambda t: layer.derivatives(t, 2), (x,))


def _models():
    def fc(num_layers, residual=False):
        return lambda: randomise(A.fully_connected(4, num_layers, residual=residual), 0.3)

    def mixed():  # every explicit layer kind in one flow, Logit inside the model
        return randomise(ebflow.EBFlow([L.Logit(1e-2), L.Dense(4, init="orthogonal"), L.SmoothLeakyReLU(0.2),
                                         L.ActNorm(4), L.Dense(4), L.SmoothLeakyReLU(0.4), L.ActNorm(4)], 4), 0.3)

    def cnn():
        return randomise(A.cnn((2, 3, 3), 3), 0.3)

    def cnn_actnorm():
        return randomise(ebflow.EBFlow([L.Conv2d((2, 2, 2), 3), L.SmoothLeakyReLU(0.3), L.ActNorm((2, 2, 2)),
                                         L.Conv2d((2, 2, 2), 3, neg_init=True)], (2, 2, 2)), 0.3)

    def no_map():  # the paper's ablation: the smoothed logit inside the trained model
        return randomise(ebflow.EBFlow([LogitTransform(1e-2, smoothness=0.5), *A.fully_connected(4, 2).layers], 4),
                         0.3)

    return [("fc1", fc(1)), ("fc2", fc(2)), ("fc3", fc(3)), ("mixed", mixed), ("cnn", cnn),
            ("cnn-actnorm", cnn_actnorm), ("no-map", no_map), ("fc3-residual", fc(3, residual=True))]


MODELS = _models()


def _inputs(model, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    if isinstance(model.layers[0], L.Logit):
        return 0.05 + 0.9 * torch.rand(n, model.dim, generator=g)
    return torch.randn(n, model.dim, generator=g)


@pytest.mark.parametrize("name,make", MODELS, ids=[m[0] for m in MODELS])
def test_energy_score_matches_nested_autograd(name, make):
    model = make()
    assert model.explicit_derivatives
    u = _inputs(model)
    v = torch.randn(u.shape, generator=torch.Generator().manual_seed(1))
    energy, grad, vhv = model.energy_score(u, v)
    r_energy, r_grad, r_vhv = model._energy_score_autograd(u, v)
    assert torch.allclose(energy, model.flow_energy(u), atol=1e-12)
    assert torch.allclose(energy, r_energy, atol=1e-12)
    assert torch.allclose(grad, r_grad, atol=1e-10)
    assert torch.allclose(vhv, r_vhv, atol=1e-10)
    # without a direction: the same energy and gradient, no curvature
    e1, g1, none = model.energy_score(u)
    assert none is None and torch.allclose(e1, energy) and torch.allclose(g1, grad)


@pytest.mark.parametrize("name,make", MODELS, ids=[m[0] for m in MODELS])
def test_energy_score_parameter_gradients_match_nested_autograd(name, make):
    """The gradient of a loss built from the score and the curvature (what the dsm/ssm backward passes compute:
    second and third derivatives of the flow) equals autograd's through nested grads."""
    model = make()
    u = _inputs(model)
    v = torch.randn(u.shape, generator=torch.Generator().manual_seed(1))
    w = torch.randn(u.shape, generator=torch.Generator().manual_seed(2))

    def loss(fn):
        e, g, c = fn(u, v)
        return (0.3 * e + (g * w).sum(1) + 0.5 * g.pow(2).sum(1) - c).mean()

    params = list(model.parameters())
    mine = torch.autograd.grad(loss(model.energy_score), params)
    ref = torch.autograd.grad(loss(model._energy_score_autograd), params)
    for a, b in zip(mine, ref):
        assert torch.allclose(a, b, atol=1e-9, rtol=1e-9)


def test_energy_score_gradcheck_in_u():
    """Differentiable in u (objectives stay differentiable in the data): first and second derivatives of the
    explicit score and curvature by finite differences."""
    model = randomise(A.fully_connected(3, 2), 0.3)
    u = torch.randn(2, 3).requires_grad_()
    v = torch.randn(2, 3)
    fn = lambda t: model.energy_score(t, v)  # noqa: E731
    assert gradcheck(fn, (u,))
    assert gradgradcheck(fn, (u,))


def _reference_objective(model, x, name, generator):
    """ssm / dsm as written before energy_score existed: nested torch.autograd.grad."""
    if name == "ssm":
        u = model.preprocess(x)[0].detach().requires_grad_(True)
        energy = model.flow_energy(u)
        (g,) = torch.autograd.grad(energy.sum(), u, create_graph=True)
        s = -g
        v = O._slice_directions(tuple(u.shape), u, "rademacher", generator)
        (hv,) = torch.autograd.grad((s * v).sum(), u, create_graph=True)
        return (0.5 * s.pow(2).sum(1) + (hv * v).sum(1)).mean()
    u = model.preprocess(x)[0]
    eps = ebflow.model.randn(tuple(u.shape), u, generator)
    ue = (u + eps).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model.flow_energy(ue).sum(), ue, create_graph=True)
    s = -g
    return (0.5 * s.pow(2).sum(1) + (s * eps).sum(1)).mean()


@pytest.mark.parametrize("name", ["ssm", "dsm"])
@pytest.mark.parametrize("model_name,make", [MODELS[2], MODELS[4]], ids=["fc3", "cnn"])
def test_objectives_equal_the_nested_autograd_reference(name, model_name, make):
    model = make()
    x = _inputs(model, 8)
    params = list(model.parameters())
    new = O.get(name)(model, x, generator=torch.Generator().manual_seed(0))
    ref = _reference_objective(model, x, name, torch.Generator().manual_seed(0))
    assert new.item() == pytest.approx(ref.item(), abs=1e-10)
    for a, b in zip(torch.autograd.grad(new, params), torch.autograd.grad(ref, params)):
        assert torch.allclose(a, b, atol=1e-9, rtol=1e-9)


def test_layers_without_closed_forms_fall_back_to_autograd():
    model = randomise(A.coupling(2, 2, hidden=8), 0.3)
    assert not model.explicit_derivatives
    u, v = torch.randn(4, 2), torch.randn(4, 2)
    e, g, c = model.energy_score(u, v)
    hess = [torch.autograd.functional.hessian(lambda t: model.flow_energy(t.unsqueeze(0)).squeeze(0), ui)
            for ui in u]
    assert torch.allclose(c, torch.stack([vi @ h @ vi for vi, h in zip(v, hess)]), atol=1e-10)
    with pytest.raises(ValueError, match="direction"):
        model.energy_score(u, v[:, :1])


@pytest.mark.parametrize("smoothness", [0.5, 0.75, 1.0, 2.0])
def test_logit_transform_derivatives_orders_1_to_3_match_autograd(smoothness):
    """``LogitTransform(smoothness=a).derivatives(x, 3)``: every derivative of ``g = logit(p) / a`` and of
    ``l = log|g'|`` up to the third against nested autograd (the third derivative was once left unscaled)."""
    layer = LogitTransform(1e-2, smoothness=smoothness)
    x = (0.02 + 0.96 * torch.rand(40, generator=torch.Generator().manual_seed(3))).requires_grad_()
    out = layer.derivatives(x, 3)
    assert len(out) == 8
    g, l = out[0], out[1]
    ref_g, ref_l = [g], [l]
    for _ in range(3):
        (dg,) = torch.autograd.grad(ref_g[-1].sum(), x, create_graph=True)
        (dl,) = torch.autograd.grad(ref_l[-1].sum(), x, create_graph=True)
        ref_g.append(dg)
        ref_l.append(dl)
    for k in (1, 2, 3):
        torch.testing.assert_close(out[2 * k], ref_g[k], rtol=1e-10, atol=1e-10, msg=f"g^({k})")
        torch.testing.assert_close(out[2 * k + 1], ref_l[k], rtol=1e-10, atol=1e-10, msg=f"l^({k})")
    torch.testing.assert_close(g, torch.logit(0.01 + 0.98 * x) / smoothness)
    assert all(torch.equal(a, b) for a, b in zip(layer.derivatives(x, 2), out[:6]))
