"""``ebflow-bench tune``: grids declared on the adapters, the validation split, selection, the three outputs."""

from __future__ import annotations

import math
import tomllib

import pytest
import torch

from ebflow_bench.adapters.base import _REGISTRY, Adapter, HParam, positive, register, tune_grid_problems
from ebflow_bench.cli import main
from ebflow_bench.matrix import adapter_registry, matrix_from_dict, validate
from ebflow_bench.tasks import get_task
from ebflow_bench.tune import Candidate, grid_points, select, tune

#: the toy's task: 2-D data, a small training set (200 validation points)
TASK = "eight_gaussians"
TASK_OPTIONS = {TASK: {"n_train": 2000, "n_test": 100}}
STEPS = 10


class _LrGauss(Adapter):
    """N(mu, I) with mu trained by plain SGD on the mean NLL from mu0 = (1, 1): the error of mu shrinks by
    |1 - lr| per step, so in 10 steps lr = 1 reaches the data mean (the best NLL), lr = 0.1 is 0.35 away, lr = 0.01
    0.9 away, and lr = 2.5 multiplies the error by 1.5 per step (mu ~ 58 from the data: its samples are far
    outside the data, a degenerate model)."""

    name = "test-lr-gauss"
    family = "test"
    objective = "ml"
    hparam_spec = {"lr": positive(0.01, "SGD step"), "batch_size": HParam(256, int, low=1)}
    tune_grid = {"lr": (0.01, 0.1, 1.0, 2.5)}

    def build(self) -> None:
        self.mu = torch.ones(self.dim, dtype=torch.float64)

    def train_step(self, batch: torch.Tensor) -> float:
        x = batch.double()
        loss = 0.5 * (x - self.mu).square().sum(1).mean()
        self.mu = self.mu - float(self.hparams["lr"]) * (self.mu - x.mean(0))
        return float(loss)

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x.double() - self.mu).square().sum(1) + 0.5 * self.dim * math.log(2 * math.pi)

    def sample(self, n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return (self.mu + torch.randn(n, self.dim, generator=g, dtype=torch.float64)).float()

    def num_params(self) -> int:
        return self.dim


@pytest.fixture(autouse=True)
def _toy_adapter():
    """The toy adapter is registered only while this module's tests run (other modules' tests iterate over the
    registry)."""
    adapter_registry()  # the suite's adapters first
    register(_LrGauss)
    yield
    _REGISTRY.pop(_LrGauss.name, None)


def test_every_adapter_declares_a_legal_grid_of_equal_size():
    reg = adapter_registry()
    sizes = {}
    for name, cls in reg.items():
        assert tune_grid_problems(cls) == [], name
        if not cls.__module__.startswith("ebflow_bench.adapters"):  # test plugins of other test modules
            continue
        for key, values in cls.tune_grid.items():
            assert key in cls.hparam_spec
            for v in values:  # every value is accepted by the declaration (type, range, choices)
                assert cls.hparam_spec[key].coerce(key, v)[1] is None, (name, key, v)
        if cls.family == "reference":
            assert cls.tune_grid == {}, name
        else:
            sizes[name] = len(grid_points(cls.tune_grid))
    assert set(sizes.values()) == {6}, sizes  # the same budget for every family
    assert "lr" in reg["ebflow-ssm"].tune_grid and "std" in reg["ebflow-dsm"].tune_grid


def test_register_refuses_a_bad_grid():
    bad = type("Bad", (_LrGauss,), {"name": "test-bad-grid", "tune_grid": {"lr": (1e-3, -1.0), "nope": (1,)}})
    with pytest.raises(ValueError) as e:
        register(bad)
    assert "lr = -1.0: must be > 0" in str(e.value) and "'nope' is not a declared hyperparameter" in str(e.value)
    assert "test-bad-grid" not in adapter_registry()


def test_validation_split_holds_out_training_points_and_never_the_test_set():
    full = get_task("iris", seed=3)
    val = get_task("iris", seed=3, validation=0.1)
    assert val.test.shape[0] == round(0.1 * full.train.shape[0])
    assert val.train.shape[0] + val.test.shape[0] == full.train.shape[0]
    rows = {tuple(r.tolist()) for r in full.train}
    assert all(tuple(r.tolist()) in rows for r in torch.cat([val.train, val.test]))
    test_rows = {tuple(r.tolist()) for r in full.test}
    assert not any(tuple(r.tolist()) in test_rows for r in val.test)
    assert torch.equal(get_task("iris", seed=3, validation=0.1).test, val.test)  # seeded
    with pytest.raises(ValueError, match="validation must be a fraction"):
        get_task("iris", validation=1.5)


def _cand(values, score, status="ok", default=None):
    c = Candidate("m", "t", values, default or {"lr": 1e-3}, status=status, reason="" if status == "ok" else "x")
    c.nll = score
    return c


def test_select_never_takes_a_degenerate_candidate_and_breaks_ties_towards_the_default():
    cands = [_cand({"lr": 1e-2}, -10.0, "degenerate"), _cand({"lr": 3e-3}, 1.000), _cand({"lr": 1e-3}, 1.008),
             _cand({"lr": 1e-4}, 1.5), _cand({"lr": 3e-4}, math.nan, "failed")]
    chosen = select(cands)
    assert chosen is cands[2]  # 1.008 is within 1% of 1.000 and is the default
    assert [c.chosen for c in cands] == [False, False, True, False, False]
    cands = [_cand({"lr": 3e-3}, 1.0), _cand({"lr": 1e-3}, 1.02)]
    assert select(cands) is cands[0]  # 2% is not a tie
    # one usable candidate without an NLL: the whole group is scored by sliced W2
    a, b = _cand({"lr": 3e-3}, 1.0), _cand({"lr": 1e-3}, math.nan)
    a.sliced_w2, b.sliced_w2 = 0.5, 0.2
    assert select([a, b]) is b and a.metric == b.metric == "val_sliced_w2"
    assert select([_cand({"lr": 1.0}, 0.0, "degenerate")]) is None


def test_tune_picks_the_known_best_learning_rate(tmp_path):
    res = tune(["test-lr-gauss"], [TASK], tmp_path, steps=STEPS, task_options=TASK_OPTIONS, progress=False)
    by_lr = {c.values["lr"]: c for c in res.candidates}
    assert by_lr[2.5].status == "degenerate" and "mass escapes" in by_lr[2.5].reason
    assert [lr for lr, c in by_lr.items() if c.chosen] == [1.0]
    assert by_lr[1.0].nll < by_lr[0.1].nll
    # lr = 0.01 stays 0.9 away with unit variance on data of radius 1.5: worse than uniform noise on the data's box
    assert by_lr[0.01].status == "degenerate" and by_lr[0.01].reason.startswith("NLL far worse than a Gaussian fit")
    assert by_lr[0.01].is_default and by_lr[1.0].metric == "val_nll"


def test_cli_writes_csv_toml_and_markdown(tmp_path, capsys):
    out = tmp_path / "t"
    code = main(["tune", "--methods", "test-lr-gauss", "--tasks", TASK, "--steps", str(STEPS), "--out", str(out),
                 "--task-option", f"{TASK}.n_train=2000", "--task-option", f"{TASK}.n_test=100", "--quiet"])
    assert code == 0
    lines = (out / "tuning.csv").read_text().splitlines()
    assert lines[0].startswith("method,task,hparams,score") and len(lines) == 1 + 4
    assert sum(line.split(",")[-2] == "1" for line in lines[1:]) == 1  # one chosen
    tuned = tomllib.loads((out / "tuned.toml").read_text())
    assert tuned == {"hparams": {"test-lr-gauss": {"lr": 1.0}}}
    md = (out / "tuning.md").read_text()
    assert "lr {0.01, 0.1, 1, 2.5}" in md and f"4 x {STEPS} x 1" in md and "degenerate" in md
    # the fragment is a usable matrix table
    m = matrix_from_dict({"methods": ["test-lr-gauss"], "tasks": [TASK], "budgets": [2], **tuned,
                          "task_options": TASK_OPTIONS})
    assert validate(m)[0].hparams["lr"] == 1.0
    assert main(["tune", "--methods", "truth", "--tasks", TASK, "--out", str(tmp_path / "u")]) == 2
    assert "declares no tune_grid" in capsys.readouterr().err
