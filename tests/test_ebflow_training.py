"""Training loop, EMA, and end-to-end: every objective lowers the held-out NLL of a small 2-D model."""

import math

import pytest
import torch

from ebflow import architectures as A
from ebflow import layers as L
from ebflow import objectives as O
from ebflow.ema import EMA
from ebflow.model import EBFlow
from ebflow.training import fit, train_step


def _two_moons_like(n: int, seed: int) -> torch.Tensor:
    """Anisotropic two-component mixture, far from the standard normal the flows start as (NLL 5.65 at init;
    200 steps reach about 2.3 with ml/sml and 3.3-3.4 with the score-matching objectives)."""
    g = torch.Generator().manual_seed(seed)
    comp = torch.randint(0, 2, (n, 1), generator=g).float()
    centre = torch.tensor([[2.5, 1.0]]) * (2 * comp - 1)
    return centre + torch.randn(n, 2, generator=g) * torch.tensor([[0.6, 0.3]])


TRAIN, TEST = _two_moons_like(4000, 0), _two_moons_like(2000, 1)
HP = {"ml": {}, "sml": {}, "ssm": {}, "dsm": {"std": 0.3}, "fdssm": {"eps": 0.3}}


@pytest.mark.parametrize("objective", list(HP))
def test_training_lowers_held_out_nll(objective):
    torch.manual_seed(0)
    model = A.toy2d(num_blocks=3, hidden=16)
    with torch.no_grad():
        before = -model.log_prob(TEST).mean().item()
    result = fit(model, TRAIN, objective, steps=200, batch_size=128, lr=3e-3, clip=10.0, seed=0,
                 **HP[objective])
    assert len(result.losses) == 200 and all(math.isfinite(v) for v in result.losses)
    with torch.no_grad():
        after = -model.log_prob(TEST).mean().item()
    assert after < before - 1.5, (objective, before, after)


def test_train_step_raises_on_non_finite_loss_without_updating():
    model = A.fully_connected(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(FloatingPointError, match="non-finite"):
        train_step(model, opt, lambda m, x: m.energy(x).mean() * float("nan"), torch.randn(4, 3))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_train_step_clips_the_gradient_norm():
    model = EBFlow([L.Dense(3)], 3)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    train_step(model, opt, "ml", 10 * torch.randn(32, 3), clip=1e-3)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(1e-3, rel=1e-4)


def test_train_step_accepts_names_and_functions_and_passes_hyperparameters():
    model = A.fully_connected(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x = torch.randn(8, 3)
    assert train_step(model, opt, "sm", x, lam=0.5) == pytest.approx(O.sm(model, x, lam=0.5).item(), rel=1e-6)
    with pytest.raises(TypeError, match="std"):
        train_step(model, opt, "ssm", x, std=1.0)


def test_ema_update_swap_and_cache():
    model = EBFlow([L.Dense(2)], 2)
    ema = EMA(model, decay=0.5)
    w = model.layers[0].weight
    with torch.no_grad():
        w.fill_(2.0)
    ema.update()  # shadow = 0.5 * I + 0.5 * 2
    expected = 0.5 * torch.eye(2) + 1.0
    x = torch.randn(4, 2)
    with torch.no_grad():
        trained_logdet = model.linear_logdet()
        with ema.swapped():
            assert torch.allclose(w, expected)
            assert model.linear_logdet().item() == pytest.approx(torch.linalg.slogdet(expected)[1].item(), abs=1e-6)
            ema_lp = model.log_prob(x)
        assert torch.equal(w, torch.full((2, 2), 2.0))
        assert model.linear_logdet().item() == pytest.approx(trained_logdet.item())
        assert not torch.allclose(ema_lp, model.log_prob(x))
    with pytest.raises(ValueError, match="decay"):
        EMA(model, 1.0)


def test_ema_warmup_counts_the_update_before_the_decay():
    """Official EBFlow rule: n += 1, then decay = min(decay, (1 + n) / (10 + n)); first update uses 2/11."""
    model = EBFlow([L.Dense(1, bias=False)], 1)
    ema = EMA(model, decay=0.5, warmup=True)
    w = model.layers[0].weight
    shadow = 1.0
    for n, target in enumerate([3.0, 5.0, 7.0, 11.0, 2.0], start=1):
        with torch.no_grad():
            w.fill_(target)
        decay = min(0.5, (1 + n) / (10 + n))
        assert ema.current_decay() == pytest.approx(decay)
        ema.update()
        shadow = decay * shadow + (1 - decay) * target
        assert ema.shadow["layers.0.weight"].item() == pytest.approx(shadow)
    assert ema.num_updates == 5 and EMA(model, 0.9).current_decay() == 0.9


def test_decayed_lr_schedule():
    from ebflow.training import decayed_lr

    lrs = [decayed_lr(1e-4, t, steps_per_epoch=3, factor=0.5, epochs=2) for t in range(12)]
    assert lrs == pytest.approx([1e-4] * 3 + [5e-5] * 3 + [2.5e-5] * 6)
    assert decayed_lr(1.0, 10**6, 1, 1.0, 49) == 1.0
    assert decayed_lr(1.0, 600, 50, 0.95, 49) == pytest.approx(0.95**12)
    with pytest.raises(ValueError, match="decay factor"):
        decayed_lr(1.0, 0, 1, 1.5, 1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        decayed_lr(1.0, 0, 0, 0.5, 1)


def test_fit_is_reproducible_and_returns_ema():
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = A.toy2d(num_blocks=2, hidden=8)
        res = fit(model, TRAIN, "ssm", steps=5, batch_size=64, ema_decay=0.9, seed=3)
        runs.append(res.losses)
    assert runs[0] == runs[1]
    assert res.ema is not None and res.ema.num_updates == 5
    with pytest.raises(ValueError, match="optimizer"):
        fit(model, TRAIN, "ssm", steps=1, optimizer="lbfgs")
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        fit(model, torch.randn(10, 3), "ssm", steps=1)


def test_train_step_with_fused_adam_keeps_the_logdet_cache_fresh():
    """Fused Adam writes parameters without bumping their version counters; train_step must still leave
    ``log_prob`` exact (the cache is dropped after every step)."""
    model = A.fully_connected(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.log_prob(x)  # fills the cache
    train_step(model, opt, "ml", x)
    with torch.no_grad():
        cached = model.linear_logdet()
        fresh = sum(torch.linalg.slogdet(layer.weight)[1] for layer in model.layers if layer.linear)
    assert torch.allclose(cached, fresh, atol=1e-6)
