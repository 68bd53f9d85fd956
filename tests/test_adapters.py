"""Every registered adapter honours the protocol; the EBFlow and library-flow adapters learn what they should.

The contract test is parametrised over ``available()``, so adapters added later are covered automatically.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from ebflow_bench.adapters import NLLUnavailable, Unsupported, available, get
from ebflow_bench.tasks import Task

warnings.filterwarnings("ignore", category=UserWarning)  # nflows / normflows deprecation warnings

LAYERS = 2
BATCH = 32
#: small sizes applied to whichever of these hyperparameters an adapter has (keeps the whole file fast)
SMALL = {"hidden": 8, "flow_hidden": 8, "ebm_hidden": 16, "context": 4, "n_chains": 16, "n_is": 64,
         "n_proposals": 4, "sample_steps": 5, "ula_steps": 2, "mala_steps": 2, "batch_size": BATCH}
FAMILIES = {"approx-ml", "ebflow", "energy-flow", "flowmc-ebm", "mle-flow", "reference"}


def _flat_task() -> Task:
    g = torch.Generator().manual_seed(0)
    a = torch.tensor([[1.0, 0.0], [0.8, 0.5]])
    return Task("gauss2d", 2, torch.randn(256, 2, generator=g) @ a.T, torch.randn(64, 2, generator=g) @ a.T,
                bounds=((-4.0, 4.0), (-4.0, 4.0)))


def _image_task() -> Task:
    g = torch.Generator().manual_seed(1)
    level = torch.rand(320, 1, generator=g)  # one grey level per image plus pixel noise, strictly inside (0, 1)
    data = (0.1 + 0.7 * level + 0.1 * torch.rand(320, 16, generator=g))
    return Task("tiny-images", 16, data[:256], data[256:], image_shape=(1, 4, 4), discrete_scale=256.0)


TASKS = {"flat": _flat_task(), "image": _image_task()}


def _small(cls) -> dict:
    return {k: v for k, v in SMALL.items() if k in cls.defaults}


def _build(name: str, task: Task, seed: int = 0, **hp):
    cls = get(name)
    reason = cls.check(task, task.dim, LAYERS)
    if reason is not None:
        pytest.skip(f"{name} on {task.name}: {reason}")
    return cls(task, dim=task.dim, layers=LAYERS, seed=seed, **{**_small(cls), **hp})


@pytest.mark.parametrize("kind", sorted(TASKS))
@pytest.mark.parametrize("name", available())
def test_adapter_contract(name, kind):
    task = TASKS[kind]
    adapter = _build(name, task)
    assert adapter.describe() == {"method": name, "family": adapter.family, "objective": adapter.objective}
    assert adapter.family in FAMILIES and adapter.objective
    n_params = adapter.num_params()
    assert isinstance(n_params, int) and (n_params > 0 or adapter.family == "reference")

    loss = adapter.train_step(task.train[:BATCH])
    assert isinstance(loss, float) and math.isfinite(loss)

    samples = adapter.sample(7)
    assert samples.shape == (7, task.dim)
    assert samples.dtype == torch.float32 and samples.device.type == "cpu"
    assert torch.isfinite(samples).all()

    try:
        nll = adapter.nll(task.test[:10])
    except NLLUnavailable as exc:
        assert str(exc), f"{name}: NLLUnavailable without a reason"
    else:
        assert nll.shape == (10,) and nll.is_floating_point()
        assert torch.isfinite(nll).all()


@pytest.mark.parametrize("name", available())
def test_adapter_is_reproducible_from_its_seed(name):
    task = TASKS["flat"]

    def run() -> tuple[float, torch.Tensor]:
        adapter = _build(name, task, seed=3)
        return adapter.train_step(task.train[:BATCH]), adapter.sample(5)

    (loss_a, samples_a), (loss_b, samples_b) = run(), run()
    assert loss_a == loss_b
    torch.testing.assert_close(samples_a, samples_b)


# ---------------------------------------------------------------- EBFlow adapters
def test_ebflow_objective_hparams_follow_task_and_overrides():
    dsm = get("ebflow-dsm")
    assert _build("ebflow-dsm", TASKS["image"]).loss_kwargs["std"] == 0.5
    smoothed = Task("s", 2, TASKS["flat"].train, TASKS["flat"].test, smooth=0.375)
    assert _build("ebflow-dsm", smoothed).loss_kwargs["std"] == 0.375  # DSM noise = the data smoothing
    assert _build("ebflow-dsm", smoothed, std=0.2).loss_kwargs["std"] == 0.2
    assert _build("ebflow-dsm", TASKS["flat"]).loss_kwargs["std"] == 0.1
    assert _build("ebflow-dsm", TASKS["flat"], std=0.5).loss_kwargs["std"] == 0.5
    assert _build("ebflow-fdssm", TASKS["flat"]).loss_kwargs["eps"] == 0.1
    assert "std" in dsm.defaults and "eps" not in dsm.defaults
    assert "generator" in _build("ebflow-ssm", TASKS["flat"]).loss_kwargs
    assert "generator" not in _build("ebflow-ml", TASKS["flat"]).loss_kwargs


def test_ebflow_stabiliser_hparams():
    task = TASKS["image"]  # D = 16
    assert _build("ebflow-fdssm", task, clip_per_dim=5.0).clip == 5.0 * 16  # official scale -> summed scale
    assert _build("ebflow-fdssm", task, clip=7.0).clip == 7.0
    with pytest.raises(ValueError, match="not both"):
        _build("ebflow-fdssm", task, clip=1.0, clip_per_dim=1.0)
    assert _build("ebflow-ssm", task, lam=0.05).loss_kwargs["lam"] == 0.05
    assert _build("ebflow-ml", task, logit_smoothness=0.5).model.preprocessing.smoothness == 0.5
    # lr x0.5 after each of the first 2 epochs; an epoch is 256 // 32 = 8 steps here
    adapter = _build("ebflow-ml", task, optimizer="rmsprop", lr=1e-3, lr_decay=0.5, lr_decay_epochs=2)
    seen = []
    for i in range(30):
        adapter.train_step(task.train[(i % 8) * BATCH:(i % 8 + 1) * BATCH])
        seen.append(adapter.optimizer.param_groups[0]["lr"])
    assert seen[:8] == [1e-3] * 8 and seen[8:16] == [5e-4] * 8 and seen[16:] == [2.5e-4] * 14
    # a decay period in steps instead of passes over the data (a published schedule on a smaller data set)
    adapter = _build("ebflow-ml", task, optimizer="rmsprop", lr=1e-3, lr_decay=0.5, lr_decay_epochs=2,
                     lr_decay_period=3)
    seen = []
    for i in range(10):
        adapter.train_step(task.train[(i % 8) * BATCH:(i % 8 + 1) * BATCH])
        seen.append(adapter.optimizer.param_groups[0]["lr"])
    assert seen[:3] == [1e-3] * 3 and seen[3:6] == [5e-4] * 3 and seen[6:] == [2.5e-4] * 4
    with pytest.raises(ValueError, match="lr_decay = 2.0: must be <= 1"):
        _build("ebflow-ml", task, lr_decay=2.0)


def test_ebflow_adapter_rejects_bad_configuration():
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        _build("ebflow-ssm", TASKS["flat"], std=1.0)
    with pytest.raises(Unsupported, match="needs an image task"):
        _build("ebflow-ssm", TASKS["flat"], arch="cnn")
    with pytest.raises(ValueError, match=r"arch = 'fc': must be one of \['fc-lu'\]"):
        _build("mle-lu", TASKS["flat"], arch="fc")
    with pytest.raises(ValueError, match="optimizer"):
        _build("ebflow-ml", TASKS["flat"], optimizer="sgd")
    assert "at least one layer" in get("ebflow-ml").check(TASKS["flat"], 2, 0)
    assert "needs an image task" in get("ebflow-ssm").check(TASKS["flat"], 2, 2, hparams={"arch": "cnn"})
    assert get("ebflow-ssm").check(TASKS["image"], 16, 2, hparams={"arch": "cnn"}) is None


def test_hparam_declarations_resolve_coerce_and_list_every_problem():
    from ebflow_bench.adapters.base import HParamError

    dsm = get("ebflow-dsm")
    # YAML reads `5e-2` as a string: accepted as the number; ints where floats are declared become floats
    got = dsm.resolve_hparams(TASKS["flat"], {"std": "5e-2", "lr": 1, "batch_size": "64"})
    assert got["std"] == 0.05 and got["lr"] == 1.0 and isinstance(got["lr"], float) and got["batch_size"] == 64
    # per-task defaults become values: the resolved record never holds "None = decided later"
    assert dsm.resolve_hparams(TASKS["flat"], {})["std"] == 0.1
    assert dsm.resolve_hparams(TASKS["image"], {})["std"] == 0.5
    assert get("ebflow-ssm").resolve_hparams(TASKS["flat"], {})["slices"] == 1
    assert dsm.resolve_hparams(TASKS["flat"], {"clip": None})["clip"] is None  # optional: None = off
    with pytest.raises(HParamError) as e:
        dsm.resolve_hparams(TASKS["flat"], {"batch_size": -4, "lr": "fast", "std": -1, "optimizer": "sgd",
                                            "arch": "rnn", "ema_decay": 2, "batch": 3, "hidden": 2.5})
    assert sorted(e.value.problems) == sorted([
        f"unknown hyperparameter(s) ['batch']; known: {sorted(dsm.hparam_spec)}",
        "batch_size = -4: must be >= 1", "lr = 'fast': expected a number (float)", "std = -1.0: must be > 0",
        "optimizer = 'sgd': must be one of ['adam', 'adamw', 'rmsprop']", "arch = 'rnn': must be one of ['fc', 'fc-residual', 'toy2d', 'cnn']",
        "ema_decay = 2.0: must be <= 1", "hidden = 2.5: expected an integer"])
    for name in available():  # every adapter declares every hyperparameter with a type, defaults consistent
        cls = get(name)
        assert set(cls.defaults) == set(cls.hparam_spec)
        assert all(h.type in (int, float, str, bool) for h in cls.hparam_spec.values()), name
        if cls.family != "reference":  # truth / gaussian-fit do not train
            assert cls.hparam_spec["batch_size"].type is int and cls.hparam_spec["batch_size"].low == 1, name


def test_ebflow_nll_and_samples_use_ema_weights():
    task = TASKS["flat"]
    adapter = _build("ebflow-ml", task, lr=0.05)
    for i in range(20):
        adapter.train_step(task.train[(i % 8) * BATCH:(i % 8 + 1) * BATCH])
    x = task.test[:16]
    with torch.no_grad():
        raw = -adapter.model.log_prob(x)
        with adapter.ema.swapped() as model:
            ema = -model.log_prob(x)
    assert (raw - ema).abs().max() > 1e-3  # the two sets of weights differ
    torch.testing.assert_close(adapter.nll(x), ema)
    torch.testing.assert_close(-adapter.model.log_prob(x).detach(), raw)  # trained weights restored


@pytest.mark.parametrize("name", ["ebflow-ml", "mle-lu", "ebflow-ssm", "nflows-lu"])
def test_dense_models_fit_a_gaussian(name):
    """The dense models contain the Gaussians: trained on N(0, A A^T) their test NLL nears the entropy."""
    g = torch.Generator().manual_seed(5)
    a = torch.tensor([[1.0, 0.0], [0.8, 0.5]])
    task = Task("gauss", 2, torch.randn(4096, 2, generator=g) @ a.T, torch.randn(4096, 2, generator=g) @ a.T)
    entropy = math.log(2 * math.pi * math.e) + math.log(float(torch.det(a)))
    hp = {"lr": 2e-2, "batch_size": 256}
    if "ema_decay" in get(name).defaults:
        hp["ema_decay"] = 0.9
    adapter = _build(name, task, **hp)
    before = adapter.nll(task.test).mean().item()
    for i in range(250):
        adapter.train_step(task.train[(i % 16) * 256:(i % 16 + 1) * 256])
    after = adapter.nll(task.test).mean().item()
    assert before > entropy + 0.5
    assert after < entropy + 0.1, (name, before, after, entropy)


def test_image_adapters_work_in_pixel_space():
    """On image tasks the EBFlow and library flows model u = logit(lam + (1 - 2 lam) x) and their NLL adds the
    logit's log-det, so it is in pixel space; samples come back in [0, 1]."""
    task = TASKS["image"]
    x = task.test[:8].double()
    lam = 1e-6
    p = lam + (1 - 2 * lam) * x
    u = torch.log(p) - torch.log1p(-p)
    logit_ld = (math.log1p(-2 * lam) - torch.log(p) - torch.log1p(-p)).sum(dim=1)
    for name, u_nll in [
        ("ebflow-ml", lambda m: m.flow_energy(u) - m.linear_logdet()),
        ("normflows-glow", lambda m: -m.model.log_prob(u.reshape(-1, 1, 4, 4))),
    ]:
        adapter = _build(name, task)
        adapter.model.double()
        with torch.no_grad():
            expected = u_nll(adapter.model) - logit_ld
        if adapter.hparams.get("ema_decay"):
            adapter.ema = None  # compare with the float64 weights themselves
        torch.testing.assert_close(adapter.nll(x), expected)
        adapter.model.float()
        s = adapter.sample(16)
        assert bool(((s >= 0) & (s <= 1)).all())


@pytest.mark.parametrize("arch,kind", [("toy2d", "flat"), ("cnn", "image"), ("fc", "image"),
                                       ("fc-residual", "image"), ("fc-residual", "flat")])
def test_ebflow_architectures_train_and_sample(arch, kind):
    task = TASKS[kind]
    adapter = _build("ebflow-ssm", task, arch=arch)
    losses = [adapter.train_step(task.train[i * BATCH:(i + 1) * BATCH]) for i in range(3)]
    assert all(math.isfinite(v) for v in losses)
    nll = adapter.nll(task.test[:10])
    assert nll.shape == (10,) and torch.isfinite(nll).all()
    assert adapter.sample(4).shape == (4, task.dim)
