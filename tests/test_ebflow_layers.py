"""Layers of ebflow: exact inverses and log-dets against brute-force autograd Jacobians (float64)."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from ebflow import layers as L

from conftest import randomise

pytestmark = pytest.mark.usefixtures("float64")


def _cases():
    return [
        ("dense", lambda: randomise(L.Dense(5)), (5,)),
        ("dense-neg-orth", lambda: randomise(L.Dense(5, init="orthogonal", neg_init=True, bias_init=1.0)), (5,)),
        ("dense-no-bias", lambda: randomise(L.Dense(4, bias=False)), (4,)),
        ("conv3", lambda: randomise(L.Conv2d((2, 3, 3), 3)), (2, 3, 3)),
        ("conv5", lambda: randomise(L.Conv2d((1, 4, 4), 5, neg_init=True)), (1, 4, 4)),
        ("actnorm", lambda: randomise(L.ActNorm(5)), (5,)),
        ("actnorm-image", lambda: randomise(L.ActNorm((2, 2, 2))), (2, 2, 2)),
        ("slrelu", lambda: L.SmoothLeakyReLU(0.3), (5,)),
        ("slrelu-image", lambda: L.SmoothLeakyReLU(0.1), (2, 2, 2)),
        ("slrelu-residual", lambda: L.SmoothLeakyReLU(0.3, residual=True), (5,)),
        ("slrelu-residual-image", lambda: L.SmoothLeakyReLU(0.05, residual=True), (2, 2, 2)),
        ("coupling", lambda: randomise(L.AffineCoupling(5, hidden=8, parity=1)), (5,)),
        ("coupling-image", lambda: randomise(L.AffineCoupling(8, hidden=8)), (2, 2, 2)),
        ("sigmoid", lambda: L.Sigmoid(1e-3), (5,)),
    ]


CASES = _cases()


@pytest.mark.parametrize("name,make,shape", CASES, ids=[c[0] for c in CASES])
def test_inverse_round_trip(name, make, shape):
    layer = make()
    x = 2.0 * torch.randn(6, *shape)
    y, _ = layer(x)
    assert y.shape == x.shape
    assert torch.allclose(layer.inverse(y), x, atol=1e-10)
    # and the other way round
    assert torch.allclose(layer(layer.inverse(y))[0], y, atol=1e-10)


@pytest.mark.parametrize("name,make,shape", CASES, ids=[c[0] for c in CASES])
def test_logdet_matches_autograd_jacobian(name, make, shape):
    layer = make()
    x = torch.randn(3, *shape)
    _, ld = layer(x)
    brute = []
    for xi in x:
        jac = jacobian(lambda v: layer(v.unsqueeze(0))[0].reshape(-1), xi).reshape(xi.numel(), xi.numel())
        brute.append(torch.linalg.slogdet(jac)[1])
    brute = torch.stack(brute)
    if layer.linear:
        assert ld is None
        assert torch.allclose(layer.const_logdet().expand(3), brute, atol=1e-10)
    else:
        assert ld.shape == (3,)
        assert torch.allclose(ld, brute, atol=1e-10)
        with pytest.raises(TypeError, match="non-linear"):
            layer.const_logdet()


def test_logit_round_trip_and_logdet():
    layer = L.Logit(1e-3)
    x = torch.rand(4, 3)
    y, ld = layer(x)
    assert torch.allclose(layer.inverse(y), x, atol=1e-12)
    p = 1e-3 + (1 - 2e-3) * x
    assert torch.allclose(y, torch.log(p / (1 - p)))
    expected = (math.log(1 - 2e-3) - torch.log(p * (1 - p))).sum(1)
    assert torch.allclose(ld, expected)
    # Sigmoid is its inverse, with the opposite log-det
    back, ld_back = L.Sigmoid(1e-3)(y)
    assert torch.allclose(back, x, atol=1e-12)
    assert torch.allclose(ld_back, -ld, atol=1e-10)


def test_conv_matrix_is_the_convolution():
    conv = randomise(L.Conv2d((2, 3, 4), 3), scale=1.0)
    x = torch.randn(5, 2, 3, 4)
    y, _ = conv(x)
    expected = x.reshape(5, -1) @ conv.matrix().T + conv.bias.repeat_interleave(12)
    assert torch.allclose(y.reshape(5, -1), expected, atol=1e-12)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_smooth_leaky_relu_inverse_on_wide_range(dtype, tol, residual):
    layer = L.SmoothLeakyReLU(0.3, residual=residual)
    x = torch.linspace(-60, 60, 2001, dtype=dtype).reshape(-1, 1)
    y, _ = layer(x)
    assert torch.allclose(layer.inverse(y), x, atol=tol, rtol=tol)
    # derivative matches alpha + (1 - alpha) sigmoid(x) (+ 1 for the residual form)
    _, ld = layer(torch.tensor([[0.0]], dtype=dtype))
    assert ld.item() == pytest.approx(math.log(residual + 0.3 + 0.7 * 0.5), abs=1e-6)


def test_residual_smooth_leaky_relu_is_the_official_cifar_activation():
    """``x + alpha x + (1 - alpha) log(1 + e^x)`` (models/cifar/fc.py: SmoothLeakyRelu(alpha, residual=True)),
    i.e. the plain form plus the identity, with slope in (1 + alpha, 2)."""
    x = torch.linspace(-30, 30, 601).reshape(-1, 1)
    plain, res = L.SmoothLeakyReLU(0.3), L.SmoothLeakyReLU(0.3, residual=True)
    lse = torch.logsumexp(torch.stack((torch.zeros_like(x), x)), dim=0)
    assert torch.allclose(res(x)[0], x + 0.3 * x + 0.7 * lse, atol=1e-12)
    assert torch.allclose(res(x)[0], plain(x)[0] + x, atol=1e-12)
    slope = torch.exp(res.derivatives(x, 1)[1])
    assert bool(((slope > 1.3) & (slope < 2.0)).all())
    assert "residual=True" in repr(res) and "residual" not in repr(plain)


def test_dense_inits():
    assert torch.equal(L.Dense(3, neg_init=True).weight, -torch.eye(3))
    w = L.Dense(4, init="orthogonal").weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(4), atol=1e-6)
    assert torch.equal(L.Dense(3, bias_init=1.0).bias, torch.ones(3))
    assert L.Dense(3).const_logdet().item() == pytest.approx(0.0)


def test_layers_work_in_float32_and_keep_dtype():
    layer = L.Dense(3).float()
    y, _ = layer(torch.randn(2, 3, dtype=torch.float32))
    assert y.dtype == torch.float32


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="kernel_size"):
        L.Conv2d((1, 3, 3), 2)
    with pytest.raises(ValueError, match="alpha"):
        L.SmoothLeakyReLU(1.5)
    with pytest.raises(ValueError, match="init"):
        L.Dense(3, init="lu")
    with pytest.raises(ValueError, match="mask"):
        L.AffineCoupling(3, mask=torch.ones(3))
    with pytest.raises(ValueError, match="features"):
        L.Dense(3)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="lam"):
        L.Logit(0.5)


@pytest.mark.parametrize("smoothness", [0.5, 0.75, 1.0, 2.0])
def test_logit_transform_smoothness_logdet_matches_autograd_jacobian(float64, smoothness):
    """u = logit(p) / a: the per-sample log-det equals log|det| of the autograd Jacobian, in float64."""
    from ebflow.preprocessing import LogitTransform

    pre = LogitTransform(1e-6, smoothness=smoothness)
    x = 0.05 + 0.9 * torch.rand(3, 4)
    u, ld = pre(x)
    p = 1e-6 + (1 - 2e-6) * x
    torch.testing.assert_close(u, torch.log(p / (1 - p)) / smoothness)
    for i in range(3):
        jac = jacobian(lambda v: pre(v[None])[0][0], x[i])
        torch.testing.assert_close(ld[i], torch.linalg.slogdet(jac)[1], atol=1e-10, rtol=0)
    torch.testing.assert_close(pre.inverse(u), x, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="smoothness must be a positive"):
        LogitTransform(smoothness=0.0)
