"""The fused dense sweep (ebflow.sweep): same values and exact gradients as the autograd path, in float64."""

from __future__ import annotations

import pytest
import torch

from ebflow import objectives as O
from ebflow import sweep
from ebflow.architectures import cnn, fully_connected
from ebflow.layers import Dense, Elementwise, Logit, SmoothLeakyReLU
from ebflow.model import EBFlow

D, B = 6, 5


def _perturbed(model: EBFlow, seed: int = 0) -> EBFlow:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def _models() -> dict[str, tuple[EBFlow, bool]]:
    """name -> (model, inputs in (0, 1))"""
    return {
        "fc-L1": (_perturbed(fully_connected(D, 1).double()), False),
        "fc-L2": (_perturbed(fully_connected(D, 2).double(), 1), False),
        "fc-L3": (_perturbed(fully_connected(D, 3).double(), 2), False),
        "logit-first-nobias": (_perturbed(EBFlow([Logit(0.05), Dense(D), SmoothLeakyReLU(0.2),
                                                  Dense(D, bias=False)], D).double(), 3), True),
        "elementwise-last": (_perturbed(EBFlow([Dense(D), SmoothLeakyReLU(0.3)], D).double(), 4), False),
        # the official CIFAR-10 FC model: residual activations x + alpha x + (1 - alpha) softplus(x)
        "fc-residual-L2": (_perturbed(fully_connected(D, 2, residual=True).double(), 5), False),
        "fc-residual-L3": (_perturbed(fully_connected(D, 3, residual=True).double(), 6), False),
    }


def _inputs(unit: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(B, D, generator=gen, dtype=torch.float64) * 0.9 + 0.05 if unit else \
        torch.randn(B, D, generator=gen, dtype=torch.float64)
    return u, torch.randn(B, D, generator=gen, dtype=torch.float64)


def _loss(energy, grad, q, u):
    # a loss that weights every output differently per sample and dimension, so that every adjoint path counts
    out = (0.5 * grad.pow(2).sum(1) + (grad * torch.sin(u)).sum(1)).mean() + 0.3 * (energy * torch.cos(u[:, 0])).mean()
    return out if q is None else out - (q * (1.0 + u[:, 1])).mean()


@pytest.mark.parametrize("name", list(_models()))
@pytest.mark.parametrize("second", [False, True])
def test_fused_matches_autograd_path(name, second):
    model, unit = _models()[name]
    assert sweep.supports(model.layers)
    u, v = _inputs(unit, 0)
    v = v if second else None
    params = list(model.parameters())
    out = {}
    for fused in (False, True):
        e, g, q = model.energy_score(u, v, fused=fused)
        grads = torch.autograd.grad(_loss(e, g, q, u), params)
        out[fused] = (e, g, q, grads)
    (e0, g0, q0, G0), (e1, g1, q1, G1) = out[False], out[True]
    torch.testing.assert_close(e1, e0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g1, g0, rtol=1e-12, atol=1e-12)
    if second:
        torch.testing.assert_close(q1, q0, rtol=1e-11, atol=1e-10)
    else:
        assert q0 is None and q1 is None
    for a, b in zip(G0, G1):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["fc-L2", "fc-residual-L3"])
@pytest.mark.parametrize("second", [False, True])
def test_fused_gradient_matches_finite_differences(second, name):
    # gradcheck perturbs every parameter, u and v (float64 central differences) against the hand-written backward
    model, _ = _models()[name]
    u, v = _inputs(False, 1)
    layers = tuple(model.layers)
    # DenseSweep reads W and b from the layers; gradcheck perturbs its inputs in place, so pass those very tensors
    ps = [p for lay in layers if isinstance(lay, Dense) for p in (lay.weight, lay.bias)]
    uu = u.clone().requires_grad_(True)
    vv = v.clone().requires_grad_(second)

    def direct(u_, v_, *ps_):
        e, g, q = sweep.DenseSweep.apply(layers, u_, v_ if second else None, *ps_)
        return (e, g, q) if second else (e, g)

    assert torch.autograd.gradcheck(direct, (uu, vv, *ps), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["fc-L2", "fc-residual-L2"])
def test_objective_gradients_unchanged_by_fusion(name):
    # the training objectives see the same loss and parameter gradient with the fused sweep as without
    model, _ = _models()[name]
    x = torch.randn(B, D, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for name, hp in [("dsm", dict(std=0.3, lam=0.1)), ("ssm", dict(slices=2, lam=0.1))]:
        res = []
        for fused in (False, True):
            orig = model.energy_score
            model.energy_score = lambda u, v=None, _f=fused, _o=orig: _o(u, v, fused=_f)
            try:
                loss = O.get(name)(model, x, generator=torch.Generator().manual_seed(0), **hp)
                res.append((loss.detach(), torch.autograd.grad(loss, list(model.parameters()))))
            finally:
                del model.energy_score
        torch.testing.assert_close(res[1][0], res[0][0], rtol=1e-12, atol=1e-12)
        for a, b in zip(res[0][1], res[1][1]):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_third_derivatives_of_elementwise_layers():
    gen = torch.Generator().manual_seed(0)
    cases = [(SmoothLeakyReLU(0.3), 3 * torch.randn(64, generator=gen, dtype=torch.float64)),
             (SmoothLeakyReLU(0.3, residual=True), 3 * torch.randn(64, generator=gen, dtype=torch.float64)),
             (Logit(0.05), torch.rand(64, generator=gen, dtype=torch.float64))]
    for layer, x in cases:
        x = x.requires_grad_(True)
        out = layer.derivatives(x, 3)
        assert len(out) == 8
        for k in range(6):  # each derivative is the autograd derivative of the one before
            (d,) = torch.autograd.grad(out[k].sum(), x, retain_graph=True)
            torch.testing.assert_close(d, out[k + 2], rtol=1e-10, atol=1e-12)


def test_fused_path_is_once_differentiable_and_falls_back_where_needed():
    model, _ = _models()["fc-L2"]
    u, _ = _inputs(False, 2)
    e, g, _ = model.energy_score(u)
    (gw,) = torch.autograd.grad(g.pow(2).sum(), [model.layers[0].weight], create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(gw.sum(), [model.layers[0].weight])
    # with u requiring grad (derivatives in the data) the autograd path is used: second derivatives in u exist
    uu = u.clone().requires_grad_(True)
    _, g, _ = model.energy_score(uu)
    (row,) = torch.autograd.grad(g[:, 0].sum(), uu, create_graph=True)
    assert row.requires_grad


def test_supports():
    assert sweep.supports(fully_connected(4, 2).layers)
    assert not sweep.supports(cnn((1, 4, 4), 2).layers)  # convolutions keep the explicit sweep + autograd

    class Order2(Elementwise):
        def derivatives(self, x, order=0):  # pragma: no cover - never called
            raise NotImplementedError

    assert not sweep.supports([Dense(3), Order2()])
    assert not sweep.supports([SmoothLeakyReLU()])  # no dense layer
