"""The published configurations behind the ``paper`` preset, one row per value with its source.

``PROTOCOLS`` is the single machine-readable table: ``docs/PROTOCOLS.md`` is generated from it
(:func:`markdown`, ``python -m ebflow_bench.protocols > docs/PROTOCOLS.md``) and ``tests/test_protocols.py`` checks
that ``presets/paper.toml`` sets exactly these hyperparameters in the block whose tasks are ``tasks`` (and that
the doc is up to date), so preset, table and doc cannot drift.

Scale conversions made here (stated in the ``note`` column): EBFlow's code averages its losses over D while the
suite sums, so an official gradient clip c is ``clip_per_dim = c``; its toy data are smoothed with N(0, 0.375^2),
the task option ``smooth``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, NamedTuple


class Row(NamedTuple):
    tasks: tuple[str, ...]  #: the preset block (identified by its tasks)
    method: str
    hparam: str
    value: Any
    source: str
    note: str = ""


E_MNIST = "EBFlow official config real_world/ebflow/configs (MNIST FC), ebflow.md / paper-numbers.md"
E_TOY = "EBFlow official toy config toy_examples/ebflow/configs ({task}), ebflow.md table"
E_COMMON = "EBFlow configs: EMA 0.999, SSM slices 1 (paper-numbers.md 'Common settings')"
F_T1 = "flowMC-EBM App. C (8 Gaussians / Rings, extended example), peers.md B4"
F_GMM = "flowMC-EBM App. C (Gaussian mixtures in higher dimension), peers.md B4"
F_MOT = "flowMC-EBM App. C (motivating example), peers.md B4"
S_CODE = "SAEF official notebook (ps789/SAEF), peers.md A1/A4"

_EBFLOW = ("ebflow-ml", "ebflow-sml", "ebflow-ssm", "ebflow-dsm", "ebflow-fdssm")
_rows: list[Row] = []


def _add(tasks: tuple[str, ...], methods: tuple[str, ...], source: str, note: str = "", **hp: Any) -> None:
    for m in methods:
        for k, v in hp.items():
            _rows.append(Row(tasks, m, k, v, source, note))


# --- EBFlow MNIST FC (mnist5k stands in for MNIST) ---------------------------------------------------------------
MNIST = ("mnist5k",)
_add(MNIST, _EBFLOW, E_MNIST, arch="fc", optimizer="rmsprop", lr=1e-4, batch_size=100, lr_decay=0.95,
     lr_decay_epochs=49, logit_smoothness=0.5)
_add(MNIST, _EBFLOW, E_COMMON, ema_decay=0.999)
_add(MNIST, ("ebflow-ssm",), E_COMMON, slices=1)
_add(MNIST, ("ebflow-ssm", "ebflow-dsm", "ebflow-fdssm"), E_MNIST, lam=0.0)
_add(MNIST, ("ebflow-dsm",), E_MNIST, "in the logit space of smoothness 0.5", std=1.0)
_add(MNIST, ("ebflow-fdssm",), E_MNIST, "in the logit space of smoothness 0.5", eps=1.0)
_add(MNIST, ("ebflow-fdssm",), E_MNIST, "official clip 5 on the per-dimension loss = 5 * 784 here", clip_per_dim=5.0)
_add(MNIST, ("energy-flow-saef",), S_CODE, beta=0.5, m=2, lr=1e-4, batch_size=200, optimizer="adam")

# --- EBFlow toys: per task and objective (lr, clip, optimizer), smoothing 0.375, toy2d model, EMA ------------------
_TOY = {  # task: (batch, {method: (lr, clip or None, optimizer)})
    "sine": (2048, {"ebflow-ml": (5e-4, 1.0, "adam"), "ebflow-ssm": (1e-4, 1.0, "adam"),
                    "ebflow-dsm": (1e-4, 1.0, "adam"), "ebflow-fdssm": (1e-4, 1.0, "adam"),
                    "ebflow-sml": (5e-4, None, "adamw")}),
    "swirl": (2048, {"ebflow-ml": (5e-3, 1.0, "adam"), "ebflow-ssm": (1e-4, 10.0, "adam"),
                     "ebflow-dsm": (1e-4, 10.0, "adam"), "ebflow-fdssm": (1e-4, 2.5, "adam"),
                     "ebflow-sml": (1e-4, 10.0, "adam")}),
    "checkerboard": (10000, {"ebflow-ml": (1e-4, 10.0, "adamw"), "ebflow-ssm": (1e-4, 10.0, "adamw"),
                             "ebflow-dsm": (1e-4, 10.0, "adamw"), "ebflow-fdssm": (1e-4, 10.0, "adam"),
                             "ebflow-sml": (1e-4, 10.0, "adamw")}),
}
for _task, (_batch, _per) in _TOY.items():
    _src = E_TOY.format(task=_task)
    for _m, (_lr, _clip, _opt) in _per.items():
        _add((_task,), (_m,), _src, arch="toy2d", lr=_lr, optimizer=_opt, batch_size=_batch)
        if _clip is not None:
            _add((_task,), (_m,), _src, "official clip on the per-dimension loss", clip_per_dim=_clip)
    _add((_task,), _EBFLOW, E_COMMON, ema_decay=0.999)
    _add((_task,), ("ebflow-dsm",), _src, "DSM noise = the data smoothing", std=0.375)
    _add((_task,), ("ebflow-fdssm",), _src, "hard-coded in the toy code", eps=0.1)

# --- flowMC-EBM and ULA-EBM ---------------------------------------------------------------------------------------
T1 = ("eight_gaussians", "rings", "mixture-4modes")
_add(T1, ("flowmc-ebm",), F_T1, "1 i-SIR step (64 particles) + 127 MALA steps", lr=1e-3, batch_size=256,
     n_chains=8192, n_proposals=64, mala_steps=127, repeats=1)
_add(T1, ("ula-ebm",), F_T1, "512 ULA steps of size 0.125^2 / 2", lr=1e-2, batch_size=256, n_chains=8192,
     ula_steps=512, step=0.0078125)
MOT = ("mixture-2to1",)
_add(MOT, ("flowmc-ebm",), F_MOT, "2 x (1 i-SIR step of 32 particles + 4 MALA steps)", lr=1e-2, batch_size=64,
     n_chains=1024, n_proposals=32, mala_steps=4, repeats=2, step=0.01)
_add(MOT, ("ula-ebm",), F_MOT, "10 MCMC steps per iteration, as flowMC-EBM", lr=1e-2, batch_size=64, n_chains=1024,
     ula_steps=10, step=0.01)
GMM = ("gmm",)
_add(GMM, ("flowmc-ebm",), F_GMM, "16 x (1 i-SIR step of 128 particles + 8 MALA steps)", lr=1e-3, batch_size=128,
     n_chains=8192, n_proposals=128, mala_steps=8, repeats=16)
_add(GMM, ("ula-ebm",), F_GMM, "512 ULA steps of size 1e-3", lr=1e-2, batch_size=128, n_chains=8192, ula_steps=512,
     step=1e-3)

PROTOCOLS: tuple[Row, ...] = tuple(_rows)
#: task options the preset must set (EBFlow's toy smoothing)
TASK_OPTIONS: dict[str, dict[str, Any]] = {t: {"smooth": 0.375} for t in _TOY}


def block_hparams() -> dict[tuple[str, ...], dict[str, dict[str, Any]]]:
    """``{block tasks: {method: {hparam: value}}}`` as the preset must set them."""
    out: dict[tuple[str, ...], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in PROTOCOLS:
        out[r.tasks].setdefault(r.method, {})[r.hparam] = r.value
    return dict(out)


def markdown() -> str:
    lines = ["# Published protocols of the `paper` preset", "",
             "Generated from `ebflow_bench/protocols.py` (`python -m ebflow_bench.protocols > docs/PROTOCOLS.md`);",
             "`tests/test_protocols.py` pins `presets/paper.toml` to this table. Toy tasks are smoothed with "
             "N(0, 0.375^2) (task option `smooth`: " + ", ".join(sorted(TASK_OPTIONS)) + ").", "",
             "| block (tasks) | method | hparam | value | source | note |", "|---|---|---|---|---|---|"]
    for r in PROTOCOLS:
        lines.append(f"| {', '.join(r.tasks)} | {r.method} | `{r.hparam}` | {r.value!r} | {r.source} | {r.note} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
