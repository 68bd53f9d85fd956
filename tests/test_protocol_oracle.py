"""Oracle tests of the protocol conversions (``ebflow_bench.protocols``).

For each objective and each official config family, the official loss is computed here the way the official
code computes it (``real_world/ebflow/train/experiment.py`` ``Experiment.get_loss``; the toys'
``toy_examples/ebflow/run_lib/train_twodim.py``): its ``[B, C, H, W]`` layout, its reductions over the channel
axis, its ``/ dim`` and ``/ eps**2``, its regulariser added per entry, its ``2B`` divisor of SML. This is this
test's own code, written from reading the official code (nothing copied). On the same float64 weights, batch
and noise, the suite's objective with the *converted* hyperparameters must have the gradient ``loss_scale``
times the official one (1e-8 relative), and the converted gradient clip must clip it the same way.

The noise: the suite's objectives draw from the ``generator`` they are given; the official side here draws the
same tensors from a generator with the same seed, in the suite's draw order (DSM ``eps [B, D]``; SSM ``v
[slices * B, D]``; FDSSM ``w [B, D]``; SML the base draw ``z [B, D]`` of the model samples), reshaped to the
official layout.

For the FC families the official energy is computed from the model's weights as the official modules do
(``FullyConnected`` = a 1x1 convolution of ``[B, D, 1, 1]``, ``SmoothLeakyRelu`` with its ``act_prime``
log-det, ``NegativeLogGaussian``; linear log-dets zeroed by ``zero_ldj=True``), independently of the suite's
energy/score code (fused derivatives); for the CNN and toy families the architectures differ from the official
ones anyway, so the energy is the suite's ``flow_energy`` and only the loss arithmetic is under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from ebflow import objectives
from ebflow.architectures import cnn, coupling, fully_connected
from ebflow.layers import Dense, SmoothLeakyReLU
from ebflow.preprocessing import LogitTransform
from ebflow.training import train_step
from ebflow_bench import protocols as P

SEED = 1234
B = 6
#: (family, data shape used here): MNIST FC at its official shape; CIFAR-10 FC and CNN at smaller images with
#: CIFAR-10's 3 channels (the conversions depend on C, H, W, which stay distinct; O(D^3) ML kept cheap); a 2-D toy
FAMILIES = {"mnist-fc": (1, 28, 28), "cifar-fc": (3, 16, 16), "cifar-cnn": (3, 6, 6), "toy-swirl": (2,)}
CASES = [(f, o) for f in FAMILIES for o in P.OBJECTIVES]


# ------------------------------------------------------------------------------------------------ the models
def _model(family: str, shape: tuple[int, ...]):
    torch.manual_seed(0)
    if family.startswith("toy"):
        model = coupling(2, 2, hidden=16)
    elif family.endswith("cnn"):
        model = cnn(shape, 2)
    else:
        model = fully_connected(math.prod(shape), 2, residual=P.official(family, "ml").activation == "residual")
    model = model.double()
    with torch.no_grad():  # move off the symmetric initialisation so that every gradient entry is generic
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _official_energy(model, family: str):
    """``x [B, *shape] -> E [B]`` (the official ``-neg_e`` with ``zero_ldj=True``) and the linear log-det."""
    if not family.endswith("fc"):
        return (lambda x: model.flow_energy(x.reshape(len(x), -1))), model.linear_logdet

    def energy(x):
        h = x.reshape(len(x), -1)
        logdet = torch.zeros(len(x), dtype=x.dtype)
        for layer in model.layers:
            if isinstance(layer, Dense):  # FullyConnected: conv 1x1 of [B, D, 1, 1], then .view(-1, D)
                h = torch.nn.functional.conv2d(h[:, :, None, None], layer.weight[:, :, None, None],
                                               layer.bias).view(len(x), -1)
            else:
                assert isinstance(layer, SmoothLeakyReLU)
                a, res = layer.alpha, (1.0 if layer.residual else 0.0)
                logdet = logdet + torch.log(torch.abs(a + (1 - a) * torch.sigmoid(h) + res)).flatten(1).sum(-1)
                h = a * h + (1 - a) * torch.logsumexp(torch.stack((torch.zeros_like(h), h)), dim=0) + res * h
        d = h.shape[1]
        log_base = -0.5 * h.pow(2).sum(1) - 0.5 * d * math.log(2 * math.pi)  # MultivariateNormal(0, I)
        return -(log_base + logdet)

    def linear_logdet():
        return sum(torch.linalg.slogdet(layer.weight)[1] for layer in model.layers if isinstance(layer, Dense))

    return energy, linear_logdet


# ----------------------------------------------------------------------------------- the official losses
def _official_loss(family: str, objective: str, model, x: torch.Tensor, cfg, shape):
    """The official training loss on ``x`` (the flow's input: after the fixed preprocessing), in its layout."""
    energy, linear_logdet = _official_energy(model, family)
    g = torch.Generator().manual_seed(SEED)
    n, d = x.shape[0], math.prod(shape)
    draw = lambda rows: torch.randn((rows, d), generator=g, dtype=x.dtype)  # noqa: E731
    if cfg.code == "toy":
        return _official_toy_loss(objective, model, energy, linear_logdet, x, cfg, draw)
    x = x.reshape(n, *shape)  # [B, C, H, W]
    lam = cfg["lambda"]
    if objective == "ml":
        lossval = energy(x) - linear_logdet()  # -log_prob(x, zero_ldj=False)
        return lossval.sum() / len(x)
    if objective == "sml":
        with torch.no_grad():
            x_sample = model.flow_inverse(draw(n))  # model.sample(B): base draw, inverted
            x = torch.cat([x, x_sample.view(x.shape)], 0)
        e = energy(x)
        lossval = e[:n] - e[n:]
        return lossval.sum() / len(x)  # len(x) == 2B
    if objective == "dsm":
        std = cfg["std"]
        noise = draw(n).view(x.shape)
        xp = (x + std * noise).requires_grad_()
        neg_e = -energy(xp)
        score = torch.autograd.grad(neg_e.sum(), xp, create_graph=True)[0]
        lossval = torch.sum(torch.square(score + noise / std) * 0.5, dim=1)  # [B, H, W]: channels summed only
        if lam != 0:
            lossval = lossval + (-neg_e).mean() * lam  # the scalar added to each of the B*H*W entries
        return lossval.sum() / len(x) / d
    if objective == "ssm":
        k = cfg["slices"]
        xs = x.unsqueeze(0).expand(k, *x.shape).contiguous().view(-1, *x.shape[1:]).requires_grad_()
        v = draw(k * n).view(xs.shape).sign()
        neg_e = -energy(xs)
        score = torch.autograd.grad(neg_e.sum(), xs, create_graph=True)[0]
        square = 0.5 * torch.sum(score**2, dim=1)
        gvs = torch.autograd.grad(torch.sum(torch.sum(score * v, dim=1)), xs, create_graph=True)[0]
        trace = torch.sum(v * gvs, dim=1)
        lossval = (square + trace).view(k, -1).mean(dim=0)
        if lam != 0:
            lossval = lossval + (-neg_e).mean() * lam
        return lossval.sum() / len(xs) / d  # len(x) is k*B here
    if objective == "fdssm":
        eps = cfg["eps"]
        v = draw(n).view(x.shape)
        v = v / torch.sqrt(torch.sum(v**2, dim=tuple(range(1, v.ndim)), keepdim=True)) * eps
        e = energy(torch.cat([x, x + v, x - v], 0))
        out_1, out_2, out_3 = e[:n], e[n:2 * n], e[2 * n:]
        lossval = (out_2 - out_3) ** 2 / 8 + (-out_2 - out_3 + 2 * out_1)
        if lam != 0:
            lossval = lossval + out_1.mean() * lam
        return lossval.sum() / len(x) / eps**2
    raise AssertionError(objective)


def _official_toy_loss(objective, model, energy, linear_logdet, x, cfg, draw):
    """The toy loop: ``x`` is the smoothed batch; DSM's noise is the smoothing noise itself (lines 101-103),
    so here ``x`` is the raw batch and DSM adds ``std * noise`` as the loop does before every loss."""
    n = len(x)
    if objective == "ml":
        return (energy(x) - linear_logdet()).mean()
    if objective == "sml":
        with torch.no_grad():
            x_fake = model.flow_inverse(draw(n))
        e = energy(torch.cat([x, x_fake], 0))
        return (e[:n] - e[n:]).mean()
    if objective == "dsm":
        std = cfg["std"]
        noise = draw(n)
        xp = (x + std * noise).requires_grad_()
        score = torch.autograd.grad((-energy(xp)).sum(), xp, create_graph=True)[0]
        return (torch.sum(torch.square(score + noise / std), dim=1) * 0.5).mean()
    if objective == "ssm":
        xs = x.detach().requires_grad_()
        v = draw(n).sign()
        score = torch.autograd.grad((-energy(xs)).sum(), xs, create_graph=True)[0]
        gvs = torch.autograd.grad(torch.sum(score * v), xs, create_graph=True)[0]
        return (0.5 * torch.sum(score**2, dim=1) + torch.sum(v * gvs, dim=1)).mean()
    if objective == "fdssm":
        eps, dim = P.TOY_FDSSM_EPS[0], 2
        v = draw(n)
        v = v / torch.sqrt(torch.sum(v**2, dim=-1, keepdim=True) + 1e-8) * eps
        e = energy(torch.cat([x, x + v, x - v], 0))
        out_1, out_2, out_3 = e[:n], e[n:2 * n], e[2 * n:]
        return ((out_2 - out_3) ** 2 / 8 + (-out_2 - out_3 + 2 * out_1)).mean() / eps**2 * dim
    raise AssertionError(objective)


# ------------------------------------------------------------------------------------------- the comparison
def _batch(shape, family) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    d = math.prod(shape)
    if family.startswith("toy"):
        return torch.randn((B, d), generator=g, dtype=torch.float64) * 1.5
    # dequantized pixels through the official preprocessing (logit / a, a = the config's smoothness)
    a = P.official(family, "ml")["logit_smoothness"]
    p = (torch.randint(0, 256, (B, d), generator=g).double() + torch.rand((B, d), generator=g).double()) / 256
    p = (p + 1e-6) * (1 - 2e-6)
    return (torch.log(p) - torch.log(1 - p)) / a


def _suite_kwargs(objective: str, hp: dict) -> dict:
    keys = {"ssm": ("slices", "lam"), "dsm": ("std", "lam"), "fdssm": ("eps", "lam")}.get(objective, ())
    out = {k: hp[k] for k in keys}
    if objective != "ml":
        out["generator"] = torch.Generator().manual_seed(SEED)
    return out


def _flat_grad(model, loss) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _compare(family: str, objective: str) -> dict:
    """Official and suite gradients (and clipped updates) on the same weights, batch and noise."""
    shape = FAMILIES[family]
    cfg = P.official(family, objective)
    hp = P.suite_hparams(cfg, shape)
    model = _model(family, shape)
    x = _batch(shape, family)
    k = P.loss_scale(objective, shape, cfg.code, int(cfg.values.get("slices", 1)))
    g_off = _flat_grad(model, _official_loss(family, objective, model, x, cfg, shape))
    g_suite = _flat_grad(model, objectives.get(objective)(model, x, **_suite_kwargs(objective, hp)))
    # the clip: official clip_grad_norm_(c) at half the official gradient's norm (so it is active), converted
    c = 0.5 * float(g_off.norm())
    clip_hp = P.gradient_clip(objective, c, shape, cfg.code, int(cfg.values.get("slices", 1)))
    suite_clip = clip_hp.get("clip", clip_hp.get("clip_per_dim", 0.0) * math.prod(shape))  # the adapter's rule
    step = _sgd_update(model, x, objective, hp, suite_clip)
    # torch.nn.utils.clip_grad_norm_ (both codes): coefficient max_norm / (total_norm + 1e-6), capped at 1
    clipped_off = g_off * min(1.0, c / (float(g_off.norm()) + 1e-6))
    return {"k": k, "g_off": g_off, "g_suite": g_suite, "clipped_off": clipped_off, "suite_step": step}


def _sgd_update(model, x, objective, hp, clip) -> torch.Tensor:
    """``-(parameter change)`` of one ``ebflow.training.train_step`` with SGD lr 1 and the suite's clip."""
    before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    train_step(model, opt, objectives.get(objective), x, clip=clip, **_suite_kwargs(objective, hp))
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    with torch.no_grad():  # restore
        i = 0
        for p in model.parameters():
            p.copy_(before[i:i + p.numel()].view_as(p))
            i += p.numel()
    return before - after


@pytest.mark.parametrize(("family", "objective"), CASES, ids=[f"{f}-{o}" for f, o in CASES])
def test_suite_gradient_is_the_official_gradient_times_the_loss_scale(family, objective):
    r = _compare(family, objective)
    assert _rel(r["g_suite"], r["k"] * r["g_off"]) < 1e-8
    # the converted clip clips the suite's gradient to k times the officially clipped one, up to the 1e-6 that
    # clip_grad_norm_ adds to the norm (on both scales, so not scale-invariant: 1e-6 / |g| relative at most)
    assert _rel(r["suite_step"], r["k"] * r["clipped_off"]) < 1e-8 + 1e-6 / float(r["g_off"].norm())


def test_a_wrong_conversion_fails_the_oracle(monkeypatch):
    """The DSM/SSM regulariser without H*W (``lam = lambda``, the old preset's value) and the toy clip on the
    per-dimension scale (the old paper preset's ``clip_per_dim``) are caught."""
    assert _rel(_compare("cifar-fc", "dsm")["g_suite"], 768 * _compare("cifar-fc", "dsm")["g_off"]) < 1e-8
    monkeypatch.setattr(P, "energy_regulariser", lambda objective, lam, shape, eps=None: lam)
    r = _compare("cifar-fc", "dsm")
    assert _rel(r["g_suite"], r["k"] * r["g_off"]) > 1e-4
    r = _compare("cifar-fc", "ssm")
    assert _rel(r["g_suite"], r["k"] * r["g_off"]) > 1e-4
    monkeypatch.undo()
    monkeypatch.setattr(P, "gradient_clip", lambda objective, clip, shape, code="real_world", slices=1:
                        {"clip_per_dim": clip})
    r = _compare("toy-swirl", "dsm")
    assert _rel(r["suite_step"], r["k"] * r["clipped_off"]) > 1e-4


def test_the_logit_smoothness_conversion_is_the_official_preprocessing():
    """``LogitTransform(smoothness=a)`` on dequantized pixels equals the official ``Normalization(0, 256)``,
    ``Normalization(-shift, 1 / (1 - 2 shift))``, ``LogitTransform(a)`` chain, values and log-dets."""
    a = P.logit_smoothness(P.official("cifar-fc", "dsm")["logit_smoothness"])
    g = torch.Generator().manual_seed(3)
    xi = torch.randint(0, 256, (5, 12), generator=g).double() + torch.rand((5, 12), generator=g).double()
    shift = 1e-6
    p = (xi / 256 + shift) * (1 - 2 * shift)
    u_off = (1 / a) * (torch.log(p) - torch.log(1 - p))
    ld_off = (-12 * math.log(256) - 12 * math.log(1 / (1 - 2 * shift))
              + (-math.log(a) - torch.log(p) - torch.log(1 - p)).sum(-1))
    u, ld = LogitTransform(smoothness=a).double()(xi / 256)
    assert torch.allclose(u, u_off, rtol=1e-9, atol=1e-9)
    assert torch.allclose(ld - 12 * math.log(256), ld_off, rtol=1e-9, atol=1e-6)
