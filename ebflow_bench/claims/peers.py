"""EBFlow against the prior determinant-free training techniques (family ``approx-ml``): claim
``ebflow-vs-prior-efficient``.

EBFlow's abstract: it "outperforms prior efficient training techniques with a noticeable margin in terms of
NLL". Decided on mnist5k with the FC model (2 dense 784 x 784 layers), EBFlow's SSM and DSM against ``snf``,
``relative-gradient`` and ``free-form-flow`` (architecture ``fc``), at equal steps (final ``test_bpd``) and at
equal compute (the ``nll_at_time`` checkpoint curves, in training compute seconds).

The rule (fixed before the run, thresholds below):

- a comparison is won by EBFlow when the better of its SSM and DSM has bits/dim at least ``MARGIN`` (1%) below
  the peer's; at equal steps the difference must also exceed two standard errors over seeds. 1% because the
  EBFlow paper itself calls its five objectives, 1.1% apart (1092.3-1104.1 nats), comparable: a noticeable
  margin must exceed that spread;
- at equal compute both curves are read at ``C`` = the smaller of the two methods' final compute (mean over
  seeds), each linearly interpolated in compute between its checkpoints (bits/dim from the checkpoint NLL);
  a curve that starts after ``C`` cannot be read there (inconclusive);
- a comparison whose losing side's checkpoint curve is still falling beyond its seeds' spread
  (``claims.core.still_improving``: more training might reverse it), or won over a peer whose NLL is flagged
  unreliable (a free-form flow whose decoder does not invert its encoder), is undecided;
- a peer whose every cell failed or is degenerate (a comparator that diverged) leaves its comparisons
  undecided; EBFlow's SSM and DSM both broken is "not reproduced";
- verdict: reproduced iff EBFlow wins every comparison (3 peers x {equal steps, equal compute}); not reproduced
  iff it loses at least one decided comparison; else inconclusive.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .core import EBFLOW_SRC, Broken, Cells, Claim, Inconclusive, Verdict, _fmt, mean_se, select, still_improving

PEER_TASK = "mnist5k"
PEER_SCALE = 256.0  # mnist5k's discrete_scale: bits/dim of the checkpoint NLLs
EBFLOW_SIDES = ("ebflow-ssm", "ebflow-dsm")
PEERS = ("snf", "relative-gradient", "free-form-flow")
MARGIN = 0.01
#: the reproduce preset's block (results/reproduce/matrix-peers.toml): 1,500 steps per cell
PEER_MIN_STEPS = 1500


def _fc(h: dict) -> bool:
    return h.get("arch", "fc") == "fc" and h.get("map", True) is not False


def _bpd(nats: np.ndarray, dim: int) -> np.ndarray:
    return (nats + dim * math.log(PEER_SCALE)) / (dim * math.log(2.0))


def _curve_bpd(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds per checkpoint: (compute seconds, bits/dim), ordered by step."""
    c = rows.groupby("step").agg(nll=("value", "mean"), compute=("compute_s", "mean")).reset_index()
    c = c.sort_values("step")
    c = c[np.isfinite(c["nll"].to_numpy(float)) & np.isfinite(c["compute"].to_numpy(float))]
    dim = int(pd.to_numeric(rows["dim"]).iloc[0])
    return c["compute"].to_numpy(float), _bpd(c["nll"].to_numpy(float), dim)


def _at(curve: tuple[np.ndarray, np.ndarray], c: float) -> float:
    x, y = curve
    if not len(x) or c < x[0] - 1e-12:
        return math.nan
    return float(np.interp(c, x, y))


def _side(df: pd.DataFrame, method: str) -> dict | None:
    """A method's final bits/dim (mean, SE, seeds), curve, and whether its NLL is flagged; None if broken."""
    try:
        final = select(df, method, PEER_TASK, "test_bpd", where=_fc)
    except Broken:
        return None
    curve_rows = select(df, method, PEER_TASK, "nll_at_time", where=_fc)
    flagged = "status" in final.columns and bool((final["status"] == "unreliable").any())
    return {"final": mean_se(final), "curve": _curve_bpd(curve_rows), "curve_rows": curve_rows,
            "flagged": flagged}


def _compare(eb: dict[str, dict], peer: dict, how: str) -> tuple[str, str]:
    """``(outcome, text)`` with outcome ``win``, ``loss`` or ``undecided`` for one peer at ``how``."""
    vals = {}
    if how == "steps":
        p = peer["final"]
        for m, s in eb.items():
            vals[m] = s["final"]
        best = min(vals, key=lambda m: vals[m][0])
        e = vals[best]
        se = math.sqrt(sum(v * v for v in (e[1], p[1]) if math.isfinite(v)))
        win = e[0] <= p[0] * (1 - MARGIN) and (p[0] - e[0]) > 2 * se
        text = f"{best.removeprefix('ebflow-')} {_fmt(e[0], 4)} vs {_fmt(p[0], 4)}"
        peer_v = p[0]
    else:
        peer_end = float(peer["curve"][0][-1]) if len(peer["curve"][0]) else math.nan
        pairs = {}
        for m, s in eb.items():
            end = float(s["curve"][0][-1]) if len(s["curve"][0]) else math.nan
            c = min(end, peer_end)
            pairs[m] = (c, _at(s["curve"], c), _at(peer["curve"], c))
        usable = {m: v for m, v in pairs.items() if math.isfinite(v[1]) and math.isfinite(v[2])}
        if not usable:
            return "undecided", "no curve readable at a common compute"
        best = min(usable, key=lambda m: usable[m][1] / usable[m][2])
        c, e0, peer_v = usable[best]
        win = e0 <= peer_v * (1 - MARGIN)
        text = f"{best.removeprefix('ebflow-')} {_fmt(e0, 4)} vs {_fmt(peer_v, 4)} at {c:.0f} s"
    if win and peer["flagged"]:
        return "undecided", text + " (the peer's NLL is flagged unreliable)"
    loser, who = (peer, "the peer") if win else (eb[best], "EBFlow")
    falling = still_improving(loser["curve_rows"])
    if falling:
        return "undecided", text + f"; {who}'s curve is {falling}"
    return ("win" if win else "loss"), text


def _rule_vs_prior(df: pd.DataFrame) -> Verdict:
    eb = {}
    for m in EBFLOW_SIDES:
        s = _side(df, m)
        if s is not None:
            eb[m] = s
    if not eb:
        raise Broken(f"every cell of {' and '.join(EBFLOW_SIDES)} on {PEER_TASK} failed or is degenerate")
    parts, outcomes, diverged = [], [], []
    for p in PEERS:
        peer = _side(df, p)
        if peer is None:
            diverged.append(p)
            outcomes.append("undecided")
            continue
        for how in ("steps", "compute"):
            outcome, text = _compare(eb, peer, how)
            outcomes.append(outcome)
            parts.append(f"{p} @ equal {how}: {outcome} ({text})")
    ours = "bits/dim, " + "; ".join(parts) + (f"; diverged: {', '.join(diverged)}" if diverged else "")
    n = min(s["final"][2] for s in eb.values())
    if "loss" in outcomes:
        return Verdict("not reproduced", ours, f"EBFlow loses {outcomes.count('loss')} of {len(outcomes)} "
                                                f"comparisons ({n} seed(s)).")
    if all(o == "win" for o in outcomes):
        return Verdict("reproduced", ours, f"EBFlow wins every comparison ({n} seed(s)).")
    why = (f"comparator(s) diverged: {', '.join(diverged)}" if diverged else
           f"{outcomes.count('undecided')} comparison(s) undecided (still improving or a flagged NLL)")
    raise Inconclusive(why, our_value=ours)


PEERS_CLAIMS: tuple[Claim, ...] = (
    Claim(
        "ebflow-vs-prior-efficient",
        "EBFlow outperforms prior efficient (determinant-free) training techniques with a noticeable margin in "
        "NLL.", EBFLOW_SRC + ", abstract",
        "EBFlow MNIST-FC 1092.4-1104.1 nats (its Table 2); SNF paper (Keller et al. 2021, Table 1): SNF 947.1, "
        "exact-gradient ML 947.6, relative gradient 1096.5 nats on the same 2-layer FC architecture",
        f"test_bpd and nll_at_time (compute_s) of ebflow-ssm, ebflow-dsm, snf, relative-gradient and "
        f"free-form-flow (arch fc) on {PEER_TASK}",
        "reproduced iff the better of EBFlow's SSM and DSM has bits/dim >= 1% below each peer's, at equal steps "
        "(and by > 2 SE over seeds) and at equal compute (both checkpoint curves linearly interpolated at the "
        "smaller final compute); not reproduced iff it fails one such comparison that is decided (a comparison is "
        "undecided while its losing side's checkpoint curve still falls by more than its seeds' spread over the "
        "last 3 checkpoints, and a win over a peer whose NLL is flagged unreliable is undecided); inconclusive "
        "otherwise, and where a comparator diverged (every cell failed or degenerate).",
        "Setting: MNIST-5k (4,500 training images), 1,500 steps of batch 100 on a CPU (the papers: up to 10,000 "
        "epochs on a GPU); each method at its published optimiser settings, EBFlow at its official MNIST-FC "
        "ones. The published numbers are not comparable across the two papers: their maximum-likelihood "
        "baselines on the same architecture differ by 145 nats (1092.4 vs 947.6), from training length, "
        "initialisation and logit smoothing; only this run's like-for-like numbers decide.",
        _rule_vs_prior, min_steps=PEER_MIN_STEPS,
        cells=Cells(("ebflow-ssm", "ebflow-dsm") + PEERS, (PEER_TASK,))),
)
