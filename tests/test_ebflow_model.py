"""EBFlow model: exact log-density (brute-force change of variables, normalisation), inverse, score, cache."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

import ebflow
from ebflow import architectures as A
from ebflow import layers as L
from ebflow.preprocessing import LogitTransform, dequantize
from conftest import randomise

pytestmark = pytest.mark.usefixtures("float64")


def _brute_log_prob(model: ebflow.EBFlow, x: torch.Tensor) -> torch.Tensor:
    """log N(T(x)) + log|det dT/dx| with T = flow o preprocessing and the full autograd Jacobian."""

    def T(v):
        return model.flow(model.preprocess(v.unsqueeze(0))[0])[0].squeeze(0)

    out = []
    for xi in x:
        z = T(xi)
        logdet = torch.linalg.slogdet(jacobian(T, xi))[1]
        out.append(-0.5 * z.pow(2).sum() - 0.5 * z.numel() * math.log(2 * math.pi) + logdet)
    return torch.stack(out)


MODELS = {
    "fc": lambda: randomise(A.fully_connected(6, num_layers=3)),
    "fc-orth-nobias": lambda: randomise(A.fully_connected(4, 2, init="orthogonal", bias=False, neg_init=False)),
    "cnn": lambda: randomise(A.cnn((2, 2, 3), num_layers=3)),
    "cnn-k5": lambda: randomise(A.cnn((1, 4, 4), num_layers=2, kernel_size=5)),
    "coupling": lambda: randomise(A.coupling(5, num_blocks=3, hidden=8)),
    "mixed": lambda: randomise(ebflow.EBFlow(
        [L.Conv2d((1, 2, 2)), L.SmoothLeakyReLU(), L.AffineCoupling(4, hidden=8), L.ActNorm((1, 2, 2)),
         L.Dense(4)], (1, 2, 2))),
}
MAP_MODELS = {
    "fc-map": lambda: randomise(A.fully_connected(4, preprocessing=LogitTransform(1e-3))),
    "coupling-map": lambda: randomise(A.coupling(3, num_blocks=2, hidden=8, preprocessing=LogitTransform(1e-3))),
    # without MaP: the logit sits inside the model as a non-linear layer
    "logit-layer": lambda: randomise(ebflow.EBFlow([L.Logit(1e-3), L.Dense(3), L.SmoothLeakyReLU(), L.Dense(3)], 3)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_log_prob_equals_brute_force_change_of_variables(name):
    model = MODELS[name]()
    x = torch.randn(4, model.dim)
    assert torch.allclose(model.log_prob(x), _brute_log_prob(model, x), atol=1e-5)


@pytest.mark.parametrize("name", list(MAP_MODELS))
def test_log_prob_with_preprocessing_equals_brute_force(name):
    model = MAP_MODELS[name]()
    x = torch.rand(4, model.dim)
    assert torch.allclose(model.log_prob(x), _brute_log_prob(model, x), atol=1e-5)


def test_energy_and_log_prob_decomposition():
    model = MAP_MODELS["fc-map"]()
    x = torch.rand(5, 4)
    u, pre_ld = model.preprocess(x)
    z, ld = model(x)
    energy = 0.5 * z.pow(2).sum(1) + 2 * math.log(2 * math.pi) - ld
    assert torch.allclose(model.energy(x), energy)
    lin = sum(layer.const_logdet() for layer in model.layers if layer.linear)
    assert torch.allclose(model.log_prob(x), -energy + lin + pre_ld)
    assert torch.allclose(model.linear_logdet(), lin)


def _integrate_2d(model, lo, hi, n):
    grid = torch.linspace(lo, hi, n + 1)
    mid = 0.5 * (grid[1:] + grid[:-1])
    xx, yy = torch.meshgrid(mid, mid, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    with torch.no_grad():
        dens = model.log_prob(pts).exp()
    return dens.sum().item() * ((hi - lo) / n) ** 2


def test_density_of_2d_model_integrates_to_one():
    model = randomise(A.toy2d(num_blocks=3, hidden=16), scale=0.2)
    assert _integrate_2d(model, -9.0, 9.0, 500) == pytest.approx(1.0, abs=1e-2)


def test_density_with_map_integrates_to_one_over_unit_square():
    model = randomise(A.toy2d(num_blocks=2, hidden=16), scale=0.2)
    model = ebflow.EBFlow(list(model.layers), 2, LogitTransform(1e-4))
    assert _integrate_2d(model, 0.0, 1.0, 500) == pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize("name", list(MODELS) + list(MAP_MODELS))
def test_inverse_round_trip_and_samples(name):
    model = (MODELS | MAP_MODELS)[name]()
    x = torch.rand(6, model.dim) if name in MAP_MODELS else torch.randn(6, model.dim)
    z, _ = model(x)
    assert torch.allclose(model.inverse(z), x, atol=1e-5)
    s = model.sample(5, torch.Generator().manual_seed(3))
    assert s.shape == (5, model.dim) and s.dtype == torch.float64 and not s.requires_grad
    assert torch.allclose(s, model.sample(5, torch.Generator().manual_seed(3)))
    assert torch.allclose(model.inverse(model(s)[0]), s, atol=1e-5)


def test_samples_follow_the_model_distribution():
    """A single dense layer z = W x + b is the Gaussian N(-W^-1 b, (W^T W)^-1): check the sample moments."""
    model = randomise(ebflow.EBFlow([L.Dense(2)], 2), scale=0.5)
    W, b = model.layers[0].weight.detach(), model.layers[0].bias.detach()
    s = model.sample(200_000, torch.Generator().manual_seed(0))
    assert torch.allclose(s.mean(0), -torch.linalg.solve(W, b), atol=2e-2)
    assert torch.allclose(torch.cov(s.T), torch.linalg.inv(W.T @ W), atol=3e-2)


def test_sample_follows_parameter_dtype():
    model = A.fully_connected(3).float()
    assert model.sample(4).dtype == torch.float32
    assert model.log_prob(torch.randn(4, 3, dtype=torch.float32)).dtype == torch.float32


def test_score_matches_finite_differences_of_log_prob():
    for model, x in [(MODELS["coupling"](), torch.randn(3, 5)), (MAP_MODELS["fc-map"](), torch.rand(3, 4) * 0.8 + 0.1)]:
        score = model.score(x)
        h = 1e-6
        for i in range(model.dim):
            e = torch.zeros(model.dim)
            e[i] = h
            with torch.no_grad():
                fd = (model.log_prob(x + e) - model.log_prob(x - e)) / (2 * h)
            assert torch.allclose(score[:, i], fd, atol=1e-6)
    # without preprocessing the score is minus the energy gradient
    model = MODELS["fc"]()
    x = torch.randn(3, 6).requires_grad_()
    (g,) = torch.autograd.grad(model.energy(x).sum(), x)
    assert torch.allclose(model.score(x), -g)


def test_linear_logdet_cache_invalidated_by_optimizer_step():
    model = randomise(A.fully_connected(4))
    with torch.no_grad():
        first = model.linear_logdet()
        assert model.linear_logdet() is first  # cached
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = -model.log_prob(torch.randn(8, 4)).mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = model.linear_logdet()
    fresh = sum(torch.linalg.slogdet(layer.weight)[1] for layer in model.layers if layer.linear)
    assert after is not first and not torch.allclose(after, first)
    assert torch.allclose(after, fresh)


def test_linear_logdet_keeps_gradients_and_sees_state_dict_loads():
    model = randomise(A.fully_connected(3))
    value = model.linear_logdet()
    assert value.requires_grad
    value.backward()
    W = model.layers[0].weight
    assert torch.allclose(W.grad, torch.linalg.inv(W.detach()).T)  # d log|det W| / dW = W^-T
    with torch.no_grad():
        before = model.linear_logdet()
        other = randomise(A.fully_connected(3), seed=7)
        model.load_state_dict(other.state_dict())
        assert torch.allclose(model.linear_logdet(), other.linear_logdet())
        assert not torch.allclose(model.linear_logdet(), before)


def test_dequantize_and_logit_transform():
    x_int = torch.randint(0, 256, (1000, 3))
    x = dequantize(x_int, 256.0, torch.Generator().manual_seed(0))
    assert (x >= x_int / 256).all() and (x < (x_int + 1) / 256).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        A.fully_connected(3, preprocessing=LogitTransform()).log_prob(torch.full((2, 3), 1.5))


def test_bad_inputs_are_named():
    model = A.fully_connected(3)
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        model.log_prob(torch.randn(2, 4))
    with pytest.raises(TypeError, match="Layer"):
        ebflow.EBFlow([torch.nn.Linear(3, 3)], 3)
    with pytest.raises(ValueError, match="trainable"):
        ebflow.EBFlow([L.Dense(3)], 3, preprocessing=L.Dense(3))


def test_empty_batch_sample_zero_numpy_and_float64_inputs():
    """Library-level API errors are named, not torch's reshape/dtype errors from deep inside a layer."""
    import numpy as np

    model = randomise(A.fully_connected(3))
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="empty batch"):
        model.log_prob(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="empty batch"):
        ebflow.objectives.get("dsm")(model, torch.zeros(0, 3), std=0.1)
    empty = model.sample(0)
    assert empty.shape == (0, 3) and empty.dtype == torch.float64  # this file runs in float64
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        model.sample(-1)
    # numpy and float32 input are cast to the model's dtype (float64 here; the model's, whatever it is)
    x = x.float()
    ref = model.log_prob(x.double())
    for other in (x, x.numpy(), x.double().numpy()):
        got = model.log_prob(other)
        assert got.dtype == torch.float64 and torch.allclose(got, ref)
    assert torch.allclose(model.score(x.numpy()), model.score(x.double()))
    # the cast keeps the graph: gradients reach a float32 input
    x32 = x.clone().requires_grad_(True)
    model.log_prob(x32).sum().backward()
    assert x32.grad is not None and x32.grad.dtype == torch.float32
    # and a float32 model takes float64 / numpy float64 data
    m32 = randomise(A.fully_connected(3).float())
    assert m32.log_prob(x.double().numpy()).dtype == torch.float32
    with pytest.raises(TypeError, match="real-valued"):
        model.log_prob(torch.zeros(2, 3, dtype=torch.complex64))
