"""Runner: resumable after SIGKILL, failures recorded, Dask equals serial, smoke preset end to end.

This module doubles as a matrix plugin (``imports = [PLUGIN]``): importing it registers a tiny test adapter (a
diagonal Gaussian trained by maximum likelihood, whose optimum is known in closed form) and tiny tasks, so
subprocesses and Dask workers see them too.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ebflow_bench.adapters.base import _REGISTRY, Adapter, HParam, NLLUnavailable, register
from ebflow_bench.tasks import Task, available_tasks, register_task

PLUGIN = str(Path(__file__).resolve())


def _gauss_params(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.linspace(-1.0, 1.0, dim), torch.linspace(0.5, 1.5, dim)


def _gauss_task(dim: int, seed: int = 0) -> Task:
    mu, sd = _gauss_params(dim)
    g = torch.Generator().manual_seed(seed)
    train = mu + sd * torch.randn(2000, dim, generator=g)
    test = mu + sd * torch.randn(1000, dim, generator=g)

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Normal(mu, sd).log_prob(x).sum(-1)

    return Task("test-gauss", dim, train, test, log_prob=log_prob,
                sampler=lambda n, gen: mu + sd * torch.randn(n, dim, generator=gen))


#: the step at which a held cell announces itself and waits (see ``DiagGauss``)
HOLD_STEP = 2


def hold_here(folder: str, seed: int, timeout_s: float = 300.0) -> None:
    """A cell in progress, announced and held: write ``folder/started-<seed>``, then wait until the test
    writes ``folder/release`` (the signal and kill tests wait for the first file, never for a time)."""
    gate = Path(folder)
    (gate / f"started-{seed}").touch()
    deadline = time.monotonic() + timeout_s
    while not (gate / "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"held cell (seed {seed}) never released: no {gate / 'release'}")
        time.sleep(0.01)


class DiagGauss(Adapter):
    """N(mu, diag(exp(2 s))) trained by Adam on the mean NLL; ``nan_at_step`` poisons s to force a NaN loss;
    ``step_delay`` (s) slows each step; ``hold`` (a folder) with ``hold_seed``: the cell of that train seed
    announces itself at step :data:`HOLD_STEP` and waits for the test (:func:`hold_here`; signal/kill tests)."""

    name = "test-diag"
    family = "mle-flow"
    objective = "ml"
    hparam_spec = {"lr": HParam(0.05, float, low=1e-9), "batch_size": HParam(128, int, low=1),
                   "nan_at_step": HParam(0, int, low=0), "step_delay": HParam(0.0, float, low=0.0),
                   "sample_scale": HParam(1.0, float, doc="multiplies the samples' spread (1e6: exploding)"),
                   "hold": HParam("", str, doc="folder of the hold gate ('' = never hold)"),
                   "hold_seed": HParam(0, int, low=0, doc="train seed of the cell that holds")}

    @classmethod
    def check(cls, task: Task, dim: int, layers: int) -> str | None:
        return f"{cls.name} has at most 4 layers, not {layers}" if layers > 4 else None

    def build(self) -> None:
        self.mu = torch.zeros(self.dim, device=self.device, requires_grad=True)
        self.log_sd = torch.zeros(self.dim, device=self.device, requires_grad=True)
        self.opt = torch.optim.Adam([self.mu, self.log_sd], lr=self.hparams["lr"])
        self.steps = 0

    def _nll(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mu) * torch.exp(-self.log_sd)
        return 0.5 * (z**2).sum(-1) + self.log_sd.sum() + 0.5 * self.dim * math.log(2 * math.pi)

    def train_step(self, batch: torch.Tensor) -> float:
        self.steps += 1
        if self.steps == self.hparams["nan_at_step"]:
            with torch.no_grad():
                self.log_sd.fill_(float("nan"))
        if self.hparams["step_delay"]:
            time.sleep(self.hparams["step_delay"])
        if self.hparams["hold"] and self.steps == HOLD_STEP and self.seed == self.hparams["hold_seed"]:
            hold_here(self.hparams["hold"], self.seed)
        loss = self._nll(batch).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._nll(x)

    def sample(self, n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + 1)
        with torch.no_grad():
            sd = torch.exp(self.log_sd.cpu()) * self.hparams["sample_scale"]
            return (self.mu.cpu() + sd * torch.randn(n, self.dim, generator=g)).float()

    def num_params(self) -> int:
        return 2 * self.dim


class NoNLL(DiagGauss):
    """The same model pretending to be an EBM without a normalizing constant."""

    name = "test-nonll"
    family = "flowmc-ebm"
    objective = "test"

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        raise NLLUnavailable("test EBM: log Z is not estimated")


for _cls in (DiagGauss, NoNLL):
    if _cls.name not in _REGISTRY:
        register(_cls)
if "test-gauss" not in available_tasks():
    register_task("test-gauss")(lambda dim, seed=0: _gauss_task(dim, seed))
    register_task("test-fixed2", dim=2)(lambda seed=0: _gauss_task(2, seed))

    @register_task("test-nan", dim=2)
    def _nan_task(seed: int = 0) -> Task:
        t = _gauss_task(2, seed)
        t.train[3, 1] = float("nan")
        return Task("test-nan", 2, t.train, t.test)


# ------------------------------------------------------------------------------------------------ tests

from ebflow_bench.cli import main  # noqa: E402
from ebflow_bench.matrix import load_matrix  # noqa: E402
from ebflow_bench.results import load_results  # noqa: E402
from ebflow_bench.runner import TIMING_METRICS, RunDirExists, checkpoint_steps, run_matrix  # noqa: E402

KEY = ["cell_id", "metric", "step"]
NON_TIMING = ["cell_id", "config_key", "method", "family", "objective", "task", "dim", "layers", "hparams",
              "data_seed", "train_seed", "budget", "steps_done", "threads", "metric", "value", "unit", "status",
              "reason", "cell_status", "step", "n_params", "device"]


def _matrix_file(tmp_path: Path, extra: str = "", **over) -> Path:
    spec = {"methods": '["test-diag"]', "tasks": '["test-gauss"]', "dims": "[2, 3]", "layers": "[1]",
            "seeds": "[0, 1]", "budgets": "[150]", **over}
    body = "\n".join(f"{k} = {v}" for k, v in spec.items())
    p = tmp_path / "small.toml"
    p.write_text(f'name = "small"\nimports = [{json.dumps(PLUGIN)}]\n{body}\n{extra}\n'
                 "[eval]\nn_samples = 400\ncheckpoints = 3\n")
    return p


def _non_timing(df: pd.DataFrame) -> pd.DataFrame:
    df = df[~df["metric"].isin(["step_time", "train_time", "peak_memory"])][NON_TIMING]
    return df.sort_values(KEY).reset_index(drop=True)


def test_checkpoint_steps():
    assert checkpoint_steps(150, 3) == [50, 100, 150]
    assert checkpoint_steps(2, 4) == [1, 2]
    assert checkpoint_steps(10, 0) == []


def test_serial_run_learns_the_gaussian_and_writes_the_run_dir(tmp_path):
    m = load_matrix(_matrix_file(tmp_path, budgets="[300]", seeds="[0]", dims="[3]"))
    df = run_matrix(m, tmp_path / "run", progress=False)
    (cell_id,) = df["cell_id"].unique()
    run = tmp_path / "run"
    for f in ("matrix.json", "meta.json", "results.parquet", "results.csv", f"cells/{cell_id}.json"):
        assert (run / f).is_file(), f
    assert not list(run.glob("**/*.tmp*"))
    samples = np.load(run / "samples" / f"{cell_id}.npy")
    assert samples.shape == (400, 3) and samples.dtype == np.float32
    # the ML optimum of a diagonal Gaussian is the data's moments: test NLL ~ the true entropy
    task = _gauss_task(3, seed=0)
    true_nll = float(-task.log_prob(task.test).mean())
    got = df.set_index("metric").loc["test_nll", "value"]
    assert abs(got - true_nll) < 0.1, (got, true_nll)
    assert np.allclose(samples.mean(0), torch.linspace(-1, 1, 3).numpy(), atol=0.15)
    # time-to-quality: 3 checkpoints at steps 100/200/300, compute and wall time increasing, NLL improving
    tq = df[df["metric"] == "nll_at_time"].sort_values("step")
    assert tq["step"].tolist() == [100, 200, 300]
    assert (tq["wall_s"].diff().dropna() > 0).all() and (tq["compute_s"].diff().dropna() >= 0).all()
    assert tq["value"].iloc[0] > tq["value"].iloc[-1]
    # the record holds the same checkpoints, the totals and the median step; rows copy the contract
    rec = json.loads((run / "cells" / f"{cell_id}.json").read_text())
    assert [c["step"] for c in rec["checkpoints"]] == [100, 200, 300]
    assert [c["nll"] for c in rec["checkpoints"]] == tq["value"].tolist()
    assert rec["status"] == "ok" and rec["steps_done"] == 300 and rec["spec"]["budget"] == 300
    assert rec["compute_s"] == rec["checkpoints"][-1]["compute_s"] > 0 and rec["median_step_s"] > 0
    other = df[df["metric"] != "nll_at_time"]
    assert (other["compute_s"] == rec["compute_s"]).all() and (other["wall_s"] == rec["wall_s"]).all()
    assert (df["steps_done"] == 300).all() and (df["threads"] == 1).all() and (df["cell_status"] == "ok").all()
    assert json.loads(df["hparams"].iloc[0]) == rec["spec"]["hparams"] == {
        "lr": 0.05, "batch_size": 128, "nan_at_step": 0, "step_delay": 0.0, "sample_scale": 1.0, "hold": "",
        "hold_seed": 0}
    assert (df["config_key"] == rec["config_key"]).all() and (df["data_seed"] == 0).all()
    for metric in TIMING_METRICS[:3]:
        v = df.set_index("metric").loc[metric, "value"]
        assert v >= 0 and np.isfinite(v), metric
    assert set(df["status"]) <= {"ok", "unavailable"}
    assert (df["n_params"] == 6).all() and (df["family"] == "mle-flow").all()
    pd.testing.assert_frame_equal(load_results(run), load_results(run / "results.csv"))
    pd.testing.assert_frame_equal(load_results([run, run / "results.parquet"]), pd.concat([df, df],
                                                                                        ignore_index=True))


def test_nan_divergence_is_recorded_and_other_cells_finish(tmp_path):
    m = load_matrix(_matrix_file(tmp_path, methods='["test-diag", "test-nonll"]', dims="[2]", seeds="[0]",
                                 extra="[hparams.test-diag]\nnan_at_step = 70\n"))
    df = run_matrix(m, tmp_path / "run", progress=False)
    bad = df[df["method"] == "test-diag"]
    failed = bad[bad["status"] == "failed"]
    assert failed["metric"].tolist() == ["test_nll"] and failed["value"].isna().all()
    assert "diverged at step 70" in failed["reason"].iloc[0] and "nan" in failed["reason"].iloc[0]
    # the checkpoint before the divergence (step 50) is kept
    assert bad.loc[bad["metric"] == "nll_at_time", "step"].tolist() == [50]
    good = df[df["method"] == "test-nonll"]
    assert "failed" not in set(good["status"])
    nll_rows = good[good["metric"].isin(["test_nll", "nll_at_time"])]
    assert (nll_rows["status"] == "unavailable").all()
    assert nll_rows["reason"].str.contains("log Z is not estimated").all()
    assert (good.loc[good["status"] == "ok", "metric"] != "test_nll").all()
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["n_failed"] == 1 and meta["n_cells"] == 2


def test_existing_run_dir_is_refused_without_resume(tmp_path):
    m = load_matrix(_matrix_file(tmp_path, dims="[2]", seeds="[0]", budgets="[5]"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("mine")
    with pytest.raises(RunDirExists, match="already exists and is not empty; pass --resume"):
        run_matrix(m, run, progress=False)
    assert sorted(p.name for p in run.iterdir()) == ["keep.txt"]


def test_killed_run_resumes_to_the_same_table(tmp_path):
    """SIGKILL while the second cell is held in progress (announced by its marker file, never a time): exactly
    the first cell is recorded; --resume runs the other three; the table equals an uninterrupted run's."""
    gate = tmp_path / "gate"
    gate.mkdir()
    mfile = _matrix_file(tmp_path, budgets="[90]",
                         extra=f"[hparams.test-diag]\nhold = {json.dumps(str(gate))}\nhold_seed = 1\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "ebflow_bench.cli", "run", "--matrix", str(mfile), "--quiet", "--workers", "1"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300  # a guard against a hung test only: the wait is for the marker
        while not (gate / "started-1").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the held cell never started"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    first = {p.name: json.loads(p.read_text())["started"] for p in (killed / "cells").glob("*.json")}
    assert len(first) == 1 and not (killed / "results.parquet").exists()  # cells run in order: (D=2, seed 0)

    (gate / "release").touch()
    assert main(cmd[3:] + ["--out", str(killed)]) == 2  # not without --resume
    resumed = subprocess.run(cmd + ["--out", str(killed), "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    for name, started in first.items():  # finished cells were not run again
        assert json.loads((killed / "cells" / name).read_text())["started"] == started

    m = load_matrix(mfile)
    full = run_matrix(m, tmp_path / "full", progress=False)
    got = load_results(killed)
    assert got["cell_id"].nunique() == 4 and len(got) == len(full)
    pd.testing.assert_frame_equal(_non_timing(got), _non_timing(full))


def test_dask_two_workers_equal_serial(tmp_path):
    pytest.importorskip("dask.distributed")
    m = load_matrix(_matrix_file(tmp_path, budgets="[60]"))
    serial = run_matrix(m, tmp_path / "serial", progress=False)
    dask = run_matrix(m, tmp_path / "dask", workers=2, progress=False)
    assert serial["cell_id"].nunique() == 4
    pd.testing.assert_frame_equal(_non_timing(dask), _non_timing(serial))


def test_real_adapters_run_and_repeat_exactly(tmp_path):
    """Real peers through the runner: the same cell twice gives the same non-timing rows (seeded everywhere)."""
    m = load_matrix(_matrix_file(tmp_path, methods='["energy-flow", "flowmc-ebm"]', dims="[2]", seeds="[0]",
                                 budgets="[20]"))
    a = run_matrix(m, tmp_path / "a", progress=False)
    b = run_matrix(m, tmp_path / "b", progress=False)
    assert (a["status"] != "failed").all(), a[a["status"] == "failed"]["reason"].tolist()
    pd.testing.assert_frame_equal(_non_timing(a), _non_timing(b))
    se = a[(a["method"] == "flowmc-ebm") & (a["metric"] == "log_z_stderr")]
    assert len(se) == 1 and 0 <= se["value"].iloc[0] < 1
    assert set(a["family"]) == {"energy-flow", "flowmc-ebm"}


def test_time_cap_is_a_safety_limit_recorded_as_capped(tmp_path):
    """A cell stopped by its safety cap is `capped` (reason: the step), with a checkpoint at that step, and still
    evaluated; uncapped cells of the same matrix stay `ok`."""
    m = load_matrix(_matrix_file(tmp_path, budgets="[100000000]", seeds="[0]", dims="[2]", time_cap_s="0.4"))
    df = run_matrix(m, tmp_path / "run", progress=False)
    (cid,) = df["cell_id"].unique()
    rec = json.loads((tmp_path / "run" / "cells" / f"{cid}.json").read_text())
    assert rec["status"] == "capped" and (df["cell_status"] == "capped").all()
    n = rec["steps_done"]
    assert 1 <= n < 100_000_000 and f"at step {n} of 100000000" in rec["reason"] and rec["wall_s"] >= 0.4
    assert rec["checkpoints"][-1]["step"] == n and (df["steps_done"] == n).all()
    assert df.set_index("metric").loc["test_nll", "status"] == "ok"
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["n_capped"] == 1 and meta["n_failed"] == 0


def test_exploding_samples_make_a_degenerate_cell(tmp_path):
    m = load_matrix(_matrix_file(tmp_path, seeds="[0]", dims="[2]", budgets="[20]",
                                 extra="[hparams.test-diag]\nsample_scale = 1e7\n"))
    df = run_matrix(m, tmp_path / "run", progress=False)
    (cid,) = df["cell_id"].unique()
    rec = json.loads((tmp_path / "run" / "cells" / f"{cid}.json").read_text())
    assert rec["status"] == "degenerate" and "mass escapes" in rec["reason"]
    ev = rec["diagnosis"]["evidence"]
    assert ev["sample_max_distance"] > 1e3 * ev["data_radius"] and ev["escaped_fraction"] == 1.0
    assert (df["cell_status"] == "degenerate").all()


def test_busy_machine_gives_identical_non_timing_results(tmp_path):
    """Budgets are steps: the same matrix with a CPU-burning process beside it gives bit-identical results (only
    the timing columns differ)."""
    m = load_matrix(_matrix_file(tmp_path, budgets="[80]", seeds="[0, 1]", dims="[3]",
                                 methods='["test-diag", "ebflow-dsm"]'))
    quiet = run_matrix(m, tmp_path / "quiet", progress=False)
    burner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 60: pass"])
    try:
        busy = run_matrix(m, tmp_path / "busy", progress=False)
    finally:
        burner.kill()
        burner.wait()
    # 80 steps of ebflow-dsm end nearer uniform noise than the Gaussian fit: diagnosed degenerate, not failed
    status = quiet.groupby("method")["cell_status"].unique()
    assert quiet["cell_id"].nunique() == 4 and list(status["test-diag"]) == ["ok"]
    assert set(status["ebflow-dsm"]) <= {"ok", "degenerate"}
    pd.testing.assert_frame_equal(_non_timing(busy), _non_timing(quiet))
