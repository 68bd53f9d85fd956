"""The resource pre-flight (issue 22): every cell's peak memory estimated from its method, D, L and batch before
any work, an impossible matrix refused in one line (exit 2) before the run folder or any data exists, long
setups announced on stderr, and the estimate checked against measured peaks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import ebflow_bench.preflight as preflight
from ebflow_bench.adapters import get
from ebflow_bench.cli import EXIT_BAD_INPUT, main
from ebflow_bench.matrix import matrix_from_dict, validate

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30


def _write(tmp_path: Path, dims, methods=("ebflow-ml",), layers=(2,), extra="") -> str:
    p = tmp_path / "m.toml"
    p.write_text(f"methods = {json.dumps(list(methods))}\ntasks = [\"gaussian\"]\ndims = {json.dumps(list(dims))}\n"
                 f"layers = {json.dumps(list(layers))}\nbudgets = [3]\n{extra}")
    return str(p)


def test_an_impossible_matrix_is_one_line_before_any_task_or_folder(tmp_path, capsys, monkeypatch):
    import ebflow_bench.tasks as tasks

    def no_build(*a, **k):
        raise AssertionError("a task was built before the pre-flight refused the matrix")

    monkeypatch.setattr(tasks, "get_task", no_build)
    run = tmp_path / "run"
    code = main(["run", "--matrix", _write(tmp_path, [200000, 64]), "--out", str(run)])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and err.count("\n") == 1 and err.startswith("error: cell ")
    line = err.strip()
    assert "ebflow-ml on gaussian (D=200000, L=2, batch 256)" in line
    est = preflight.estimate(get("ebflow-ml"), "gaussian", 200000, 2, {}, None)
    assert f"needs an estimated {preflight.fmt_bytes(est.total)} of memory" in line
    assert "task eigenbasis" in line and "memory available here: " in line
    assert not run.exists()


#: what the refusal of an impossible matrix must not wait for: the runner (pandas, Dask), torch and the methods'
#: libraries (the declarations it reads load without them: ebflow_bench/_lazy.py)
_HEAVY = ('ebflow_bench.runner', 'pandas', 'dask', 'distributed', 'torch', 'ebflow', 'baselines', 'nflows',
          'normflows')


def _refusal_probe(matrix: str, out: Path) -> str:
    return ("import sys\nfrom ebflow_bench.cli import main\n"
            f"code = main(['run', '--matrix', {matrix!r}, '--out', {str(out)!r}])\n"
            f"print(code, sorted(m for m in {_HEAVY!r} if m in sys.modules))\n")


def test_the_refusal_comes_before_the_runner_torch_and_the_libraries(tmp_path):
    """The CLI refuses an impossible matrix before it imports the runner, torch or any method's library: what
    the refusal waits for is the Python start and the suite's declarations (README: a fraction of a second)."""
    out = subprocess.run([sys.executable, "-c", _refusal_probe(_write(tmp_path, [200000]), tmp_path / "r")],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split("\n")[0] == f"{EXIT_BAD_INPUT} []", out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: cell ebflow-ml on gaussian (D=200000")


def test_every_builtin_method_and_task_is_checked_without_torch(tmp_path):
    """Every registered adapter's hyperparameters and memory estimate, and every task's name, fixed D and data
    sizes, are declarations: a matrix of all of them at an impossible D is refused with none of torch, the
    methods' libraries or the runner imported (a module-level torch use in an adapter or a task fails here).
    The names come from the fresh process itself (the built-ins only, not what other tests registered)."""
    probe = f"""import json, sys
from ebflow_bench.cli import main
from ebflow_bench.matrix import adapter_registry
from ebflow_bench.tasks import available_tasks, task_dim
methods = sorted(adapter_registry())
free = [t for t in available_tasks() if t != "file" and task_dim(t) is None]
fixed = [t for t in available_tasks() if t != "file" and task_dim(t) is not None]
codes = []
for tasks, dim in ((free, 200000), (fixed, 7)):
    open({str(tmp_path / "all.toml")!r}, "w").write(f"methods = {{json.dumps(methods)}}\\ntasks = "
        f"{{json.dumps(tasks)}}\\ndims = [{{dim}}]\\nlayers = [2]\\nbudgets = [3]\\n")
    codes.append(main(["run", "--matrix", {str(tmp_path / "all.toml")!r}, "--out", {str(tmp_path / "r")!r}]))
print(json.dumps({{"codes": codes, "methods": len(methods), "free": len(free), "fixed": len(fixed),
                  "heavy": sorted(m for m in {_HEAVY!r} if m in sys.modules)}}))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["codes"] == [EXIT_BAD_INPUT, EXIT_BAD_INPUT] and got["heavy"] == [], out.stdout + out.stderr
    assert got["methods"] >= 20 and got["free"] >= 2 and got["fixed"] >= 10, got
    first, rest = out.stderr.split("\n", 1)
    assert first.startswith("error: cell ") and "D=200000" in first  # the pre-flight names the largest cell
    assert rest.startswith("error: invalid matrix:") and rest.count("impossible D 7 for task") == got["fixed"]


def test_the_limit_names_the_largest_cell_and_counts_the_others(monkeypatch):
    m = matrix_from_dict({"methods": ["ebflow-ml", "ebflow-dsm"], "tasks": ["gaussian"], "dims": [64, 2048],
                          "budgets": [3]})
    ests = {(m_, d): preflight.estimate(get(m_), "gaussian", d, 2, {}, None, 2000).total
            for m_ in ("ebflow-ml", "ebflow-dsm") for d in (64, 2048)}
    limit = sorted(ests.values())[1] + 1  # two cells fit, two do not
    monkeypatch.setattr(preflight, "available_memory", lambda: limit)
    with pytest.raises(preflight.ResourceError) as e:
        validate(m)
    msg = str(e.value)
    worst = max(ests, key=ests.get)
    assert f"cell {worst[0]} on gaussian (D={worst[1]}, L=2, batch 256)" in msg and "(and 1 more cell over it)" in msg
    assert f"memory available here: {preflight.fmt_bytes(limit)}" in msg and "\n" not in msg
    monkeypatch.setattr(preflight, "available_memory", lambda: max(ests.values()))
    assert len(validate(m)) == 4


def test_estimate_parts_follow_the_model():
    ml, dsm = get("ebflow-ml"), get("ebflow-dsm")
    a = preflight.estimate(ml, "gaussian", 1000, 2, {}, None, 2000).parts
    assert a["parameters"] == 4 * 2 * (1000 * 1000 + 1000) == a["gradients"] == a["EMA"]
    assert a["optimizer state"] == 2 * a["parameters"]  # Adam: two buffers
    assert a["task eigenbasis"] == preflight.GAUSSIAN_D2_BYTES * 1000 ** 2
    assert a["task data"] == 12 * (8000 + 2000) * 1000  # the gaussian task's n_train = 8e6 / D
    b = preflight.estimate(ml, "gaussian", 1000, 2, {"optimizer": "rmsprop", "ema_decay": 0.0}, None, 2000).parts
    assert b["optimizer state"] == a["parameters"] and "EMA" not in b
    c = preflight.estimate(dsm, "gaussian", 1000, 2, {}, None, 2000).parts
    assert c["log-det workspace"] < a["log-det workspace"]  # ML keeps every layer's LU factors for backward
    d = preflight.estimate(ml, "gaussian", 1000, 2, {"batch_size": 512}, None, 2000).parts
    assert d["activations"] == 2 * a["activations"]
    # the default hook (an adapter that does not declare one): linear in D
    maf = get("nflows-maf")
    small, big = (preflight.estimate(maf, "gaussian", d, 2, {}, None, 0).parts for d in (1000, 2000))
    assert big["parameters"] < 2.1 * small["parameters"]


def test_fit_workers():
    e = [preflight.Estimate({"x": 3 * GIB}), preflight.Estimate({"x": 2 * GIB}), preflight.Estimate({"x": GIB})]
    base = preflight.WORKER_BASELINE_BYTES
    assert preflight.fit_workers(3, e, 6 * GIB + 3 * base) == 3
    assert preflight.fit_workers(3, e, 6 * GIB) == 2
    assert preflight.fit_workers(3, e, 3 * GIB) == 1
    assert preflight.fit_workers(3, e, None) == 3


def test_a_big_cell_announces_its_setup_stages(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(preflight, "ANNOUNCE_BYTES", 0)
    run = tmp_path / "run"
    # 3 steps fit nothing: the cell may come out degenerate (exit 4); what is tested is that it says what it does
    assert main(["run", "--workers", "1", "--quiet", "--matrix", _write(tmp_path, [8]), "--out", str(run)]) in (0, 4)
    err = capsys.readouterr().err
    assert "setup: building task 'gaussian' at D=8 to check its data (estimated " in err
    for stage in ("building the task (estimated peak ", "building the adapter", "training, 3 steps", "evaluating"):
        assert f": {stage}" in err, stage
    assert "(ebflow-ml on gaussian, D=8, L=2)" in err


#: the stated error of the estimate: the measured peak of a cell (the runner's ``peak_memory``: task, model,
#: steps, evaluation) lies between these fractions of its estimate (measured over EBFlow's four objectives at
#: D = 256..2048: 0.72 to 0.94, i.e. the estimate is 6-28% high, never low)
LOW, HIGH = 0.6, 1.1
_CHILD = r"""
import json, sys
import ebflow_bench.runner as runner
rec, _ = runner.run_cell(json.loads(sys.argv[1]))
print(json.dumps([r["value"] for r in rec["rows"] if r["metric"] == "peak_memory"][0]))
"""


def test_the_estimate_bounds_measured_peaks_within_its_stated_error():
    """Each cell in a fresh process (as the first cell of a run, which also pays torch's lazy initialisation;
    a later cell of a process reuses memory its allocator already holds and measures less)."""
    import os

    procs = []
    for method, d in [("ebflow-ml", 512), ("ebflow-ml", 1536), ("ebflow-dsm", 1536)]:
        m = matrix_from_dict({"methods": [method], "tasks": ["gaussian"], "dims": [d], "layers": [2], "budgets": [3],
                              "eval": {"n_samples": 2000, "checkpoints": 1}})
        (spec,) = validate(m)
        procs.append((spec, subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(spec.to_dict())], cwd=ROOT,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                             env={**os.environ, "PYTHONPATH": str(ROOT)})))
    for spec, proc in procs:  # the peak of each process is its own: they may run side by side
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        mib = json.loads(out.strip().splitlines()[-1])
        est = preflight.spec_estimate(spec).total / 2**20
        assert LOW * est <= mib <= HIGH * est, (spec.method, spec.dim, mib, est)
