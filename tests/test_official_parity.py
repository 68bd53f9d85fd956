"""Parity with the official EBFlow code itself (maintainers; marker ``official``):

    EBFLOW_OFFICIAL_TREE=/path/to/ebflow/real_world PYTHONPATH=. python -m pytest -m official

Skipped, with that message, when ``EBFLOW_OFFICIAL_TREE`` is unset. The official code (github
chen-hao-chao/ebflow, ``real_world/``) is imported from that tree, never copied: its ``ebflow`` package is
loaded under the suite's own ``ebflow`` for the duration of the import and kept apart afterwards; its
hard-coded CUDA (``torch.zeros(..., device='cuda')``, ``x.float().to('cuda')``) is redirected to the CPU by
monkeypatching during the test, and ``torchvision`` (imported by ``train/experiment.py`` for an
``ImageFolder`` type check and ``save_image``, neither used here) is stubbed when it is not installed.

For every official config a preset uses (MNIST FC: every objective, on ``mnist5k``; CIFAR-10 FC: every
objective, on ``patches32`` with ``fc-residual``), the official model (``models/<data>/fc.py create_model``,
data shape of the task) and the suite's adapter (``ebflow-<loss>`` with ``protocols.suite_hparams``) start from
the same weights and train on the same batches and the same noise: the official ``Experiment.train_epoch`` /
``get_loss`` (its RMSprop, ``MultiStepLR``, EMA and clip as its ``experiments/<data>_fc.py`` sets them up) against
the suite's ``train_step``. Differences made on purpose, for a comparison of the training code alone:

- both see the suite's dequantized pixels (the official ``Dequantization`` step is left out of its ``trans``;
  its other preprocessing modules are used), and no data augmentation;
- the official epoch is ``EPOCH`` batches (so that its per-epoch lr schedule acts within a few hundred steps)
  and the suite gets ``protocols.lr_schedule(gamma, milestones, EPOCH)``;
- the official noise draws (``torch.randn_like`` in ``get_loss``, the base draw of ``model.sample``) are taken
  from a generator seeded as the suite's, in the suite's order;
- before each official evaluation its ``FullyConnected`` log-det cache is marked dirty (the official evaluation
  otherwise reuses the log-det of the last training forward, a known defect: docs/PROTOCOLS.md).

Requires equal test bits/dim at step 0 (float32: 1e-4) and within 0.01 after ``STEPS`` steps.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import sys
import types
from pathlib import Path

import pytest
import torch

TREE = os.environ.get("EBFLOW_OFFICIAL_TREE", "")
STEPS = int(os.environ.get("EBFLOW_PARITY_STEPS", "200"))
EPOCH = 100
N_TEST = 500

pytestmark = [
    pytest.mark.official,
    pytest.mark.timeout(3600),  # a few minutes per config on a quiet CPU
    pytest.mark.skipif(not TREE, reason="set EBFLOW_OFFICIAL_TREE=/path/to/ebflow/real_world to run the parity "
                                        "check against the official EBFlow code"),
]

#: (official family, suite task, objectives): every official config a preset uses
CASES = [("mnist-fc", "mnist5k", o) for o in ("ml", "sml", "ssm", "dsm", "fdssm")] + \
        [("cifar-fc", "patches32", o) for o in ("ml", "sml", "ssm", "dsm", "fdssm")]
RESULTS: dict[str, tuple[float, float, float, float]] = {}


# ---------------------------------------------------------------------------------------- importing it
def _is_ours(name: str) -> bool:
    return name == "ebflow" or name.startswith("ebflow.")


@pytest.fixture(scope="module")
def official():
    """The official modules, imported from ``EBFLOW_OFFICIAL_TREE`` beside the suite's ``ebflow``."""
    tree = Path(TREE)
    if not (tree / "ebflow" / "train" / "experiment.py").is_file():
        pytest.fail(f"EBFLOW_OFFICIAL_TREE={TREE} is not the official real_world/ folder "
                    "(no ebflow/train/experiment.py)")
    ours = {k: sys.modules.pop(k) for k in list(sys.modules) if _is_ours(k)}
    stub = None
    if importlib.util.find_spec("torchvision") is None:
        stub = types.ModuleType("torchvision")
        stub.datasets = types.SimpleNamespace(ImageFolder=type("ImageFolder", (), {}))
        stub.utils = types.SimpleNamespace(save_image=None)
        sys.modules["torchvision"] = stub
    sys.path.insert(0, str(tree))
    try:
        mods = {name: importlib.import_module(f"ebflow.{name}") for name in (
            "train.experiment", "models.mnist.fc", "models.cifar.fc", "layers.ema", "layers.linear",
            "layers.flowsequential")}
    finally:
        sys.path.remove(str(tree))
        for k in [k for k in sys.modules if _is_ours(k)]:
            del sys.modules[k]
        sys.modules.update(ours)
        if stub is not None:
            del sys.modules["torchvision"]
    return types.SimpleNamespace(tree=tree, **{k.replace(".", "_"): v for k, v in mods.items()})


@pytest.fixture
def cpu_only(monkeypatch):
    """Redirect the official code's hard-coded ``'cuda'`` to the CPU."""
    def fix(kw):
        if str(kw.get("device", "")).startswith("cuda"):
            kw["device"] = "cpu"
        return kw

    for name in ("zeros", "eye"):
        orig = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, _o=orig, **kw: _o(*a, **fix(kw)))
    orig_to = torch.Tensor.to

    def to(self, *args, **kw):
        args = tuple("cpu" if isinstance(a, str) and a.startswith("cuda") else a for a in args)
        return orig_to(self, *args, **fix(kw))

    monkeypatch.setattr(torch.Tensor, "to", to)
    return monkeypatch


# ---------------------------------------------------------------------------------------------- running
def _config(off, family: str, objective: str) -> dict:
    data, model = family.split("-")
    cfg = json.loads((off.tree / "ebflow" / "configs" / data / model / f"{objective}.txt").read_text())
    return cfg


def _official_setup(off, family, cfg, shape, suite_model, tmp_path):
    create = off.models_mnist_fc.create_model if family == "mnist-fc" else off.models_cifar_fc.create_model
    model, trans = create(num_layers=cfg["num_layers"], logit_smoothness=cfg["logit_smoothness"], data_size=shape,
                          alpha=cfg["alpha"], bias=bool(cfg["bias"]), neg_init=bool(cfg["neg_init"]),
                          MaP=bool(cfg["MaP"]))
    fcs = [m for m in model if isinstance(m, off.layers_linear.FullyConnected)]
    dense = [layer for layer in suite_model.layers if hasattr(layer, "weight")]
    with torch.no_grad():  # the same initial weights (both are W = -I, b = 1 already; copied to be exact)
        for fc, d in zip(fcs, dense, strict=True):
            fc.model.weight.copy_(d.weight.detach()[:, :, None, None])
            fc.model.bias.copy_(d.bias.detach())
    # the official trans without its Dequantization (both codes see the suite's dequantized pixels)
    trans = off.layers_flowsequential.TransSequential(*list(trans)[1:])
    ema = off.layers_ema.ExponentialMovingAverage(model.parameters(), decay=cfg["ema_decay"])
    opt = torch.optim.RMSprop(model.parameters(), lr=cfg["lr"], weight_decay=cfg["wd"])  # experiments/*_fc.py:56
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(range(1, cfg["milestones"])),
                                                 gamma=cfg["gamma"])
    loader = types.SimpleNamespace(dataset=types.SimpleNamespace(dataset=types.SimpleNamespace(
        data=torch.empty(1, *shape))))
    exp = off.train_experiment.Experiment(model, trans, ema, loader, None, None, opt, sched, datasize=shape,
                                          **{**cfg, "resultdir": str(tmp_path), "log_interval": 10**9})
    return exp, fcs


def _official_bpd(exp, fcs, test_batches) -> float:
    exp.ema.store(exp.model.parameters())
    exp.ema.copy_to(exp.model.parameters())
    for fc in fcs:
        fc.logabsdet_dirty = True
    with torch.no_grad():
        logpx = exp.eval_epoch(test_batches)
    exp.ema.restore(exp.model.parameters())
    for fc in fcs:
        fc.logabsdet_dirty = True
    return float(-exp.to_bpd(torch.tensor(logpx)))


def _suite_bpd(adapter, x) -> float:
    d = x.shape[1]
    return float((adapter.nll(x).double().mean() + d * math.log(256)) / (d * math.log(2)))


@pytest.mark.parametrize(("family", "task_name", "objective"), CASES, ids=[f"{f}-{o}" for f, _, o in CASES])
def test_suite_trains_like_the_official_code(official, cpu_only, tmp_path, family, task_name, objective):
    from ebflow_bench import protocols as P
    from ebflow_bench.adapters import get
    from ebflow_bench.tasks import get_task

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    task = get_task(task_name, seed=0)
    shape = tuple(task.image_shape)
    cfg = _config(official, family, objective)
    table = P.official(family, objective)
    assert {k: cfg[k] for k in table.values} == dict(table.values), "protocols.OFFICIAL differs from the file"
    hp = {**P.suite_hparams(table, shape), **P.lr_schedule(cfg["gamma"], cfg["milestones"], EPOCH)}
    adapter = get(f"ebflow-{objective}")(task, dim=task.dim, layers=cfg["num_layers"], seed=0, **hp)
    exp, fcs = _official_setup(official, family, cfg, shape, adapter.model, tmp_path)

    # the same noise: the official draws come from a generator seeded as the suite's, in its order
    gen = torch.Generator().manual_seed(0)
    cpu_only.setattr(torch, "randn_like", lambda t, **kw: torch.randn(t.shape, generator=gen, dtype=t.dtype))
    base = exp.model.base_distribution
    cpu_only.setattr(base.N, "sample", lambda shape_: torch.randn((*shape_, base.dim), generator=gen))

    x_test = task.test[:N_TEST]
    test_batches = [(256 * b.view(-1, *shape), None) for b in x_test.split(50)]  # official test loader: batch 50
    bpd0 = (_official_bpd(exp, fcs, test_batches), _suite_bpd(adapter, x_test))
    g = torch.Generator().manual_seed(1)
    passes = STEPS * 100 // len(task.train) + 1
    order = torch.cat([torch.randperm(len(task.train), generator=g) for _ in range(passes)])
    batches = [task.train[order[i * 100:(i + 1) * 100]] for i in range(STEPS)]
    for epoch, start in enumerate(range(0, STEPS, EPOCH), start=1):
        epoch_batches = batches[start:start + EPOCH]
        exp.train_loader = [(256 * b.view(-1, *shape), None) for b in epoch_batches]  # its [B, C, H, W]
        exp.train_epoch(epoch)
        for b in epoch_batches:
            adapter.train_step(b)
    bpd1 = (_official_bpd(exp, fcs, test_batches), _suite_bpd(adapter, x_test))
    RESULTS[f"{family} {objective} ({task_name})"] = (*bpd0, *bpd1)
    print(f"\n{family} {objective} on {task_name}: step 0 official {bpd0[0]:.4f} suite {bpd0[1]:.4f}; "
          f"step {STEPS} official {bpd1[0]:.4f} suite {bpd1[1]:.4f}")
    assert abs(bpd0[0] - bpd0[1]) < 1e-4
    assert abs(bpd1[0] - bpd1[1]) < 0.01
    assert bpd1[1] < bpd0[1]  # it trained


def test_zz_report(official):
    """Print the table recorded in docs/PROTOCOLS.md (runs last)."""
    print(f"\nparity, {STEPS} steps, official epoch {EPOCH} steps, {N_TEST} test rows (test bits/dim):")
    print("| config | step 0 official | step 0 suite | step N official | step N suite | diff |")
    for k, (a0, s0, a1, s1) in RESULTS.items():
        print(f"| {k} | {a0:.4f} | {s0:.4f} | {a1:.4f} | {s1:.4f} | {s1 - a1:+.4f} |")
