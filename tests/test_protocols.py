"""The ``paper`` preset is the published configurations: pinned to ``ebflow_bench.protocols`` and its doc."""

from __future__ import annotations

import tomllib
from pathlib import Path

from ebflow_bench.adapters import get
from ebflow_bench.matrix import load_matrix, validate
from ebflow_bench.protocols import PROTOCOLS, TASK_OPTIONS, block_hparams, markdown

ROOT = Path(__file__).resolve().parent.parent


def test_paper_preset_sets_exactly_the_published_values():
    spec = tomllib.loads((ROOT / "ebflow_bench" / "presets" / "paper.toml").read_text())
    in_preset = {tuple(b["tasks"]): b.get("hparams", {}) for b in spec["block"]}
    expected = block_hparams()
    for tasks, per_method in expected.items():
        assert tasks in in_preset, f"no preset block for {tasks}"
        assert in_preset[tasks] == per_method, tasks
    # no block sets a hyperparameter the table does not list
    assert {k: v for k, v in in_preset.items() if v} == expected
    assert spec["task_options"] == TASK_OPTIONS
    assert validate(load_matrix("paper"))  # the preset is a valid matrix


def test_every_protocol_value_is_a_known_hyperparameter_with_a_source():
    for row in PROTOCOLS:
        assert row.hparam in get(row.method).defaults, row
        assert row.source
    # the official MNIST-FC stabilisers are there (the list)
    mnist = block_hparams()[("mnist5k",)]
    assert mnist["ebflow-fdssm"]["clip_per_dim"] == 5.0 and mnist["ebflow-ml"]["logit_smoothness"] == 0.5
    assert mnist["ebflow-ssm"]["optimizer"] == "rmsprop" and mnist["ebflow-dsm"]["lr_decay"] == 0.95


def test_protocols_doc_is_generated_from_the_table():
    assert (ROOT / "docs" / "PROTOCOLS.md").read_text() == markdown()
