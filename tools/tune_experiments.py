"""Small tuning experiments for the EBFlow objectives (docs/TUNING.md): train one adapter on one task the way
the runner does (seeded epochs of batches, ``task.augment`` on every batch), record the test NLL at a few
checkpoints, the final diagnosis (:func:`ebflow_bench.diagnostics.diagnose`) and the wall time, one JSON line
per run.

    python -m tools.tune_experiments EXPERIMENTS.json OUT.jsonl

EXPERIMENTS.json is a list of ``{"tag", "task", "method", "steps", "layers", "seed", "task_options", "hparams",
"dim"}`` objects (all but task/method optional). Runs already in OUT.jsonl (same tag) are skipped.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

from ebflow_bench.adapters.base import NLLUnavailable
from ebflow_bench.diagnostics import diagnose, gaussian_fit
from ebflow_bench.matrix import adapter_registry
from ebflow_bench.runner import _batches
from ebflow_bench.tasks import evaluation_rows, get_task, task_dim


def run_one(spec: dict) -> dict:
    seed = int(spec.get("seed", 0))
    torch.manual_seed(seed)
    name = spec["task"]
    dim = spec.get("dim") if task_dim(name) is None else None
    task = get_task(name, dim=dim, seed=seed, **spec.get("task_options", {}))
    cls = adapter_registry()[spec["method"]]
    steps = int(spec.get("steps", 1500))
    adapter = cls(task, dim=task.dim, layers=int(spec.get("layers", 2)), seed=seed, **spec.get("hparams", {}))
    gen = torch.Generator().manual_seed(seed)
    batches = _batches(task.train.shape[0], adapter.batch_size, gen)
    test = evaluation_rows(task, 1000)
    checkpoints = sorted({max(1, round(steps * i / 4)) for i in range(1, 5)})
    out = {**spec, "nll_at": {}, "status": "ok"}
    t0 = time.perf_counter()
    try:
        for step in range(1, steps + 1):
            loss = adapter.train_step(task.augment(task.train[next(batches)], gen))
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss {loss}")
            if step in checkpoints:
                try:
                    out["nll_at"][step] = float(adapter.nll(test).double().mean())
                except NLLUnavailable:
                    pass
        out["train_s"] = time.perf_counter() - t0
        try:
            nll = adapter.nll(test).double()
        except NLLUnavailable:
            nll = None
        samples = adapter.sample(1000)
        d = diagnose(task, samples, nll)
        out["test_nll"] = None if nll is None else float(nll.mean())
        out["gaussian_fit_nll"] = float(gaussian_fit(task).nll(test).mean())
        if task.log_prob is not None:
            out["true_nll"] = float(-task.log_prob(test.double()).mean())
        if task.mode_means is not None:  # mixtures: sample fraction nearest to each mode centre
            k = torch.cdist(samples.double(), task.mode_means.double()).argmin(1)
            out["mode_weights"] = (torch.bincount(k, minlength=len(task.mode_means)).double() / len(k)).tolist()
        out["degenerate"] = None if d is None else d.reason
        out["evidence"] = None if d is None else d.evidence
    except Exception as e:  # noqa: BLE001
        out.update(status="failed", reason=f"{type(e).__name__}: {e}", train_s=time.perf_counter() - t0)
    return out


def main(argv: list[str]) -> None:
    specs = json.loads(Path(argv[0]).read_text())
    out_path = Path(argv[1])
    done = set()
    if out_path.exists():
        done = {json.loads(line)["tag"] for line in out_path.read_text().splitlines() if line.strip()}
    torch.set_num_threads(1)
    for spec in specs:
        if spec["tag"] in done:
            continue
        rec = run_one(spec)
        with out_path.open("a") as f:
            f.write(json.dumps(rec, default=float) + "\n")
        print(rec["tag"], rec.get("status"), "nll", rec.get("test_nll"), "gfit", rec.get("gaussian_fit_nll"),
              "true", rec.get("true_nll"), "deg", rec.get("degenerate"), f"{rec.get('train_s', 0):.0f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
