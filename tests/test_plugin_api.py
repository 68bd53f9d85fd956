"""Plugins without the source (issue 22): the adapter API from ``ebflow_bench.adapters``, ``list METHOD``,
architecture-task mismatches refused at matrix validation."""

from __future__ import annotations

import pytest

import ebflow_bench.adapters as adapters
from ebflow_bench.adapters import base
from ebflow_bench.cli import EXIT_BAD_INPUT, main
from ebflow_bench.matrix import MatrixError, matrix_from_dict, validate


def test_the_plugin_api_is_exported_from_the_package():
    for name in ("Adapter", "HParam", "HParamError", "NLLUnavailable", "Unsupported", "count", "positive",
                 "register", "get", "available", "describe_hparam"):
        assert getattr(adapters, name) is getattr(base, name), name
        assert name in adapters.__all__
    h = adapters.positive(0.1, "a step")
    assert h.coerce("s", 0) == (0, "s = 0.0: must be > 0")
    assert adapters.count(3, low=2).coerce("n", 1)[1] == "n = 1: must be >= 2"


def test_describe_hparam_states_type_default_bounds_choices_and_doc():
    d = adapters.describe_hparam(adapters.HParam(0.5, float, low=0.0, high=1.0, doc="a weight"))
    assert d == {"type": "float", "default": "0.5", "allowed": ">= 0, <= 1", "doc": "a weight"}
    d = adapters.describe_hparam(adapters.HParam("a", str, choices=("a", "b")))
    assert d["allowed"] == "one of 'a', 'b'" and d["type"] == "str"
    assert adapters.describe_hparam(adapters.positive(None, optional=True))["allowed"] == "> 0, None allowed"
    assert "chosen per task" in adapters.describe_hparam(adapters.count(None, per_task=True))["allowed"]


def test_list_method_prints_every_declared_hyperparameter(capsys):
    assert main(["list", "ebflow-dsm"]) == 0
    out = capsys.readouterr().out
    spec = adapters.get("ebflow-dsm").hparam_spec
    lines = out.splitlines()
    assert lines[0] == "ebflow-dsm: family=ebflow objective=dsm"
    for name, h in spec.items():
        (row,) = [ln for ln in lines if ln.startswith(f"  {name} ")]
        d = adapters.describe_hparam(h)
        assert row.split()[1] == d["type"] and f"default {d['default']}" in row and row.endswith(d["allowed"])
        if h.doc:
            assert f"  {h.doc}" in out
    assert "optimizer          str    default 'adam'" in out and "one of 'adam', 'adamw', 'rmsprop'" in out
    assert "tune grid: lr in [0.001, 0.0003]; std in [0.1, 0.3, 0.5]" in out


def test_list_unknown_method_is_one_error_line(capsys):
    assert main(["list", "no-such-method"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: unknown method(s) ['no-such-method']") and err.count("\n") == 1


def _matrix(arch: str, task: str, dims=None, methods=("ebflow-dsm",)) -> dict:
    spec = {"methods": list(methods), "tasks": [task], "layers": [2], "budgets": [5],
            "hparams": {m: {"arch": arch} for m in methods}}
    if dims:
        spec["dims"] = dims
    return spec


def test_toy2d_on_a_10d_task_is_refused_at_validation():
    with pytest.raises(MatrixError) as e:
        validate(matrix_from_dict(_matrix("toy2d", "gaussian", dims=[10])))
    (problem,) = e.value.problems
    assert "impossible cell ebflow-dsm on gaussian (D=10, L=2)" in problem
    assert "arch='toy2d' is the paper's 2-D toy model" in problem and "D=10" in problem
    assert len(validate(matrix_from_dict(_matrix("toy2d", "checkerboard")))) == 1  # D = 2: fine
    with pytest.raises(MatrixError, match="arch='cnn' needs an image task"):
        validate(matrix_from_dict(_matrix("cnn", "gaussian", dims=[4])))


def test_arch_mismatch_through_the_cli_exits_2(tmp_path, capsys):
    m = tmp_path / "m.toml"
    m.write_text('methods = ["ebflow-ml"]\ntasks = ["gaussian"]\ndims = [10]\nbudgets = [5]\n'
                 '[hparams.ebflow-ml]\narch = "toy2d"\n')
    assert main(["run", "--matrix", str(m), "--out", str(tmp_path / "run"), "--quiet", "--workers", "1"]) == 2
    assert "arch='toy2d' is the paper's 2-D toy model" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
