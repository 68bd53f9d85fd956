"""The report's figures: seaborn/matplotlib figures drawn with the Agg backend (no display needed).

Each function draws one figure, writes it to ``path`` (a ``.png``) at ``DPI`` = 300 and the same figure as a
vector PDF beside it (``path.with_suffix(".pdf")``), and returns ``path``; the caller decides whether there is
enough data to draw (these functions assume there is) and gives the full title (task, D, L, steps).

Colours: one fixed colour per method in every figure of every report (:data:`PALETTE`, keyed by method name;
a configuration label such as ``ebflow-dsm [lr=0.1]`` takes its method's colour, :func:`color_of`). Methods
outside :data:`PALETTE` (plugins) get a colour derived from a hash of their name, so it too never changes
between reports. Every font is at least 8 pt. Image grids leave a white gap between images; a panel of a
failed or degenerate cell says so in its title.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

DPI = 300
#: smallest font size (pt) of any text in a figure
MIN_FONT = 8
_STYLE = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
          "legend.fontsize": 8, "legend.title_fontsize": 8, "figure.titlesize": 10,
          "pdf.fonttype": 42}

_TAB20 = sns.color_palette("tab20", 20)
_DARK = sns.color_palette("dark", 10)
#: the fixed colour of every method of the suite (plus the reference rows), stable across reports; methods of
#: one family share a hue family where the palette allows
PALETTE: dict[str, tuple[float, float, float]] = {
    "ebflow-ml": _TAB20[0], "ebflow-sml": _TAB20[1], "ebflow-ssm": _TAB20[2], "ebflow-dsm": _TAB20[4],
    "ebflow-fdssm": _TAB20[5], "energy-flow": _TAB20[6], "energy-flow-saef": _TAB20[7],
    "flowmc-ebm": _TAB20[8], "ula-ebm": _TAB20[9], "mle-lu": _TAB20[10], "nflows-maf": _TAB20[12],
    "nflows-realnvp": _TAB20[13], "nflows-lu": _TAB20[11], "normflows-realnvp": _TAB20[16],
    "normflows-nsf": _TAB20[17], "normflows-glow": _TAB20[18], "normflows-residual": _TAB20[19],
    "truth": (0.0, 0.0, 0.0), "gaussian-fit": (0.45, 0.45, 0.45), "target (test data)": (0.0, 0.0, 0.0),
}
_FALLBACK = sns.color_palette("husl", 24)


def method_of(label: str) -> str:
    """The method of a configuration label (``ebflow-dsm [lr=0.1]`` -> ``ebflow-dsm``)."""
    return str(label).split(" [", 1)[0].split(" (", 1)[0].strip()


def color_of(label: str) -> tuple[float, float, float]:
    """The fixed colour of a method or configuration label (see :data:`PALETTE`)."""
    import hashlib

    m = label if label in PALETTE else method_of(label)
    if m in PALETTE:
        return tuple(PALETTE[m])
    h = int(hashlib.sha1(m.encode()).hexdigest(), 16)
    return tuple(_FALLBACK[h % len(_FALLBACK)])


def method_colors(names) -> dict[str, tuple[float, float, float]]:
    """``{name: colour}`` for methods or configuration labels, each its method's fixed colour (:func:`color_of`):
    the same method has the same colour in every figure and every report."""
    return {n: color_of(n) for n in sorted(set(names))}


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
        ax.annotate("y clipped above", xy=(0.02, 0.98), xycoords="axes fraction", ha="left", va="top", fontsize=MIN_FONT)


def _subplots(n: int, *, width: float = 3.4, height: float = 2.8, ncols: int | None = None):
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, path: Path) -> Path:
    """Write ``fig`` as a 300-dpi PNG to ``path`` and as a PDF beside it; return ``path``."""
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=DPI)
    fig.savefig(Path(path).with_suffix(".pdf"), format="pdf")
    plt.close(fig)
    return path


def scaling(panels: list[tuple[str, float, pd.DataFrame]], x: str, labels: dict[tuple[str, float, str], str],
            colors: dict[str, tuple], path: Path, titles: dict[tuple[str, float], str] | None = None) -> Path:
    """Mean step time against ``x`` ("dim" or "layers") on log-log axes, one line per method, one panel per
    (task, fixed value of the other variable). ``labels[(task, fixed, method)]`` is the legend text,
    ``titles[(task, fixed)]`` the panel's full title (default: task, the fixed variable)."""
    with sns.axes_style("whitegrid"), plt.rc_context(_STYLE):
        fig, axes = _subplots(len(panels), width=4.4, height=3.4)
        for ax, (task, v, g) in zip(axes, panels):
            g = g.assign(label=[labels.get((task, v, m), m) for m in g["method"]]).sort_values("method")
            palette = {labels.get((task, v, m), m): colors.get(m, color_of(m)) for m in g["method"].unique()}
            sns.lineplot(data=g, x=x, y="value", hue="label", palette=palette, marker="o", errorbar=None, ax=ax)
            default = f"{task}: step time vs {'D' if x == 'dim' else 'L'}, {'L' if x == 'dim' else 'D'} = {int(v)}"
            ax.set(xscale="log", yscale="log", xlabel="D" if x == "dim" else "L", ylabel="step time (s)",
                   title=(titles or {}).get((task, v), default))
            _log_ticks(ax, "x", g[x])
            ax.legend(title="method (exponent, 95% CI)")
        return _save(fig, path)


def equal_compute(curves: pd.DataFrame, points: pd.DataFrame, colors: dict[str, tuple], path: Path,
                  titles: dict[tuple[str, int], str] | None = None) -> Path:
    """Checkpoint test NLL against training compute seconds, one line per cell (colour: the configuration's
    method), one panel per (task, D); dotted vertical lines at the equal-compute points of ``points`` (the long
    table of ``tables.equal_compute``). ``titles[(task, dim)]`` is a panel's full title."""
    panels = list(curves.groupby(["task", "dim"], sort=True))
    with sns.axes_style("whitegrid"), plt.rc_context(_STYLE):
        fig, axes = _subplots(len(panels), width=4.4, height=3.4)
        for ax, ((task, dim), g) in zip(axes, panels):
            g = g.sort_values(["label", "cell_id", "compute_s"])
            palette = {lab: colors.get(lab, color_of(lab)) for lab in g["label"].unique()}
            sns.lineplot(data=g, x="compute_s", y="value", hue="label", palette=palette, units="cell_id",
                         estimator=None, marker="o", ax=ax)
            span = g["compute_s"].max() / max(g["compute_s"].min(), 1e-12)
            if g["compute_s"].min() > 0 and span > 100:
                ax.set_xscale("log")
            for c in points.loc[points["task"].eq(task) & points["dim"].eq(dim), "compute_s"].unique():
                ax.axvline(c, color="0.4", linestyle=":", linewidth=0.8)
            _clip_outliers(ax, g["value"].to_numpy(dtype=float))
            ax.set(xlabel="training compute (s)", ylabel="test NLL (nats)",
                   title=(titles or {}).get((task, dim), f"{task}, D = {dim}: test NLL vs compute"))
            ax.legend(title="method")
        return _save(fig, path)


def _panel_title(ax, name: str, note: str | None) -> None:
    """A panel's title; a failed or degenerate cell's note on a second line, in red."""
    if note:
        ax.set_title(f"{name}\n{note}", color="#b00000")
    else:
        ax.set_title(name)


def _missing_panel(ax, note: str) -> None:
    ax.set(xticks=[], yticks=[])
    ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes, fontsize=MIN_FONT)


def scatter_2d(target: np.ndarray | None, samples: dict[str, np.ndarray | None],
               bounds: tuple[tuple[float, float], tuple[float, float]] | None, colors: dict[str, tuple], title: str,
               path: Path, notes: dict[str, str] | None = None) -> Path:
    """Scatter plots of each method's samples, beside the target's test data when given, on shared axes.
    ``notes[name]`` (e.g. "degenerate: <reason>", "failed") is written under that panel's title; a sample set
    that is ``None`` (a failed cell without samples) gives an empty panel saying so."""
    notes = notes or {}
    panels = ([("target (test data)", target)] if target is not None else []) + list(samples.items())
    if bounds is None:
        pts = np.concatenate([p for _, p in panels if p is not None])
        pts = pts[np.isfinite(pts).all(axis=1)] if np.isfinite(pts).any() else np.zeros((1, 2))
        lo, hi = np.percentile(pts, [0.5, 99.5], axis=0)
        pad = 0.05 * np.maximum(hi - lo, 1e-6)
        bounds = ((lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1]))
    with sns.axes_style("white"), plt.rc_context(_STYLE):
        fig, axes = _subplots(len(panels), width=2.6, height=2.8, ncols=min(len(panels), 5))
        for ax, (name, pts) in zip(axes, panels):
            if pts is None:
                _missing_panel(ax, notes.get(name, "failed"))
            else:
                ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.4, color=colors.get(name, color_of(name)),
                           linewidths=0, rasterized=True)
                ax.set(xlim=bounds[0], ylim=bounds[1], xticks=[], yticks=[], aspect="equal")
            _panel_title(ax, name, notes.get(name))
        fig.suptitle(title)
        return _save(fig, path)


#: pixels of white gap between the images of a grid (and around it)
GRID_GAP = 2


def _mosaic(x: np.ndarray, shape: tuple[int, int, int], k: int, gap: int = GRID_GAP) -> np.ndarray:
    """A k x k grid of images (values already in [0, 1]) with ``gap`` white pixels between and around them;
    missing images are white."""
    c, h, w = shape
    imgs = x[: k * k].reshape(-1, c, h, w).transpose(0, 2, 3, 1)
    grid = np.ones((k * h + (k + 1) * gap, k * w + (k + 1) * gap, c))
    for i, im in enumerate(imgs):
        r, q = divmod(i, k)
        y0, x0 = gap + r * (h + gap), gap + q * (w + gap)
        grid[y0:y0 + h, x0:x0 + w] = im
    return grid[..., 0] if c == 1 else grid


def image_grid(target: np.ndarray | None, samples: dict[str, np.ndarray | None], shape: tuple[int, int, int],
               title: str, path: Path, k: int = 5, notes: dict[str, str] | None = None) -> Path:
    """A k x k grid of images per method (and of test images when given), grey or RGB, with a white gap
    between images, on the intensity range [0.5th, 99.5th percentile] of the target (of all samples when there
    is no target). ``notes[name]`` is written under that panel's title (a failed or degenerate cell); a sample
    set that is ``None`` gives an empty panel. Non-finite pixels are drawn white."""
    notes = notes or {}
    panels = ([("target (test data)", target)] if target is not None else []) + list(samples.items())
    ref = target if target is not None else np.concatenate([s for s in samples.values() if s is not None])
    ref = np.asarray(ref, dtype=float)
    ref = ref[np.isfinite(ref)] if np.isfinite(ref).any() else np.zeros(1)
    lo, hi = np.percentile(ref, [0.5, 99.5])
    hi = hi if hi > lo else lo + 1.0
    with plt.rc_context(_STYLE):
        fig, axes = _subplots(len(panels), width=2.6, height=2.9, ncols=min(len(panels), 5))
        for ax, (name, x) in zip(axes, panels):
            if x is None:
                _missing_panel(ax, notes.get(name, "failed"))
            else:
                v = np.clip((np.asarray(x, dtype=float) - lo) / (hi - lo), 0, 1)
                img = _mosaic(np.where(np.isfinite(v), v, 1.0), shape, k)
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
                ax.set(xticks=[], yticks=[])
            _panel_title(ax, name, notes.get(name))
        fig.suptitle(title)
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
            ax.set(xlabel="commit", ylabel=f"value ({unit})" if unit else "value",
                   title="\n".join(textwrap.wrap(str(bench), 48)[:3]))
        return _save(fig, path)


def _asv_params(g: pd.DataFrame) -> list[str]:
    out = []
    for _, r in g.iterrows():
        parts = [str(r[c]) if c in ("method", "task") else f"{'D' if c == 'dim' else 'L'}={r[c]}"
                 for c in ("method", "task", "dim", "layers") if c in g and pd.notna(r[c]) and str(r[c]) != ""]
        out.append(" ".join(parts) or "-")
    return out
