"""The comparison report, built from a small run directory written here in the tidy-table schema."""

from __future__ import annotations

import importlib
import json
import math
import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ebflow_bench import published
from ebflow_bench.report import build_report, quality_stats, quality_table, speedup_table, tables

T = importlib.import_module("ebflow_bench.report.tables")  # the module (``report.tables`` is also a function)
from ebflow_bench.results import COLUMNS  # noqa: E402
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAIL_REASON = "diverged at step 7: loss is nan"
PARTIAL_REASON = "training: RuntimeError: singular matrix"
MMD_REASON = "ValueError: median pairwise distance is 0"
# step time c * D^a * L: the exponent in D is a (3 for ML, 2 for DSM), in L it is 1
STEP_LAW = {"ebflow-ml": (1e-6, 3.0), "ebflow-dsm": (4e-6, 2.0)}
NLL = {("checkerboard", "ebflow-ml"): (3.0, 3.4), ("checkerboard", "ebflow-dsm"): (3.5, 3.7),
       ("checkerboard", "flowmc-ebm"): None, ("mixture-4modes", "flowmc-ebm"): None,
       ("mixture-4modes", "ebflow-ml"): (1.0, 1.2), ("digits", "ebflow-ml"): (90.0, 92.0),
       ("digits", "ebflow-dsm"): (95.0, 97.0)}


class _Rows:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.n = 0

    def cell(self, method: str, task: str, dim: int, layers: int, seed: int, metrics: list[tuple],
             failed: str | None = None, hparams: dict | None = None, status: str | None = None,
             steps: int = 50) -> str:
        self.n += 1
        cid = f"c{self.n:04d}"
        base = dict(run_id="fixture-run", cell_id=cid, config_key=f"k-{method}-{task}-{dim}-{layers}",
                    method=method, family=method.split("-")[0], objective=method.split("-")[-1], task=task, dim=dim,
                    layers=layers, hparams=json.dumps(hparams or {"lr": 0.001}), data_seed=seed, train_seed=seed,
                    budget=50, steps_done=steps, threads=1, step=math.nan, compute_s=0.5, wall_s=0.6, n_params=100,
                    device="cpu", versions=json.dumps({"torch": "2.13.0"}), commit="abc1234",
                    timestamp="2024-01-01T00:00:00", cell_status=status or ("failed" if failed else "ok"),
                    cell_reason=failed or "")
        if hparams:
            base["config_key"] += json.dumps(hparams, sort_keys=True)
        for m in metrics:  # (metric, value, unit, status[, reason[, step, compute_s]])
            metric, value, unit, status_, reason, step, compute = (*m, *("", math.nan, math.nan)[len(m) - 4:])
            self.rows.append({**base, "metric": metric, "value": value, "unit": unit, "status": status_,
                              "reason": reason, "step": step,
                              **({"compute_s": compute, "wall_s": 1.2 * compute} if step == step else {})})
        if failed:
            self.rows.append({**base, "metric": "test_nll", "value": math.nan, "unit": "nats", "status": "failed",
                              "reason": failed})
        return cid


def _quality_rows(task: str, method: str, seed: int) -> list[tuple]:
    nll = NLL.get((task, method))
    rows: list[tuple] = []
    if nll is None:
        rows.append(("test_nll", math.nan, "nats", "unavailable", "EBM without log Z"))
    else:
        rows.append(("test_nll", nll[seed], "nats", "ok"))
        rows += [("nll_at_time", nll[seed] + 2.0 / k, "nats", "ok", "", k * 10, 0.1 * k) for k in (1, 2, 3)]
    if task == "digits" and nll is not None:
        rows.append(("test_bpd", nll[seed] / (64 * math.log(2)) + 4, "bits/dim", "ok"))
    mmd = (("mmd", math.nan, "MMD^2", "failed", MMD_REASON) if (task, method) == ("mixture-4modes", "ebflow-ml")
           else ("mmd", 0.02 + 0.001 * seed, "MMD^2", "ok"))  # one metric failed in finished cells
    rows += [("sliced_wasserstein", 0.1 + 0.01 * seed, "data units", "ok"), mmd,
             ("energy_distance", 0.05, "data units", "ok")]
    if task in ("checkerboard", "mixture-4modes"):
        rows += [("grid_kl", 0.3 + 0.1 * seed, "nats", "ok"), ("grid_tv", 0.2, "probability", "ok")]
    if task == "mixture-4modes":
        rows.append(("mode_weight_error", 1e-3 * (1 + seed), "MSE", "ok"))
    rows += [("step_time", 0.01, "s", "ok"), ("train_time", 0.5, "s", "ok"), ("peak_memory", 100.0, "MiB", "ok")]
    return rows


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("run")
    (d / "samples").mkdir()
    rows = _Rows()
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        for task, dim, methods in (("checkerboard", 2, ["ebflow-ml", "ebflow-dsm", "flowmc-ebm"]),
                                   ("mixture-4modes", 2, ["ebflow-ml", "flowmc-ebm"]),
                                   ("digits", 64, ["ebflow-ml", "ebflow-dsm"])):
            for m in methods:
                partial = task == "digits" and m == "ebflow-dsm" and seed == 1
                q = [("step_time", 0.01, "s", "ok")] if partial else _quality_rows(task, m, seed)
                cid = rows.cell(m, task, dim, 2, seed, q, failed=PARTIAL_REASON if partial else None)
                if not partial:
                    x = rng.normal(size=(200, dim)).astype(np.float32)
                    np.save(d / "samples" / f"{cid}.npy", rng.uniform(size=(200, dim)).astype(np.float32)
                            if task == "digits" else x)
        # a method whose every cell failed
        rows.cell("energy-flow", "checkerboard", 2, 2, seed, [("step_time", 0.02, "s", "ok")], failed=FAIL_REASON)
        # scaling: gaussian at several D and L
        for m, (c, a) in STEP_LAW.items():
            for dim in (8, 16, 32, 64, 128):  # five values each: a fit needs five (tables.scaling_fits)
                for layers in (1, 2, 3, 4, 8):
                    t = c * dim**a * layers * (1 + 0.01 * seed)
                    rows.cell(m, "gaussian", dim, layers, seed,
                              [("step_time", t, "s", "ok"), ("test_nll", float(dim), "nats", "ok")])
    df = pd.DataFrame(rows.rows, columns=COLUMNS)
    df.to_parquet(d / "results.parquet", index=False)
    df.to_csv(d / "results.csv", index=False)
    (d / "meta.json").write_text(json.dumps({
        "run_id": "fixture-run", "commit": "abc1234", "device": "cpu", "versions": {"torch": "2.13.0"},
        "started": "2024-01-01T00:00:00", "finished": "2024-01-01T00:10:00",
        "sessions": [{"command": ["ebflow-bench", "run", "--preset", "smoke", "--out", str(d)]}],
        "command": f"ebflow-bench run --preset smoke --out {d}"}))
    return d


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory) -> Path:
    asv = pd.DataFrame({"benchmark": ["steptime.TimeStep.time_step"] * 4,
                        "commit": ["aaaaaaa1", "bbbbbbb2"] * 2, "machine": "ref",
                        "date": [1, 2, 1, 2], "method": ["ebflow-ml"] * 2 + ["ebflow-dsm"] * 2, "dim": 64,
                        "layers": 2, "metric": "step_time", "value": [0.3, 0.25, 0.05, 0.04], "unit": "s"})
    out = tmp_path_factory.mktemp("report")
    return build_report([run_dir], out, asv_results=asv, command="ebflow-bench report RUN --out OUT")


def test_report_files_and_pngs(report):
    out = report.parent
    assert report.name == "report.md" and (out / "report.html").is_file()
    pngs = sorted((out / "figures").glob("*.png"))
    names = {p.name for p in pngs}
    assert {"scaling_D.png", "scaling_L.png", "equal_compute.png", "samples_checkerboard.png",
            "samples_mixture-4modes.png", "samples_digits.png", "asv_history.png"} <= names
    md = report.read_text()
    for p in pngs:
        assert p.read_bytes()[:8] == PNG_MAGIC
        with Image.open(p) as im:
            im.verify()
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
        assert f"figures/{p.name}" in md  # every figure is linked from the Markdown


def test_header_has_provenance(report):
    md = report.read_text()
    assert "abc1234" in md and "torch 2.13.0" in md and "ebflow-bench run --preset smoke" in md
    assert "ebflow-bench report RUN --out OUT" in md and "2024-01-01T00:10:00" in md


def test_quality_table_has_every_method_and_metric(run_dir):
    df = tables(run_dir)["quality"]
    raw = pd.read_parquet(run_dir / "results.parquet")
    assert set(df["method"]) == set(raw["method"])
    quality = {"test_nll", "test_bpd", "sliced_wasserstein", "mmd", "energy_distance", "grid_kl", "grid_tv",
               "mode_weight_error"}
    assert quality <= set(df.columns)
    assert set(raw["metric"]) & quality == quality


def test_quality_entries_are_mean_and_std_over_seeds(run_dir):
    df = pd.read_parquet(run_dir / "results.parquet")
    st = quality_stats(df).set_index(["task", "method", "metric"])
    r = st.loc[("checkerboard", "ebflow-ml", "test_nll")]
    assert r["status"] == "ok" and r["n_ok"] == 2
    assert r["mean"] == pytest.approx(3.2) and r["std"] == pytest.approx(np.std([3.0, 3.4], ddof=1))
    q = quality_table(df).set_index(["task", "method"])
    assert q.loc[("checkerboard", "ebflow-ml"), "test_nll"] == "3.2 ± 2.5"  # 95% t-interval, n = 2
    # metrics that do not apply to the task are "n/a", never numbers
    assert q.loc[("digits", "ebflow-ml"), "grid_kl"] == "n/a"
    assert q.loc[("checkerboard", "ebflow-ml"), "test_bpd"] == "n/a"


def test_failed_cells_are_reported_as_failed(run_dir, report):
    df = pd.read_parquet(run_dir / "results.parquet")
    q = quality_table(df).set_index(["task", "method"])
    row = q.loc[("checkerboard", "energy-flow")]
    assert set(row[["test_nll", "sliced_wasserstein", "mmd", "grid_kl"]]) == {"failed"}
    # one of two seeds failed: the ok seed's value, flagged
    assert q.loc[("digits", "ebflow-dsm"), "test_nll"] == "95 (1/2 failed)"
    # unavailable, not failed: the EBM's NLL
    assert q.loc[("checkerboard", "flowmc-ebm"), "test_nll"] == "n/a"
    md = report.read_text()
    line = next(l for l in _section(md, "Quality per task").splitlines() if l.startswith("| energy-flow |"))
    cells = [c.strip() for c in line.strip("|").split("|")[1:]]
    assert cells and all(c == "failed" for c in cells), line
    # a metric that failed in finished cells: "failed" in its column only, the reason under the table, and the
    # cells are not failed cells
    mix = q.loc[("mixture-4modes", "ebflow-ml")]
    assert mix["mmd"] == "failed" and mix["test_nll"] == "1.1 ± 1.3" and mix["grid_kl"] != "failed"
    assert f"ebflow-ml: mmd: {MMD_REASON}" in md
    failures = md[md.index("## Failures"):]
    assert FAIL_REASON in failures and PARTIAL_REASON in failures and MMD_REASON not in failures
    assert failures.count("| energy-flow |") == 2 and "3 of" in failures
    assert "EBM without log Z" in md  # the n/a reason is listed under the table


def test_best_entry_is_bold(report):
    md = report.read_text()
    section = md[md.index("### checkerboard"):md.index("### digits")]
    assert "**3.2 ± 2.5**" in section and "**3.6" not in section  # lower NLL is better


def _section(md: str, title: str) -> str:
    """The text of the report's ``## title...`` section, up to the next ``## `` heading."""
    i = md.index(f"\n## {title}")
    j = md.find("\n## ", i + 1)
    return md[i:] if j < 0 else md[i:j]


def _md_table(md: str, first_header: str) -> list[list[str]]:
    """The rows of the first Markdown table whose header starts with ``| first_header |``."""
    lines = md.splitlines()
    i = next(k for k, l in enumerate(lines) if l.startswith(f"| {first_header} |"))
    rows = []
    for l in lines[i + 2:]:
        if not l.startswith("|"):
            break
        rows.append([c.strip() for c in l.strip().strip("|").split("|")])
    return rows


def test_scaling_exponents_and_speedup(run_dir, report):
    md = report.read_text()
    sec = _section(md, "Scaling")
    d_fit = {(r[1], r[2]): (float(r[3]), r[4]) for r in _md_table(sec, "task") if r[0] == "gaussian"}
    # D-fits at every fixed L: ML 3, DSM 2 (exactly: the seeds only rescale by a constant)
    for layers in ("1", "2", "3", "4", "8"):
        assert d_fit[(layers, "ebflow-ml")][0] == pytest.approx(3.0, abs=0.01)
        assert d_fit[(layers, "ebflow-dsm")][0] == pytest.approx(2.0, abs=0.01)
    l_sec = sec[sec.index("| task | fixed D |"):]
    l_fit = {(r[1], r[2]): float(r[3]) for r in _md_table(l_sec, "task")}
    assert set(l_fit) == {(d, m) for d in ("8", "16", "32", "64", "128") for m in STEP_LAW}
    assert all(v == pytest.approx(1.0, abs=0.01) for v in l_fit.values())
    sp = speedup_table(pd.read_parquet(run_dir / "results.parquet")).set_index(["task", "layers", "method"])
    # speedup of DSM over ML = (1e-6 D^3) / (4e-6 D^2) = D / 4
    assert sp.loc[("gaussian", 2, "ebflow-dsm"), "D=64"] == pytest.approx(16.0)
    assert sp.loc[("gaussian", 1, "ebflow-ml"), "D=8"] == pytest.approx(1.0)
    # energy-flow's every cell failed after one (warm-up) step: it never enters a speed-up
    assert ("checkerboard", 2, "energy-flow") not in sp.index
    assert sp.loc[("checkerboard", 2, "ebflow-dsm"), "D=2"] == pytest.approx(1.0)


def test_failed_or_degenerate_cells_do_not_enter_speedups(run_dir):
    df = pd.read_parquet(run_dir / "results.parquet")
    ok = df[df["task"].eq("gaussian")]
    assert T.speedup_table(ok).set_index(["layers", "method"]).loc[(2, "ebflow-dsm"), "D=64"] == pytest.approx(16)
    # the DSM cells at D=64, L=2 become degenerate (e.g. a finite divergence): that speed-up has no value left
    hit = ok["method"].eq("ebflow-dsm") & ok["dim"].eq(64) & ok["layers"].eq(2)
    bad = ok.assign(cell_status=ok["cell_status"].where(~hit, "degenerate"))
    assert T.bad_cells(bad) == set(zip(ok.loc[hit, "run_id"], ok.loc[hit, "cell_id"]))
    sp = T.speedup_table(bad).set_index(["layers", "method"])
    assert math.isnan(sp.loc[(2, "ebflow-dsm"), "D=64"]) and sp.loc[(2, "ebflow-dsm"), "D=32"] == pytest.approx(8)
    # rows without cell ids (asv) are all kept
    assert T.bad_cells(ok.drop(columns=["run_id", "cell_id"])) == set()


def test_scaling_fits_with_fewer_than_five_points_are_insufficient():
    rows = [{"task": "g", "method": m, "layers": 2.0, "dim": float(d), "value": c * d**a}
            for m, c, a, dims in (("ml", 1e-6, 3.0, (8, 16, 32, 64, 128)), ("dsm", 4e-6, 2.0, (8, 16, 32)))
            for d in dims]
    fits = T.scaling_fits(T.scaling_panels(pd.DataFrame(rows), "dim"), "dim").set_index("method")
    assert fits.loc["ml", "status"] == "ok" and fits.loc["ml", "slope"] == pytest.approx(3.0)
    assert fits.loc["ml", "n_x"] == 5  # an exact power law: a zero-width interval
    assert fits.loc["ml", "ci_low"] == pytest.approx(3.0) == fits.loc["ml", "ci_high"]
    assert fits.loc["dsm", "status"] == "insufficient" and "3 distinct dim values < 5" in fits.loc["dsm", "reason"]
    assert math.isnan(fits.loc["dsm", "slope"]) and math.isnan(fits.loc["dsm", "ci_low"])


def test_published_tables_beside_ours(report):
    md = report.read_text()
    assert "flowMC-EBM Table 3" in md and "arXiv 2306.00684" in md
    line = next(l for l in md.splitlines() if l.startswith("| flowMC-EBM (ours: `flowmc-ebm`)"))
    assert "5.19e-05" not in line and "0.000519" in line and "0.0015 ± 0.0064" in line
    # no MNIST task in this run: no MNIST table, only its mention among the tables not shown
    assert "### EBFlow on MNIST" not in md
    assert "Not shown, as no run here has their task: EBFlow on MNIST" in md and "(task `mnist5k`)" in md


def test_published_data_is_consistent():
    assert published.EBFLOW_MNIST in published.tables_for({"mnist5k"})
    assert published.tables_for({"sine"}) == []
    assert published.EBFLOW_MNIST.rows["SSM"][0] == (1092.8, 0.3)
    assert published.FLOWMC_TABLE2.rows["flowMC-EBM"][2] == (1.05, None)
    for t in published.TABLES:
        assert t.source and t.differences and set(t.method_map) <= set(t.rows)
    with pytest.raises(ValueError, match="row 'x'"):
        published.PublishedTable("k", "t", "s", "m", ("a",), ("c1", "c2"), {"x": ((1.0, None),)})


def test_asv_history_per_commit(report):
    md = report.read_text()
    sec = _section(md, "asv: step-time scaling and history")
    assert "aaaaaaa" in sec and "bbbbbbb" in sec and "| 0.3 | 0.25 |" in sec


def test_html_is_self_contained(report):
    html = (report.parent / "report.html").read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", html)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert len(refs) == len(list((report.parent / "figures").glob("*.png")))
    assert "<link" not in html and "<script" not in html and "<strong>3.2 ± 2.5</strong>" in html


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        build_report([tmp_path / "nope"], tmp_path / "out")
    with pytest.raises(ValueError, match="no run directories"):
        build_report([], tmp_path / "out")


def test_unreliable_values_are_not_results(run_dir):
    df = pd.read_parquet(run_dir / "results.parquet")
    hit = df["task"].eq("checkerboard") & df["method"].eq("ebflow-ml") & df["metric"].eq("test_nll")
    why = "log Z importance sampling ESS 12.0 of 4096 draws"
    df = df.assign(status=df["status"].where(~hit, "unreliable"), reason=df["reason"].where(~hit, why))
    st = quality_stats(df).set_index(["task", "method", "metric"]).loc[("checkerboard", "ebflow-ml", "test_nll")]
    assert st["status"] == "n/a" and st["reason"] == f"unreliable: {why}" and math.isnan(st["mean"])
# ------------------------------------------------------------------ configurations, duplicates, equal compute

PLUGIN = str(Path(__file__).with_name("test_runner.py").resolve())  # registers test-diag and test-gauss


def _two_lr_matrix(tmp_path: Path, seeds: str = "[0, 1]") -> Path:
    p = tmp_path / "two.toml"
    p.write_text(f'name = "two"\nimports = [{json.dumps(PLUGIN)}]\ntasks = ["test-gauss"]\ndims = [2]\n'
                 f'layers = [1]\nseeds = {seeds}\nbudgets = [40]\nmethods = ["test-diag"]\n'
                 '[hparams.test-diag]\nlr = 0.05\n'
                 '[[block]]\n[block.hparams.test-diag]\nlr = 0.2\n'
                 '[eval]\nn_samples = 200\ncheckpoints = 2\n')
    return p


def test_blocks_differing_in_one_hparam_are_two_configurations_and_two_rows(tmp_path):
    from ebflow_bench.matrix import load_matrix
    from ebflow_bench.runner import run_matrix

    df = run_matrix(load_matrix(_two_lr_matrix(tmp_path)), tmp_path / "run", progress=False)
    assert df["config_key"].nunique() == 2 and df["cell_id"].nunique() == 4
    assert sorted(json.loads(h)["lr"] for h in df.drop_duplicates("config_key")["hparams"]) == [0.05, 0.2]
    q = tables(tmp_path / "run")["quality"]
    assert sorted(q["label"]) == ["test-diag [lr=0.05]", "test-diag [lr=0.2]"] and len(q) == 2
    stats = quality_stats(df)
    assert set(stats.loc[stats["metric"].eq("test_nll"), "n_cells"]) == {2}  # seeds averaged, configs not
    md = build_report([tmp_path / "run"], tmp_path / "out").read_text()
    assert "| test-diag [lr=0.05] |" in md and "| test-diag [lr=0.2] |" in md
    assert "L = 1, 40 steps" in md  # the steps actually done


def test_overlapping_run_folders_count_each_cell_once(tmp_path):
    from ebflow_bench.matrix import load_matrix
    from ebflow_bench.results import DuplicateCells, load_results
    from ebflow_bench.runner import run_matrix

    run_matrix(load_matrix(_two_lr_matrix(tmp_path, "[0]")), tmp_path / "a", progress=False)
    run_matrix(load_matrix(_two_lr_matrix(tmp_path, "[0, 1]")), tmp_path / "b", progress=False)
    with pytest.warns(DuplicateCells, match="counted once"):
        both = load_results([tmp_path / "a", tmp_path / "b"], dedupe=True)
    assert both["cell_id"].nunique() == 4 and len(both) == len(load_results(tmp_path / "b"))
    with pytest.warns(DuplicateCells):
        stats = tables([tmp_path / "a", tmp_path / "b"])["quality_stats"]
    assert set(stats.loc[stats["metric"].eq("test_nll"), "n_cells"]) == {2}
    with pytest.warns(DuplicateCells):
        md = build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out").read_text()
    assert "Duplicate cells:" in md and "repeats 2 cell(s)" in md


def test_capped_and_degenerate_cells_are_marked_and_never_ranked(tmp_path):
    rows = _Rows()
    for seed in (0, 1):
        rows.cell("ebflow-ml", "checkerboard", 2, 2, seed, [("test_nll", 3.0, "nats", "ok")])
        rows.cell("ebflow-dsm", "checkerboard", 2, 2, seed, [("test_nll", 2.0, "nats", "ok")], status="capped",
                  steps=17)
    rows.cell("ebflow-ssm", "checkerboard", 2, 2, 0, [("test_nll", 1.0, "nats", "ok")], status="degenerate")
    df = pd.DataFrame(rows.rows, columns=COLUMNS)
    q = quality_table(df, mark_best=True).set_index("method")
    assert q.loc["ebflow-ml", "test_nll"] == "**3 ± 0**"  # the only complete configuration is the best
    assert q.loc["ebflow-dsm", "test_nll"] == "2 ± 0 (capped)" and q.loc["ebflow-dsm", "steps"] == "17"
    assert q.loc["ebflow-ssm", "test_nll"] == "1 (degenerate)"
    from ebflow_bench.report.tables import flagged

    t = flagged(df)
    assert sorted(t["status"]) == ["capped", "capped", "degenerate"] and set(t["steps_done"]) == {17, 50}


def test_equal_compute_interpolates_inside_each_range_only():
    from ebflow_bench.report.tables import equal_compute

    rows = _Rows()
    # NLL falls linearly in compute: a from 10 to 4 over [1, 4] s, b from 8 to 6 over [2, 8] s (two seeds)
    for seed in (0, 1):
        rows.cell("ebflow-ml", "checkerboard", 2, 2, seed,
                  [("nll_at_time", 10 - 2 * (c - 1), "nats", "ok", "", k, c) for k, c in enumerate((1, 2, 3, 4))])
        rows.cell("ebflow-dsm", "checkerboard", 2, 2, seed,
                  [("nll_at_time", 8 - (c - 2) / 3 + seed, "nats", "ok", "", k, c) for k, c in
                   enumerate((2, 5, 8))])
    eq = equal_compute(pd.DataFrame(rows.rows, columns=COLUMNS))
    points = sorted(eq["compute_s"].unique())
    assert points[0] == 2.0 and points[-1] == 4.0  # inside the overlap [2, 4] of the two curves
    at = eq.set_index(["method", "compute_s"])["nll"]
    for c in points:
        assert at[("ebflow-ml", c)] == pytest.approx(10 - 2 * (c - 1))
        assert at[("ebflow-dsm", c)] == pytest.approx(8 - (c - 2) / 3 + 0.5)  # mean over the two seeds
    rows2 = _Rows()  # disjoint ranges: points over the union, blank before each curve, final value after it
    rows2.cell("ebflow-ml", "checkerboard", 2, 2, 0,
               [("nll_at_time", 5.0 - c, "nats", "ok", "", k, c) for k, c in enumerate((1.0, 2.0))])
    rows2.cell("ebflow-dsm", "checkerboard", 2, 2, 0,
               [("nll_at_time", 9.0 - c, "nats", "ok", "", k, c) for k, c in enumerate((10.0, 20.0))])
    eq2 = equal_compute(pd.DataFrame(rows2.rows, columns=COLUMNS)).set_index(["method", "compute_s"])
    eq, done = eq2["nll"], eq2["finished"]
    assert eq[("ebflow-ml", 1.0)] == pytest.approx(4.0) and not done[("ebflow-ml", 1.0)]
    assert eq[("ebflow-ml", 20.0)] == pytest.approx(3.0) and done[("ebflow-ml", 20.0)]  # finished at 2 s
    assert eq[("ebflow-dsm", 20.0)] == pytest.approx(-11.0) and np.isnan(eq[("ebflow-dsm", 1.0)])


# ------------------------------------------------------------------ claims, summary, LaTeX, colours, samples


def test_claims_csv_and_claims_section(report):
    from ebflow_bench.claims import CLAIM_COLUMNS, CLAIMS

    claims = pd.read_csv(report.parent / "claims.csv", keep_default_na=False)
    assert list(claims.columns) == CLAIM_COLUMNS == ["claim", "source", "paper_value", "our_value", "verdict",
                                                       "rule_fingerprint", "note"]
    assert list(claims["rule_fingerprint"]) == [c.fingerprint for c in CLAIMS]
    assert list(claims["claim"]) == [c.key for c in CLAIMS]
    v = claims.set_index("claim")["verdict"]
    # the fixture has no mnist5k, no ula-ebm: those claims cannot be decided
    assert v["ebflow-quality"] == "not run" and v["flowmc-mode-weights"] == "not run"
    # the fixture's budgets (50 steps) are too short to decide the energy-flow claim (>= 2000): not run, said so
    assert v["energy-flow-decorrelated"] == "not run"
    assert "(50); this claim needs cells of >= 2000 steps" in claims.set_index("claim").loc[
        "energy-flow-decorrelated", "note"]
    md = report.read_text()
    heads = [l for l in md.splitlines() if l.startswith("## ")]
    # the answer at a glance first, then the summary, claims near the top
    assert heads[:4] == ["## At a glance", "## Summary", "## Claims", "## Runs"]
    sec = _section(md, "Claims")
    rows = {r[0]: r[1] for r in _md_table(sec, "claim")}
    assert rows["`ebflow-quality`"] == "**not run**" and rows["`energy-flow-decorrelated`"] == "**not run**"
    summary = _section(md, "Summary")
    assert "0 not reproduced" in summary and "ebflow-bench report RUN --out OUT" in summary


def test_summary_ranks_ok_configurations_with_t_intervals(report):
    from scipy import stats as st

    summary = _section(report.read_text(), "Summary")
    rows = _md_table(summary, "task")
    nll = next(r for r in rows if r[0].startswith("checkerboard") and r[1].startswith("test negative"))
    # ebflow-ml 3.0/3.4 (best) before ebflow-dsm 3.5/3.7; interval: t(0.975, 1) * s / sqrt(2)
    half = st.t.ppf(0.975, 1) * np.std([3.0, 3.4], ddof=1) / math.sqrt(2)
    assert nll[2] == f"ebflow-ml: 3.2 ± {half:.2g} (n=2)" and nll[3].startswith("ebflow-dsm: 3.6")
    assert all("energy-flow" not in c for r in rows for c in r[2:5])  # failed: never ranked
    eq = next(r for r in rows if r[0].startswith("checkerboard") and "at C =" in r[1])
    assert eq[2].startswith("ebflow-ml:")


def test_truth_is_a_noise_floor_never_ranked(run_dir, tmp_path):
    df = pd.read_parquet(run_dir / "results.parquet")
    rows = _Rows()
    for seed in (0, 1):  # exact samples: a better sliced W2 than every model, and it must not be ranked
        rows.cell("truth", "checkerboard", 2, 2, seed, [("sliced_wasserstein", 0.05 + 0.01 * seed, "data units",
                                                           "ok")])
    truth = pd.DataFrame(rows.rows, columns=COLUMNS).assign(run_id="truth-run", family="reference")
    both = pd.concat([df, truth], ignore_index=True)
    q = quality_table(both, mark_best=True).set_index(["task", "method"])
    assert not q.loc[("checkerboard", "truth"), "sliced_wasserstein"].startswith("**")
    assert q.loc[("checkerboard", "ebflow-ml"), "sliced_wasserstein"].startswith("**")
    d = tmp_path / "run"
    d.mkdir()
    both.to_parquet(d / "results.parquet", index=False)
    summary = _section(build_report([d], tmp_path / "out").read_text(), "Summary")
    sw = next(r for r in _md_table(summary, "task") if r[0].startswith("checkerboard") and r[1].startswith("sliced"))
    assert "truth" not in " ".join(sw[2:5]) and sw[6].startswith("0.055 ± 0.064")


def test_every_table_is_written_as_booktabs_latex(report):
    out = report.parent
    tex = sorted((out / "tables").glob("*.tex"))
    md = report.read_text()
    assert len(tex) == md.count("LaTeX: [tables/") and len(tex) >= 10
    for p in tex:
        t = p.read_text()
        assert t.index(r"\toprule") < t.index(r"\midrule") < t.index(r"\bottomrule")
        assert f"(tables/{p.name})" in md
        body = t[t.index(r"\begin{tabular}"):]
        assert "±" not in body and "**" not in body
        assert not re.search(r"(?<!\\)_", body), p.name  # every underscore escaped
    claims = next(p for p in tex if p.name.endswith("-claims.tex")).read_text()
    assert r"\texttt{ebflow-quality} & \textbf{not run}" in claims
    quality = next(p for p in tex if "checkerboard" in p.name and "quality" in p.name).read_text()
    assert r"\textbf{3.2 $\pm$ 2.5}" in quality


def test_figures_are_300_dpi_png_and_pdf(report):
    fig = report.parent / "figures"
    for p in fig.glob("*.png"):
        assert p.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
        with Image.open(p) as im:
            dpi = im.info.get("dpi", (0, 0))
            assert round(dpi[0]) == 300 and im.size[0] >= 600, (p.name, im.size, dpi)


def test_one_colour_per_method_across_figures():
    F = importlib.import_module("ebflow_bench.report.figures")
    from ebflow_bench.matrix import adapter_registry

    # fixed per method, whatever else is in the figure, and a configuration label takes its method's colour
    a = F.method_colors(["ebflow-ml", "ebflow-dsm"])
    b = F.method_colors(["nflows-maf", "ebflow-dsm", "ebflow-ml [lr=0.1]", "zzz-plugin"])
    assert a["ebflow-dsm"] == b["ebflow-dsm"] and a["ebflow-ml"] == b["ebflow-ml [lr=0.1]"]
    assert F.method_colors(["zzz-plugin"]) == {"zzz-plugin": b["zzz-plugin"]}
    # every method of the suite (plugins registered by other tests aside) has its own fixed colour
    builtin = sorted(m for m, a in adapter_registry().items() if a.__module__.startswith("ebflow_bench.adapters"))
    assert len(builtin) >= 17 and set(builtin) <= set(F.PALETTE)
    colours = [F.color_of(m) for m in builtin]
    assert len(set(colours)) == len(colours)
    # and the drawn lines carry it: the same method in two figures has the same RGB
    import matplotlib.pyplot as plt

    seen = []
    orig = F._save
    F._save = lambda fig, path, **kw: (seen.append({l.get_label(): l.get_color() for ax in fig.axes for l in ax.get_lines()
                                              if not l.get_label().startswith("_")}), plt.close(fig))[-1]
    try:
        steps = pd.DataFrame({"method": ["ebflow-dsm"] * 2 + ["ebflow-ml"] * 2, "dim": [8.0, 16.0] * 2,
                              "value": [1.0, 2.0, 1.0, 4.0]})
        F.scaling([("g", 2.0, steps)], "dim", {}, F.method_colors(["ebflow-dsm", "ebflow-ml"]), Path("x.png"))
        curves = pd.DataFrame({"task": "t", "dim": 2, "label": ["ebflow-dsm"] * 2 + ["mle-lu"] * 2,
                               "cell_id": ["a", "a", "b", "b"], "compute_s": [1.0, 2.0] * 2, "value": [3.0, 2.0] * 2})
        F.equal_compute(curves, curves.assign(compute_s=1.5), F.method_colors(curves["label"]), Path("y.png"))
    finally:
        F._save = orig
    to_rgb = matplotlib_colors().to_rgb
    assert to_rgb(seen[0]["ebflow-dsm"]) == to_rgb(seen[1]["ebflow-dsm"]) == pytest.approx(F.color_of("ebflow-dsm"))


def matplotlib_colors():
    import matplotlib.colors

    return matplotlib.colors


def test_degenerate_cell_sample_panel_is_labelled(run_dir, tmp_path):
    F = importlib.import_module("ebflow_bench.report.figures")
    df = pd.read_parquet(run_dir / "results.parquet")
    why = "collapsed: sample spread 1e-9"
    hit = df["task"].eq("checkerboard") & df["method"].eq("ebflow-dsm")
    bad = df.assign(cell_status=df["cell_status"].where(~hit, "degenerate"),
                    cell_reason=df["cell_reason"].where(~hit, why))
    d = tmp_path / "run"
    (d / "samples").mkdir(parents=True)
    bad.to_parquet(d / "results.parquet", index=False)
    for p in (run_dir / "samples").glob("*.npy"):
        (d / "samples" / p.name).write_bytes(p.read_bytes())
    titles = []
    orig = F._save
    F._save = lambda fig, path, **kw: (titles.append([ax.get_title() for ax in fig.axes]), orig(fig, path))[-1]
    try:
        md = build_report([d], tmp_path / "out").read_text()
    finally:
        F._save = orig
    checker = next(t for t in titles if "flowmc-ebm" in t and "energy-flow\nfailed" in t)  # the checkerboard's
    assert [t.replace("\n", " ") for t in checker if t.startswith("ebflow-dsm")] == [f"ebflow-dsm degenerate: {why}"]
    assert "ebflow-ml" in checker  # an ok panel: no note (the reason wraps over lines)
    # failed without samples (energy-flow): an empty panel titled "failed"
    assert "Panels of failed, capped or degenerate cells say so" in md


def test_padded_image_grid():
    F = importlib.import_module("ebflow_bench.report.figures")
    x = np.zeros((4, 9))  # four black 3x3 images
    g = F._mosaic(x, (1, 3, 3), 2)
    gap = F.GRID_GAP
    assert g.shape == (2 * 3 + 3 * gap, 2 * 3 + 3 * gap)
    assert (g[:gap] == 1).all() and (g[:, gap + 3:2 * gap + 3] == 1).all()  # white border and gap between
    assert (g[gap:gap + 3, gap:gap + 3] == 0).all()


def test_report_cli_writes_beside_the_run_not_into_results(run_dir, tmp_path, monkeypatch):
    from ebflow_bench.cli import main

    d = tmp_path / "run"
    d.mkdir()
    (d / "results.parquet").write_bytes((run_dir / "results.parquet").read_bytes())
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(d)]) == 0
    assert (d / "report" / "report.md").is_file() and (d / "report" / "claims.csv").is_file()
    assert not (tmp_path / "results").exists()


def test_reference_command_writes_results_folder_with_parquet_and_claims(tmp_path, monkeypatch):
    from ebflow_bench.cli import main

    monkeypatch.chdir(tmp_path)  # no results/asv here: the report goes without asv history
    matrix = _two_lr_matrix(tmp_path, "[0]")
    assert main(["reference", "--preset", str(matrix), "--run-dir", "runs/two", "--out", "results/two",
                 "--quiet"]) == 0
    out = tmp_path / "results" / "two"
    for name in ("report.md", "report.html", "claims.csv", "results.parquet", "meta.json"):
        assert (out / name).is_file(), name
    assert len(pd.read_parquet(out / "results.parquet")) == len(pd.read_parquet(tmp_path / "runs/two/results.parquet"))
    md = (out / "report.md").read_text()
    assert "ebflow-bench reference --preset" in md and "git checkout " in md  # how to reproduce it
    # a reference folder reads as a run beside yours (the same cells here: counted once)
    from ebflow_bench.results import DuplicateCells

    with pytest.warns(DuplicateCells):
        assert main(["report", "results/two", "runs/two", "--out", "runs/both"]) == 0
    # a report of several folders writes the combined table it read, each cell once, readable as a run
    both = pd.read_parquet(tmp_path / "runs/both/results.parquet")
    assert both["cell_id"].nunique() == pd.read_parquet(out / "results.parquet")["cell_id"].nunique()
    assert len(both) == len(pd.read_parquet(out / "results.parquet"))


def test_every_figure_text_is_at_least_8_pt(run_dir, tmp_path):
    import matplotlib.text

    F = importlib.import_module("ebflow_bench.report.figures")
    sizes: dict[str, float] = {}
    orig = F._save

    def spy(fig, path, **kw):
        texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip() and t.get_visible()]
        sizes[Path(path).name] = min(t.get_fontsize() for t in texts)
        return orig(fig, path, **kw)

    F._save = spy
    try:
        build_report([run_dir], tmp_path / "out")
    finally:
        F._save = orig
    assert len(sizes) >= 5 and min(sizes.values()) >= F.MIN_FONT == 8, sizes


def test_report_states_the_equal_tuning_budget_of_every_method(report):
    md = report.read_text()
    assert "## Tuning budget" in md
    section = md.split("## Tuning budget", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows
    for line in rows:
        method, family, space, points = [c.strip() for c in line.strip("|").split("|")]
        assert points == ("0" if family == "reference" else "6"), line
        assert family == "reference" or " x " in space


def test_score_matching_against_ml_is_diagnosed_from_the_tables_evidence():
    from ebflow_bench.report.tables import sm_vs_ml

    rows = _Rows()
    q = lambda nll, mw, sw: [("test_nll", nll, "nats", "ok"), ("mode_weight_error", mw, "MSE", "ok"),  # noqa: E731
                             ("sliced_wasserstein", sw, "data units", "ok")]
    rows.cell("ebflow-ml", "eight_gaussians", 2, 4, 0, q(1.40, 1e-4, 0.10))
    rows.cell("ebflow-sml", "eight_gaussians", 2, 4, 0, q(1.45, 1e-4, 0.10))              # within 10%
    rows.cell("ebflow-ssm", "eight_gaussians", 2, 4, 0, q(1.90, 5e-3, 0.12))              # mode weights
    rows.cell("ebflow-dsm", "eight_gaussians", 2, 4, 0, q(1.80, 2e-4, 0.30))              # samples off
    rows.cell("ebflow-fdssm", "eight_gaussians", 2, 4, 0, q(1.80, 2e-4, 0.11))            # neither
    rows.cell("ebflow-ml", "wine", 13, 2, 0, [("test_nll", 15.0, "nats", "ok")])
    rows.cell("ebflow-ssm", "wine", 13, 2, 0, [("test_nll", 15.5, "nats", "ok")], status="degenerate")
    rows.rows[-1]["cell_reason"] = "mass escapes: 40% of samples lie beyond 10x the data radius"
    t = sm_vs_ml(pd.DataFrame(rows.rows, columns=COLUMNS)).set_index(["task", "method"])
    assert bool(t.loc[("eight_gaussians", "ebflow-sml"), "within"]) and t.loc[("eight_gaussians", "ebflow-sml"),
                                                                              "diagnosis"] == ""
    assert t.loc[("eight_gaussians", "ebflow-ssm"), "diagnosis"].startswith("misplaced mode weights")
    assert t.loc[("eight_gaussians", "ebflow-dsm"), "diagnosis"].startswith("samples further from the data")
    assert t.loc[("eight_gaussians", "ebflow-fdssm"), "diagnosis"].startswith("an NLL gap without")
    assert t.loc[("eight_gaussians", "ebflow-ssm"), "gap"] == pytest.approx(0.5 / 1.4)
    wine = t.loc[("wine", "ebflow-ssm")]  # within 10% in NLL, but degenerate: never "within"
    assert not bool(wine["within"]) and wine["diagnosis"] == "degenerate: mass escapes: 40% of samples lie beyond " \
                                                             "10x the data radius"


def test_config_labels_name_the_budget_where_only_it_differs():
    from ebflow_bench.report.tables import config_labels

    rows = [{"task": "mixture-4modes", "dim": 2, "method": "flowmc-ebm", "layers": 4, "budget": b,
             "config_key": f"k{b}", "hparams": '{"lr": 0.001}'} for b in (3000, 12000)]
    rows.append({"task": "mixture-4modes", "dim": 2, "method": "ula-ebm", "layers": 4, "budget": 3000,
                 "config_key": "u", "hparams": '{"lr": 0.01}'})
    labels = config_labels(pd.DataFrame(rows))
    assert labels == {"k3000": "flowmc-ebm [3000 steps]", "k12000": "flowmc-ebm [12000 steps]", "u": "ula-ebm"}


def test_claims_section_lists_verdicts_changed_since_the_previous_claims_csv(run_dir, report, tmp_path):
    prev = pd.read_csv(report.parent / "claims.csv", keep_default_na=False)
    prev.loc[prev["claim"] == "flowmc-density", ["verdict", "rule_fingerprint"]] = ["reproduced", "0ld0ld0ld0ld"]
    prev.to_csv(tmp_path / "old-claims.csv", index=False)
    sec = _section(build_report([run_dir], tmp_path / "out", previous_claims=tmp_path / "old-claims.csv")
                   .read_text(), "Claims")
    assert "Verdicts changed since the previous results" in sec
    line = next(l for l in sec.splitlines() if l.startswith("| flowmc-density"))
    assert "reproduced" in line and "not run" in line and "rule changed (0ld0ld0ld0ld ->" in line
    assert "ebflow-quality |" not in sec.split("Verdicts changed")[1]  # unchanged verdicts are not listed
    runs = _section((tmp_path / "out" / "report.md").read_text(), "Runs")
    assert "| commit | clean |" in runs and "| abc1234 | yes |" in runs  # the fixture run: one clean commit
