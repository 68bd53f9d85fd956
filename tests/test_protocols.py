"""The ``paper`` and ``reproduce`` presets carry the converted official configurations: pinned to
``ebflow_bench.protocols`` (its table and conversions) and its generated doc."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path

import pytest

from ebflow_bench import protocols as P
from ebflow_bench.adapters import get
from ebflow_bench.matrix import PRESET_DIR, load_matrix, validate

ROOT = Path(__file__).resolve().parent.parent


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b


def test_paper_preset_sets_exactly_the_published_values():
    spec = tomllib.loads((ROOT / "ebflow_bench" / "presets" / "paper.toml").read_text())
    in_preset = {tuple(b["tasks"]): b.get("hparams", {}) for b in spec["block"]}
    expected = P.block_hparams()
    for tasks, per_method in expected.items():
        assert tasks in in_preset, f"no preset block for {tasks}"
        assert in_preset[tasks] == per_method, tasks
    # no block sets a hyperparameter the table does not list
    assert {k: v for k, v in in_preset.items() if v} == expected
    assert spec["task_options"] == P.TASK_OPTIONS
    assert validate(load_matrix("paper"))  # the preset is a valid matrix


def test_every_protocol_value_is_a_known_hyperparameter_with_a_source():
    for row in P.PROTOCOLS:
        assert row.hparam in get(row.method).defaults, row
        assert row.source
    for cfg in P.OFFICIAL:
        for key in P.suite_hparams(cfg):
            assert key in get(f"ebflow-{cfg.objective}").defaults, (cfg.key, key)


@pytest.fixture(scope="module")
def reproduce_cells():
    """The resolved cells of the ``reproduce`` preset's blocks on the EBFlow blocks' tasks (the others, flowMC's
    and the D-sweep's, are validated by their owners' tests; resolving all of them takes a minute)."""
    matrix = load_matrix("reproduce")
    tasks = {t for b in P.REPRODUCE for t in b.tasks}
    return validate(dataclasses.replace(matrix, blocks=[b for b in matrix.blocks if set(b.tasks) & tasks],
                                        task_options={t: o for t, o in matrix.task_options.items() if t in tasks}))


def test_reproduce_ebflow_blocks_resolve_to_the_converted_official_configs(reproduce_cells):
    """Every resolved cell of each EBFlow block of ``reproduce`` carries the converted values (and the CIFAR-10
    FC blocks the official augmentation)."""
    for c in reproduce_cells:
        if c.task in P.REPRODUCE_TASK_OPTIONS:
            assert c.task_options == P.REPRODUCE_TASK_OPTIONS[c.task], c
    for block in P.REPRODUCE:
        expected = block.expected()
        for method, hp in expected.items():
            mine = [c for c in reproduce_cells if c.method == method and c.task in block.tasks
                    and all(_same(c.hparams.get(k), v) for k, v in block.extra.items())]
            assert mine, (block.name, method)
            for c in mine:
                wrong = {k: (c.hparams.get(k), v) for k, v in hp.items() if not _same(c.hparams.get(k), v)}
                assert not wrong, (block.name, method, wrong)


_MATRICES = sorted(PRESET_DIR.glob("*.toml")) + sorted((ROOT / "results" / "reproduce").glob("matrix-*.toml"))


@pytest.mark.parametrize("path", _MATRICES, ids=lambda p: p.name)
def test_every_preset_and_reproduce_matrix_loads(path):
    assert load_matrix(path).blocks


@pytest.mark.parametrize("name", ["cifar-fc-1024", "cifar-fc-3072", "mnist-quality"])
def test_the_claims_run_matrices_are_the_preset_blocks_and_every_cell_resolves(name, reproduce_cells):
    """``results/reproduce/matrix-<name>.toml`` (what the claims runs execute) holds exactly the preset's cells of
    its tasks and step budgets (mnist-quality: the 6,000-step MNIST-5k blocks, not the peers' 1,500-step one)."""
    cells = validate(load_matrix(ROOT / "results" / "reproduce" / f"matrix-{name}.toml"))
    scope = {(c.task, c.budget) for c in cells}
    key = lambda c: (c.method, c.task, c.dim, c.layers, c.data_seed, c.train_seed, c.budget,  # noqa: E731
                     repr(sorted(c.hparams.items())), repr(sorted(c.task_options.items())), c.eval)
    in_preset = sorted(map(key, (c for c in reproduce_cells if (c.task, c.budget) in scope)))
    assert cells and sorted(map(key, cells)) == in_preset


def test_conversions_give_the_hand_derived_numbers():
    # the regulariser: DSM/SSM lambda * H * W, FDSSM lambda * D / eps^2 (experiment.py:191, 211, 235)
    assert P.energy_regulariser("dsm", 0.001, (1, 32, 32)) == 1.024
    assert P.energy_regulariser("ssm", 0.001, (3, 32, 32)) == 1.024  # H * W, not D: the channel axis is summed
    assert P.energy_regulariser("fdssm", 0.001, (1, 32, 32), 0.1) == 102.4
    assert P.energy_regulariser("fdssm", 0.001, (3, 32, 32), 0.1) == 307.2
    assert P.energy_regulariser("ml", 0.001, (3, 32, 32)) == 0.0
    # loss scales: ML per sample, SML over 2B, DSM/SSM/FDSSM per dimension; the toys on the summed scale
    assert [P.loss_scale(o, (1, 28, 28)) for o in P.OBJECTIVES] == [1, 2, 784, 784, 784]
    assert P.loss_scale("ssm", (1, 28, 28), slices=3) == 3 * 784
    assert {P.loss_scale(o, (2,), "toy") for o in P.OBJECTIVES} == {1}
    # clips: MNIST-FC FDSSM 5 -> clip_per_dim 5 (= 3920 here); toys 1 -> clip 1; SML 5 -> clip 10
    assert P.gradient_clip("fdssm", 5.0, (1, 28, 28)) == {"clip_per_dim": 5.0}
    assert P.gradient_clip("ml", 5.0, (1, 28, 28)) == {"clip": 5.0}
    assert P.gradient_clip("sml", 5.0, (1, 28, 28)) == {"clip": 10.0}
    assert P.gradient_clip("dsm", 2.5, (2,), "toy") == {"clip": 2.5}
    assert P.gradient_clip("dsm", -1, (1, 28, 28)) == {} and P.gradient_clip("ml", 0.0, (2,), "toy") == {}
    # epochs: MNIST's official loader 50,000 / 100, CIFAR-10's 40,000 / 100
    assert P.epoch_steps(50_000, 100) == 500 and P.epoch_steps(40_000, 100) == 400
    assert P.epochs_to_steps(12, 500) == 6000
    assert P.lr_schedule(0.85, 30, 400) == {"lr_decay": 0.85, "lr_decay_epochs": 29, "lr_decay_period": 400}
    assert P.lr_schedule(1.0, 50, 500)["lr_decay"] == 1.0
    # noise: unchanged at the official smoothness, rescaled for another
    assert P.noise_scale(1.0, 0.5) == 1.0 and P.noise_scale(1.0, 0.5, 1.0) == 0.5
    assert P.optimizer("adamW", 0.0) == "adam" and P.optimizer("RMSprop") == "rmsprop"


def test_the_lr_schedule_conversion_is_the_official_multisteplr():
    """``MultiStepLR(milestones=1..M-1, gamma)`` stepped per epoch of P steps, against ``decayed_lr``."""
    import torch

    from ebflow.training import decayed_lr

    gamma, milestones, period = 0.7, 5, 3
    conv = P.lr_schedule(gamma, milestones, period)
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=1.0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(range(1, milestones)), gamma=gamma)
    for epoch in range(milestones + 3):
        for i in range(period):
            t = epoch * period + i
            assert math.isclose(decayed_lr(1.0, t, conv["lr_decay_period"], conv["lr_decay"],
                                           conv["lr_decay_epochs"]), opt.param_groups[0]["lr"], rel_tol=1e-12)
        opt.step()  # one epoch done, as train_epoch then scheduler.step() (experiment.py:268, 279)
        sched.step()


def test_official_table_covers_every_family_and_objective():
    fams = {c.family for c in P.OFFICIAL}
    assert fams == {"mnist-fc", "cifar-fc", "mnist-cnn", "cifar-cnn", "toy-sine", "toy-swirl", "toy-checkerboard"}
    for f in fams:
        assert {P.official(f, o).objective for o in P.OBJECTIVES} == set(P.OBJECTIVES)
    with pytest.raises(KeyError, match="no official config"):
        P.official("mnist-fc", "nce")


def test_protocols_doc_is_generated_from_the_table():
    assert (ROOT / "docs" / "PROTOCOLS.md").read_text() == P.markdown()
