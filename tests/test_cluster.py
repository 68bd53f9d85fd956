"""Dask runs (issue 12, item 10): plugin files reach the workers without sharing a path, a worker killed
mid-run costs one retry (then a `failed` cell), versions are compared, an unreachable scheduler is refused in
seconds before anything is written, and local workers get one GPU each."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

pytest.importorskip("dask.distributed")

from ebflow_bench import cluster  # noqa: E402
from ebflow_bench.cli import EXIT_BAD_INPUT, EXIT_CELLS_FAILED, main  # noqa: E402
from ebflow_bench.matrix import load_matrix, validate  # noqa: E402
from ebflow_bench.results import frame, load_results, rows_from_cell  # noqa: E402
from ebflow_bench.runner import run_matrix  # noqa: E402

# A user's plugin, as a file the suite has never seen: a task (a noisy line in 2-D) and a diagonal-Gaussian
# adapter that can kill its own worker process at step 3 ("once": only if the marker file does not exist yet).
PLUGIN_SOURCE = '''
import math, os
from pathlib import Path
import torch
from ebflow_bench.adapters.base import Adapter, register
from ebflow_bench.tasks import Task, register_task

@register_task("plugin-line", dim=2)
def line(seed=0, n_train=500, n_test=200):
    g = torch.Generator().manual_seed(seed)
    def draw(n):
        t = torch.randn(n, 1, generator=g)
        return torch.cat([t, 0.5 * torch.randn(n, 1, generator=g)], 1)  # a diagonal model fits it
    return Task("plugin-line", 2, draw(n_train), draw(n_test))

@register
class PluginDiag(Adapter):
    name, family, objective = "plugin-diag", "mle-flow", "ml"
    defaults = {"lr": 0.05, "batch_size": 64, "kill": "never", "marker": ""}

    def build(self):
        self.mu = torch.zeros(self.dim, requires_grad=True)
        self.log_sd = torch.zeros(self.dim, requires_grad=True)
        self.opt = torch.optim.Adam([self.mu, self.log_sd], lr=self.hparams["lr"])
        self.steps = 0

    def _nll(self, x):
        z = (x - self.mu) * torch.exp(-self.log_sd)
        return 0.5 * (z ** 2).sum(-1) + self.log_sd.sum() + 0.5 * self.dim * math.log(2 * math.pi)

    def train_step(self, batch):
        self.steps += 1
        kill, marker = self.hparams["kill"], Path(self.hparams["marker"] or os.devnull)
        if self.steps == 3 and (kill == "always" or (kill == "once" and not marker.exists())):
            marker.touch()
            os._exit(1)  # the worker process dies mid-cell
        loss = self._nll(batch).mean()
        self.opt.zero_grad(); loss.backward(); self.opt.step()
        return float(loss.detach())

    def nll(self, x):
        with torch.no_grad():
            return self._nll(x)

    def sample(self, n):
        g = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            return self.mu + torch.exp(self.log_sd) * torch.randn(n, self.dim, generator=g)

    def num_params(self):
        return 2 * self.dim
'''

NON_TIMING = ["cell_id", "config_key", "method", "task", "hparams", "data_seed", "train_seed", "steps_done", "metric",
              "value", "status", "reason", "cell_status", "step"]


def _plugin(folder: Path, stem: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{stem}.py"
    p.write_text(PLUGIN_SOURCE)
    return p


def _block(hparams: str = "", seeds: str = "[0, 1]") -> str:
    return ('[[block]]\nmethods = ["plugin-diag"]\ntasks = ["plugin-line"]\nlayers = [1]\n'
            f"seeds = {seeds}\nbudgets = [30]\n" + hparams)


def _matrix_file(tmp_path: Path, plugin: Path, blocks: list[str], name: str = "m") -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(f'name = "{name}"\nimports = [{json.dumps(str(plugin))}]\n[eval]\nn_samples = 100\n'
                 "checkpoints = 1\n\n" + "\n".join(blocks))
    return p


def _non_timing(df: pd.DataFrame) -> pd.DataFrame:
    df = df[~df["metric"].isin(["step_time", "train_time", "peak_memory"])][NON_TIMING]
    return df.sort_values(["cell_id", "metric", "step"]).reset_index(drop=True)


@pytest.mark.timeout(120)
def test_plugin_on_workers_without_its_path_and_a_killed_worker(tmp_path, monkeypatch):
    """A plugin task and adapter on 2 local workers that cannot read the plugin's path; one cell kills its worker
    once (redone elsewhere, ok), one kills it every time (recorded failed: worker lost twice); every other cell
    is intact and equals a serial run. Local workers get one GPU each."""
    plugin = _plugin(tmp_path / "client-only", "user_line")
    marker_once, marker_always = tmp_path / "killed-once", tmp_path / "killed-always"
    once = _block(f'[block.hparams.plugin-diag]\nkill = "once"\nmarker = {json.dumps(str(marker_once))}\n', "[0]")
    always = _block(f'[block.hparams.plugin-diag]\nkill = "always"\nmarker = {json.dumps(str(marker_always))}\n',
                    "[0]")
    m = load_matrix(_matrix_file(tmp_path, plugin, [_block(), once, always]))
    cells = validate(m)  # imports the plugin here, in the client
    monkeypatch.setattr(cluster, "gpu_assignment", lambda n, device: ["0", "1"][:n])  # as with 2 GPUs
    records = []
    with cluster.connect(2, None, m.imports, "cpu") as client:
        plugin.rename(tmp_path / "gone.py")  # the workers cannot read it from the client's path
        where = client.run(lambda: sys.modules["ebflow_bench_plugin_user_line"].__file__)
        assert len(where) == 2 and all("ebflow_bench_plugins" in f and "client-only" not in f
                                       for f in where.values())
        gpus = client.run(lambda: __import__("os").environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(gpus.values()) == ["0", "1"]  # one GPU per local worker
        cluster.check_versions(client)  # same installation: no mismatch
        cluster.run_cells(client, cells, lambda rec, samples: records.append(rec))
    plugin = (tmp_path / "gone.py").rename(plugin)
    assert sorted(r["cell_id"] for r in records) == sorted(c.cell_id for c in cells)
    assert marker_once.exists() and marker_always.exists()
    by_status = {r["cell_id"]: (r["status"], r["reason"]) for r in records}
    always_id = next(c.cell_id for c in cells if c.hparams.get("kill") == "always")
    assert by_status.pop(always_id) == ("failed", cluster.LOST_TWICE)
    assert all(v == ("ok", "") for v in by_status.values()), by_status
    # the 3 ok cells (the once-killed one redone from scratch) equal a serial run of the same cells
    serial = run_matrix(load_matrix(_matrix_file(tmp_path, plugin, [_block(), once], "serial")),
                        tmp_path / "serial", progress=False)
    ok = frame(row for r in records if r["status"] == "ok" for row in rows_from_cell(r))
    pd.testing.assert_frame_equal(_non_timing(ok), _non_timing(serial))


def test_version_mismatches_are_listed():
    local = {"python": "3.11.7", "torch": "2.13.0", "numpy": "2.1.0", "ebflow-bench": "0.1.0"}
    workers = {"tcp://a:1": dict(local), "tcp://b:2": {**local, "torch": "2.12.1", "ebflow-bench": "missing"}}
    assert cluster.version_mismatches(local, workers) == [
        "tcp://b:2: torch 2.12.1 (client has 2.13.0)", "tcp://b:2: ebflow-bench missing (client has 0.1.0)"]


def test_gpu_assignment(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert cluster.gpu_assignment(3, "cuda") == ["0", "1", "0"]
    assert cluster.gpu_assignment(2, "auto") == ["0", "1"]
    assert cluster.gpu_assignment(2, "cuda:1") == [None, None]  # an explicit card is the user's choice
    assert cluster.gpu_assignment(2, "cpu") == [None, None]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert cluster.gpu_assignment(3, "cuda") == ["3", "5", "3"]


def test_unreachable_scheduler_fails_fast_before_writing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2.0)
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    plugin = _plugin(tmp_path / "plugins", "user_line")  # the same module name: loaded once per process
    out = tmp_path / "run"
    t0 = time.time()
    code = main(["run", "--matrix", str(_matrix_file(tmp_path, plugin, [_block()])), "--out", str(out),
                 "--scheduler", f"tcp://127.0.0.1:{port}", "--quiet"])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and f"cannot reach the Dask scheduler at 'tcp://127.0.0.1:{port}'" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and time.time() - t0 < 15
    # a plain rerun is not blocked by a leftover folder
    assert main(["run", "--matrix", str(_matrix_file(tmp_path, plugin, [_block()])), "--out", str(out),
                 "--quiet"]) == 0
    assert load_results(out)["cell_id"].nunique() == 2
    assert EXIT_CELLS_FAILED == 3


def test_plugin_files_setup_writes_imports_and_refuses_a_changed_plugin(tmp_path):
    """What each worker runs (also on restart): the shipped source is imported from the worker's folder under
    the client's module name; an edited plugin on a worker that holds the old one is refused, not mixed."""
    from types import SimpleNamespace

    src = tmp_path / "client" / "tiny_plugin_xyz.py"
    src.parent.mkdir()
    src.write_text("VALUE = 1\n")
    shipped = cluster.PluginFiles([str(src)])
    src.unlink()  # the worker gets the bytes, not the path
    worker = SimpleNamespace(local_directory=str(tmp_path / "worker"))
    shipped.setup(worker)
    mod = sys.modules["ebflow_bench_plugin_tiny_plugin_xyz"]
    assert mod.VALUE == 1 and Path(mod.__file__).parent == tmp_path / "worker" / "ebflow_bench_plugins"
    shipped.setup(worker)  # a restart with the same source is fine
    src.write_text("VALUE = 2\n")
    with pytest.raises(RuntimeError, match="tiny_plugin_xyz.py changed since this worker imported it"):
        cluster.PluginFiles([str(src)]).setup(worker)
    with pytest.raises(cluster.ClusterError, match="cannot read the plugin file"):
        cluster.PluginFiles([str(tmp_path / "missing.py")])
