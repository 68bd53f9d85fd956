"""Render results/tuning/runs.jsonl (written by tools/tune_experiments.py) as the markdown table of docs/TUNING.md.

    python -m tools.tuning_table results/tuning/runs.jsonl [docs/TUNING.md]

With a second argument, the table replaces everything after the line "## Measured runs" of that file.

Groups are the tag prefixes (``group/variant``); each run's gap is relative to the group's ``ml`` run (for
digits on the bits/dim scale of the integer data, where NLLs are positive; elsewhere on the nats scale).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def _scale(rec: dict, nll: float | None) -> float | None:
    if nll is None:
        return None
    if rec["task"] == "digits":
        return (nll + 64 * math.log(17)) / (64 * math.log(2))
    return nll


def main(path: str, doc: str | None = None) -> None:
    if doc is not None:
        import contextlib
        import io

        head = Path(doc).read_text().split("## Measured runs\n")[0]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            main(path)
        Path(doc).write_text(head + "## Measured runs\n" + buf.getvalue())
        return
    recs = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    by_tag = {r["tag"]: r for r in recs}
    print("| run | task (options) | L | steps | hparams | test NLL | ml NLL | gap | gaussian-fit | truth | "
          "degenerate? |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in recs:
        group = r["tag"].split("/")[0]
        ml = by_tag.get(f"{group}/ml") or by_tag.get(f"{group}/ebflow-ml/default")
        unit = "bpd" if r["task"] == "digits" else "nats"
        v, m = _scale(r, r.get("test_nll")), _scale(r, ml.get("test_nll")) if ml else None
        gap = f"{100 * (v - m) / abs(m):+.1f}%" if v is not None and m is not None else ""
        g = _scale(r, r.get("gaussian_fit_nll"))
        t = _scale(r, r.get("true_nll"))
        opts = ", ".join(f"{k}={val}" for k, val in r.get("task_options", {}).items())
        hp = ", ".join(f"{k}={val}" for k, val in r.get("hparams", {}).items() if k != "arch")
        arch = r.get("hparams", {}).get("arch", "fc")
        deg = r.get("degenerate") or ("failed: " + r["reason"] if r.get("status") == "failed" else "no")
        fmt = (lambda x: "" if x is None else f"{x:.3f}")
        print(f"| {r['tag']} | {r['task']}{f' ({opts})' if opts else ''} | {r['layers']} {arch} | {r['steps']} | "
              f"{r['method'].removeprefix('ebflow-')} {hp} | {fmt(v)} {unit} | {fmt(m)} | {gap} | {fmt(g)} | {fmt(t)} | "
              f"{deg} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
