"""The report's figures: seaborn/matplotlib figures drawn with the Agg backend (no display needed).

Each function draws one figure, writes it to ``path`` (a ``.png``) at ``DPI`` = 300 and the same figure as a
vector PDF beside it (``path.with_suffix(".pdf")``), and returns ``path``; the caller decides whether there is
enough data to draw (these functions assume there is) and gives the full title (task, D, L, steps).

Colours: one fixed colour, marker and line style per method in every figure of every report (:data:`PALETTE`,
:data:`MARKERS`, keyed by method name; a configuration label such as ``ebflow-dsm [lr=0.1]`` takes its method's,
:func:`color_of`). The colours are dark enough to read on white paper (WCAG contrast >= 3 against white, also for
small scatter points) and drawn from colour-blind-safe sets (Okabe-Ito, Paul Tol); as no palette keeps twenty
methods apart by colour alone, every line and point also carries its method's marker and line style. Methods
outside :data:`PALETTE` (plugins) get a colour and marker derived from a hash of their name, so they too never
change between reports. Every font is at least 8 pt. Image grids leave a white gap between images; a panel of a
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

def _hex(h: str) -> tuple[float, float, float]:
    return tuple(int(h[i:i + 2], 16) / 255 for i in (0, 2, 4))


#: the fixed colour of every method of the suite (plus the reference rows), stable across reports: dark,
#: colour-blind-safe hues (Okabe-Ito, Paul Tol) told apart further by :data:`MARKERS` and :data:`LINESTYLES`
PALETTE: dict[str, tuple[float, float, float]] = {m: _hex(h) for m, h in {
    "ebflow-ml": "0072B2", "ebflow-sml": "332288", "ebflow-ssm": "117733", "ebflow-dsm": "D55E00",
    "ebflow-fdssm": "AA3377", "energy-flow": "997700", "energy-flow-saef": "8C564B", "flowmc-ebm": "CC79A7",
    "ula-ebm": "009E73", "mle-lu": "882255", "nflows-maf": "1F6F8B", "nflows-realnvp": "7570B3",
    "nflows-lu": "A65628", "normflows-realnvp": "BB5566", "normflows-nsf": "6B8E23", "normflows-glow": "004488",
    "normflows-residual": "E7298A", "snf": "5D3A9B", "relative-gradient": "B8860B", "free-form-flow": "2F4F4F",
    "truth": "000000", "gaussian-fit": "555555", "target (test data)": "000000",
}.items()}
_MARKER_CYCLE = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p", "d", "H", "8")
#: the fixed marker of every method (the reference rows are drawn as lines, not points)
MARKERS: dict[str, str] = {m: _MARKER_CYCLE[i % len(_MARKER_CYCLE)] for i, m in enumerate(
    [m for m in PALETTE if m not in ("truth", "gaussian-fit", "target (test data)")])}
#: line styles, cycled with the markers so that no two methods share marker and line style
LINESTYLES = ("-", "--", "-.", ":")
_FALLBACK = [c for m, c in PALETTE.items() if m not in ("truth", "gaussian-fit", "target (test data)")]
#: the reference rows as horizontal lines: (colour, line style, legend text)
REFERENCE_LINES = {"truth": ((0.0, 0.0, 0.0), ":", "truth (noise floor)"),
                   "gaussian-fit": (_hex("555555"), "--", "gaussian-fit (reference)")}


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


def _name_hash(m: str) -> int:
    import hashlib

    return int(hashlib.sha1(m.encode()).hexdigest(), 16)


def marker_of(label: str) -> str:
    """The fixed marker of a method or configuration label (:data:`MARKERS`; plugins: from a hash of the name)."""
    m = label if label in MARKERS else method_of(label)
    return MARKERS.get(m) or _MARKER_CYCLE[_name_hash(m) % len(_MARKER_CYCLE)]


def linestyle_of(label: str) -> str:
    """The fixed line style of a method or configuration label."""
    m = label if label in MARKERS else method_of(label)
    names = list(MARKERS)
    i = names.index(m) // len(_MARKER_CYCLE) if m in MARKERS else _name_hash(m) // 7
    return LINESTYLES[i % len(LINESTYLES)]


def _plot_lines(ax, g: pd.DataFrame, x: str, y: str, hue: str, colors: dict, units: str | None = None,
                label_of=None) -> None:
    """One line per ``hue`` value (per ``units`` within it), in its method's colour, marker and line style; the
    legend gets one entry per hue value."""
    for name, h in g.groupby(hue, sort=True):
        style = dict(color=colors.get(name, color_of(name)), marker=marker_of(name), linestyle=linestyle_of(name),
                     markersize=4, linewidth=1.3)
        groups = list(h.groupby(units, sort=False)) if units else [(None, h)]
        for i, (_, u) in enumerate(groups):
            u = u.sort_values(x)
            ax.plot(u[x].to_numpy(float), u[y].to_numpy(float), label=(label_of(name) if label_of else name)
                    if i == 0 else "_nolegend_", **style)


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


def _fit_title(ax, text: str, **kw) -> None:
    """``text`` as the panel's title, wrapped to the panel's width (at most three lines; measured with the
    figure's renderer), so that no title runs off its panel."""
    fig = ax.figure
    width = ax.get_window_extent(fig.canvas.get_renderer()).width
    for whole_words in (True, False):  # break inside a word only where one word alone is too wide
        chars = max(12, len(str(text)))
        while True:
            lines = textwrap.wrap(str(text), chars, break_on_hyphens=False,
                                  break_long_words=not whole_words) or [""]
            ax.set_title("\n".join(lines[:3]) + ("..." if len(lines) > 3 else ""), **kw)
            if ax.title.get_window_extent(fig.canvas.get_renderer()).width <= width:
                return
            if chars <= 12:
                break
            chars = max(12, int(chars * 0.85))


def _figure_legend(fig, axes, title: str) -> None:
    """One legend for the whole figure, right of the panels (never over the data): every labelled line of every
    panel once, in order of appearance."""
    seen: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.tight_layout()
    if seen:
        fig.legend(list(seen.values()), list(seen), title=title, loc="upper left", bbox_to_anchor=(1.0, 0.97),
                   frameon=False)


def _subplots(n: int, *, width: float = 3.4, height: float = 2.8, ncols: int | None = None):
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, path: Path, tight: bool = False) -> Path:
    """Write ``fig`` as a 300-dpi PNG to ``path`` and as a PDF beside it; return ``path``. ``tight``: the figure
    has a legend outside its axes (the saved area grows to hold it; the layout is already done)."""
    kw = {"bbox_inches": "tight", "pad_inches": 0.05} if tight else {}
    if not tight:
        fig.tight_layout()
    fig.savefig(path, format="png", dpi=DPI, **kw)
    fig.savefig(Path(path).with_suffix(".pdf"), format="pdf", **kw)
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
            mean = g.groupby(["method", x], as_index=False)["value"].mean()
            _plot_lines(ax, mean, x, "value", "method", {m: colors.get(m, color_of(m)) for m in mean["method"]},
                        label_of=lambda m: labels.get((task, v, m), m))
            default = f"{task}: step time vs {'D' if x == 'dim' else 'L'}, {'L' if x == 'dim' else 'D'} = {int(v)}"
            ax.set(xscale="log", yscale="log", xlabel="D" if x == "dim" else "L", ylabel="step time (s)")
            _fit_title(ax, (titles or {}).get((task, v), default))
            _log_ticks(ax, "x", g[x])
            ax.legend(title="method (exponent, 95% CI)" if labels else "method")
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
            _plot_lines(ax, g, "compute_s", "value", "label", colors, units="cell_id")
            span = g["compute_s"].max() / max(g["compute_s"].min(), 1e-12)
            if g["compute_s"].min() > 0 and span > 100:
                ax.set_xscale("log")
            for c in points.loc[points["task"].eq(task) & points["dim"].eq(dim), "compute_s"].unique():
                ax.axvline(c, color="0.4", linestyle=":", linewidth=0.8)
            _clip_outliers(ax, g["value"].to_numpy(dtype=float))
            ax.set(xlabel="training compute (s)", ylabel="test NLL (nats per sample)")
            _fit_title(ax, (titles or {}).get((task, dim), f"{task}, D = {dim}: test NLL vs compute"))
        _figure_legend(fig, axes, "method")
        return _save(fig, path, tight=True)


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
                ax.scatter(pts[:, 0], pts[:, 1], s=2.5, alpha=0.6, color=colors.get(name, color_of(name)),
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
    """Each benchmark's value per commit (commits in date order) relative to its value at the first commit that
    measured it (1 = unchanged), one thin line per parameter set (method, task, D, L) in its method's
    colour and marker; one legend for the figure, by method (the parameter sets of a method share its colour)."""
    order = asv.sort_values("date").drop_duplicates("commit")["commit"].tolist()
    pos = {c: i for i, c in enumerate(order)}
    benches = list(asv.groupby("benchmark", sort=True))[:max_panels]
    methods: set[str] = set()
    with sns.axes_style("whitegrid"), plt.rc_context(_STYLE):
        fig, axes = _subplots(len(benches), width=3.6, height=3.0)
        for ax, (bench, g) in zip(axes, benches):
            g = g.assign(x=g["commit"].map(pos), params=_asv_params(g)).sort_values("x")
            for params, h in g.groupby("params", sort=True):
                h = h.groupby("x", as_index=False).agg(value=("value", "mean"),
                                                       method=("method", "first") if "method" in h else ("x", "size"))
                first = h["value"].iloc[0]
                if not first or not np.isfinite(first):
                    continue
                m = str(h["method"].iloc[0]) if "method" in g else "-"
                methods.add(m)
                ax.plot(h["x"], h["value"] / first, color=color_of(m), marker=marker_of(m), markersize=3,
                        linewidth=0.8, alpha=0.8)
            ticks = sorted(g["x"].unique())
            ax.set_xticks(ticks, [order[int(i)][:7] for i in ticks], rotation=45, ha="right")
            ax.axhline(1.0, color="0.3", linewidth=0.8, linestyle=":")
            ax.set(xlabel="commit", ylabel="value / value at first commit")
            parts = str(bench).split(".")  # "bench_step.TimeStepD.time_step" -> "time_step (TimeStepD)"
            _fit_title(ax, f"{parts[-1]} ({parts[-2]})" if len(parts) >= 2 else str(bench))
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=color_of(m), marker=marker_of(m), linewidth=1.2, label=m)
                   for m in sorted(methods)]
        fig.tight_layout()
        fig.legend(handles=handles, title="method (one line per task, D, L)", loc="upper left",
                   bbox_to_anchor=(1.0, 1.0), frameon=False)
        return _save(fig, path, tight=True)


def _asv_params(g: pd.DataFrame) -> list[str]:
    out = []
    for _, r in g.iterrows():
        parts = [str(r[c]) if c in ("method", "task") else f"{'D' if c == 'dim' else 'L'}={r[c]}"
                 for c in ("method", "task", "dim", "layers") if c in g and pd.notna(r[c]) and str(r[c]) != ""]
        out.append(" ".join(parts) or "-")
    return out


def glance(points: pd.DataFrame, panels: list[tuple[str, int]], titles: dict[tuple[str, int], str],
           ylabels: dict[tuple[str, int], str], suptitle: str, path: Path) -> Path:
    """Quality against training compute, one panel per (task, D) of ``panels``: each configuration's final value
    (``ranking.final_points``: mean with its 95% t-interval as an error bar) at its training compute, in its
    method's colour and marker, the configurations of one method joined in order of compute; the Pareto front
    of the ranked points as a black step line with the front's points ringed; the reference rows (``truth``,
    ``gaussian-fit``) as horizontal lines. Unranked configurations (degenerate, capped, failed, n/a) are not
    drawn. One legend for the figure, to the right of the panels."""
    from matplotlib.lines import Line2D

    methods: dict[str, None] = {}
    refs_seen: dict[str, None] = {}
    with sns.axes_style("whitegrid"), plt.rc_context(_STYLE):
        fig, axes = _subplots(len(panels), width=3.5, height=3.0, ncols=min(len(panels), 3))
        for ax, key in zip(axes, panels):
            task, dim = key
            g = points[points["task"].eq(task) & points["dim"].eq(dim)]
            ok = g[g["status"].eq("ok") & g["mean"].notna() & g["compute_s"].gt(0)]
            for method, h in ok.groupby("method", sort=True):
                h = h.sort_values("compute_s")
                methods[method] = None
                half = h["half"].to_numpy(float)
                ax.errorbar(h["compute_s"], h["mean"], yerr=np.where(np.isfinite(half), half, 0.0),
                            color=color_of(method), marker=marker_of(method), linestyle=linestyle_of(method),
                            markersize=5, linewidth=1.0, capsize=2, elinewidth=0.8)
            front = ok[ok["pareto"].astype(bool)].sort_values("compute_s")
            if len(front):
                ax.plot(front["compute_s"], front["mean"], drawstyle="steps-post", color="black", linewidth=1.0,
                        linestyle="--", zorder=1)
                ax.scatter(front["compute_s"], front["mean"], s=90, facecolors="none", edgecolors="black",
                           linewidths=1.0, zorder=3)
            for ref, (colour, style, _) in REFERENCE_LINES.items():
                r = g[g["method"].eq(ref) & g["mean"].notna()]
                if len(r):
                    refs_seen[ref] = None
                    ax.axhline(float(r["mean"].iloc[0]), color=colour, linestyle=style, linewidth=1.2, zorder=0)
            if len(ok) and ok["compute_s"].max() / ok["compute_s"].min() > 20:
                ax.set_xscale("log")
            vals = ok["mean"].to_numpy(float)
            if len(vals) and (vals > 0).all() and vals.max() / vals.min() > 100:
                ax.set_yscale("log")
            _fit_title(ax, titles.get(key, f"{task}, D = {dim}"))
            ax.set(xlabel="training compute (s)")
            ax.set_ylabel("\n".join(textwrap.wrap(ylabels.get(key, ""), 34)[:3]))
            if ok.empty:
                ax.text(0.5, 0.5, "no ranked configuration", ha="center", va="center", transform=ax.transAxes,
                        fontsize=MIN_FONT)
        handles = [Line2D([], [], color=color_of(m), marker=marker_of(m), linestyle=linestyle_of(m), label=m)
                   for m in methods]
        handles.append(Line2D([], [], color="black", linestyle="--", marker="o", markerfacecolor="none",
                              markersize=8, label="Pareto front"))
        handles += [Line2D([], [], color=REFERENCE_LINES[r][0], linestyle=REFERENCE_LINES[r][1],
                           label=REFERENCE_LINES[r][2]) for r in refs_seen]
        fig.suptitle(suptitle)
        fig.tight_layout()
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
        return _save(fig, path, tight=True)
