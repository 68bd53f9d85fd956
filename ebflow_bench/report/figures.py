"""The report's figures: small seaborn/matplotlib PNGs drawn with the Agg backend (no display needed).

Each function draws one figure, writes it to ``path`` and returns ``path``; the caller decides whether there
is enough data to draw (these functions assume there is).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

DPI = 80
_STYLE = {"axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
          "legend.fontsize": 6, "legend.title_fontsize": 7}


def method_colors(methods) -> dict[str, tuple[float, float, float]]:
    """One colour per method (sorted names), shared by every figure of a report."""
    names = sorted(set(methods))
    return dict(zip(names, sns.color_palette("tab10" if len(names) <= 10 else "husl", len(names))))


def _log_ticks(ax, axis: str, values) -> None:
    """Major ticks at the measured values, plain integers, no minor labels; of values closer than a factor 1.6
    on the log axis, only the first is labelled (so 1024, 1536, 2048, ... do not overlap)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ticks: list[float] = []
    for v in sorted({float(v) for v in values}):
        if not ticks or v >= 1.6 * ticks[-1]:
            ticks.append(v)
    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(FixedLocator(ticks))
    a.set_major_formatter(matplotlib.ticker.FixedFormatter([f"{t:g}" for t in ticks]))
    a.set_minor_locator(NullLocator())
    a.set_minor_formatter(NullFormatter())


def _clip_outliers(ax, values: np.ndarray) -> None:
    """Keep the y-axis on the bulk of the values: its top at most Q3 + 3 IQR (an early checkpoint of one method
    far above the rest would otherwise flatten every other curve); the clipped points leave the panel."""
    v = values[np.isfinite(values)]
    if len(v) < 4:
        return
    q1, q3 = np.percentile(v, [25, 75])
    top = q3 + 3 * (q3 - q1)
    if v.max() > top > v.min():
        pad = 0.05 * (top - v.min())
        ax.set_ylim(v.min() - pad, top + pad)
        ax.annotate("y clipped above", xy=(0.02, 0.98), xycoords="axes fraction", ha="left", va="top", fontsize=7)


def _subplots(n: int, *, width: float = 3.4, height: float = 2.8, ncols: int | None = None):
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=DPI)
    plt.close(fig)
    return path


def scaling(panels: list[tuple[str, float, pd.DataFrame]], x: str, labels: dict[tuple[str, float, str], str],
            colors: dict[str, tuple], path: Path) -> Path:
    """Mean step time against ``x`` ("dim" or "layers") on log-log axes, one line per method, one panel per
    (task, fixed value of the other variable). ``labels[(task, fixed, method)]`` is the legend text."""
    with sns.axes_style("whitegrid"), plt.rc_context(_STYLE):
        fig, axes = _subplots(len(panels))
        for ax, (task, v, g) in zip(axes, panels):
            g = g.assign(label=[labels.get((task, v, m), m) for m in g["method"]]).sort_values("method")
            palette = {labels.get((task, v, m), m): colors[m] for m in g["method"].unique()}
            sns.lineplot(data=g, x=x, y="value", hue="label", palette=palette, marker="o", errorbar=None, ax=ax)
            ax.set(xscale="log", yscale="log", xlabel="D" if x == "dim" else "L", ylabel="step time (s)",
                   title=f"{task}, {'L' if x == 'dim' else 'D'} = {int(v)}")
            _log_ticks(ax, "x", g[x])
            ax.legend(title="method (exponent, 95% CI)")
        return _save(fig, path)


def equal_compute(curves: pd.DataFrame, points: pd.DataFrame, colors: dict[str, tuple], path: Path) -> Path:
    """Checkpoint test NLL against training compute seconds, one line per cell (colour: the configuration's
    label), one panel per (task, D); dotted vertical lines at the equal-compute points of ``points`` (the long
    table of ``tables.equal_compute``)."""
    panels = list(curves.groupby(["task", "dim"], sort=True))
    with sns.axes_style("whitegrid"), plt.rc_context(_STYLE):
        fig, axes = _subplots(len(panels))
        for ax, ((task, dim), g) in zip(axes, panels):
            g = g.sort_values(["label", "cell_id", "compute_s"])
            sns.lineplot(data=g, x="compute_s", y="value", hue="label", palette=colors, units="cell_id",
                         estimator=None, marker="o", ax=ax)
            span = g["compute_s"].max() / max(g["compute_s"].min(), 1e-12)
            if g["compute_s"].min() > 0 and span > 100:
                ax.set_xscale("log")
            for c in points.loc[points["task"].eq(task) & points["dim"].eq(dim), "compute_s"].unique():
                ax.axvline(c, color="0.4", linestyle=":", linewidth=0.8)
            _clip_outliers(ax, g["value"].to_numpy(dtype=float))
            ax.set(xlabel="training compute (s)", ylabel="test NLL (nats)", title=f"{task} (D={dim})")
            ax.legend(title="method")
        return _save(fig, path)


def scatter_2d(target: np.ndarray | None, samples: dict[str, np.ndarray],
               bounds: tuple[tuple[float, float], tuple[float, float]] | None, colors: dict[str, tuple], title: str,
               path: Path) -> Path:
    """Scatter plots of each method's samples, beside the target's test data when given, on shared axes."""
    panels = ([("target (test data)", target)] if target is not None else []) + list(samples.items())
    if bounds is None:
        pts = np.concatenate([p for _, p in panels])
        lo, hi = np.percentile(pts, [0.5, 99.5], axis=0)
        pad = 0.05 * (hi - lo)
        bounds = ((lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1]))
    with sns.axes_style("white"), plt.rc_context(_STYLE):
        fig, axes = _subplots(len(panels), width=2.3, height=2.3, ncols=min(len(panels), 5))
        for ax, (name, pts) in zip(axes, panels):
            ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.4, color=colors.get(name, "k"), linewidths=0,
                       rasterized=True)
            ax.set(xlim=bounds[0], ylim=bounds[1], title=name, xticks=[], yticks=[], aspect="equal")
        fig.suptitle(title, fontsize=9)
        return _save(fig, path)


def _mosaic(x: np.ndarray, shape: tuple[int, int, int], k: int) -> np.ndarray:
    c, h, w = shape
    imgs = x[: k * k].reshape(-1, c, h, w).transpose(0, 2, 3, 1)
    if len(imgs) < k * k:
        imgs = np.concatenate([imgs, np.full((k * k - len(imgs), h, w, c), np.nan)])
    grid = imgs.reshape(k, k, h, w, c).transpose(0, 2, 1, 3, 4).reshape(k * h, k * w, c)
    return grid[..., 0] if c == 1 else grid


def image_grid(target: np.ndarray | None, samples: dict[str, np.ndarray], shape: tuple[int, int, int],
               title: str, path: Path, k: int = 5) -> Path:
    """A k x k mosaic of images per method (and of test images when given), grey or RGB, on the intensity
    range [0.5th, 99.5th percentile] of the target (of all samples when there is no target)."""
    panels = ([("target (test data)", target)] if target is not None else []) + list(samples.items())
    ref = target if target is not None else np.concatenate([s for s in samples.values()])
    lo, hi = np.percentile(ref, [0.5, 99.5])
    hi = hi if hi > lo else lo + 1.0
    with plt.rc_context(_STYLE):
        fig, axes = _subplots(len(panels), width=2.3, height=2.4, ncols=min(len(panels), 5))
        for ax, (name, x) in zip(axes, panels):
            img = np.clip((_mosaic(np.asarray(x, dtype=float), shape, k) - lo) / (hi - lo), 0, 1)
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
            ax.set(title=name, xticks=[], yticks=[])
        fig.suptitle(title, fontsize=9)
        return _save(fig, path)


def asv_history(asv: pd.DataFrame, path: Path, max_panels: int = 9) -> Path:
    """Each benchmark's value per commit (commits in date order), one line per (method, D, L) parameter set."""
    order = asv.sort_values("date").drop_duplicates("commit")["commit"].tolist()
    pos = {c: i for i, c in enumerate(order)}
    benches = list(asv.groupby("benchmark", sort=True))[:max_panels]
    with sns.axes_style("whitegrid"), plt.rc_context(_STYLE):
        fig, axes = _subplots(len(benches))
        for ax, (bench, g) in zip(axes, benches):
            g = g.assign(x=g["commit"].map(pos), params=_asv_params(g)).sort_values("x")
            sns.lineplot(data=g, x="x", y="value", hue="params", marker="o", errorbar=None, ax=ax,
                         legend=g["params"].nunique() <= 8)
            ticks = sorted(g["x"].unique())
            ax.set_xticks(ticks, [order[int(i)][:7] for i in ticks], rotation=45, ha="right")
            unit = g["unit"].iloc[0] if "unit" in g and len(g) else ""
            ax.set(xlabel="commit", ylabel=f"value ({unit})" if unit else "value", title=str(bench)[-40:])
        return _save(fig, path)


def _asv_params(g: pd.DataFrame) -> list[str]:
    out = []
    for _, r in g.iterrows():
        parts = [str(r[c]) if c == "method" else f"{'D' if c == 'dim' else 'L'}={r[c]}"
                 for c in ("method", "dim", "layers") if c in g and pd.notna(r[c]) and str(r[c]) != ""]
        out.append(" ".join(parts) or "-")
    return out
