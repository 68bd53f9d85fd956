"""The user's own data as a task (`file`): .npy, .csv and .parquet give the same split and standardisation;
columns, seeds and test_fraction behave; bad files are refused with the reason; a matrix runs it end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ebflow_bench.cli import main
from ebflow_bench.matrix import MatrixError, load_imports, load_matrix, validate
from ebflow_bench.results import load_results
from ebflow_bench.tasks import get_task, register_file_task, task_dim

PLUGIN = str(Path(__file__).with_name("test_runner.py").resolve())  # test-diag adapter
load_imports([PLUGIN])


def _data(n: int = 500) -> np.ndarray:
    g = np.random.default_rng(0)
    x = g.normal(size=(n, 1))
    return np.hstack([3 + 2 * x, -1 + 0.5 * x + 0.1 * g.normal(size=(n, 1)), g.uniform(size=(n, 1))])


@pytest.fixture
def files(tmp_path):
    data = _data()
    np.save(tmp_path / "d.npy", data)
    df = pd.DataFrame(data, columns=["a", "b", "c"]).assign(label=["x"] * len(data))
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_parquet(tmp_path / "d.parquet", index=False)
    return data, tmp_path


def test_three_formats_give_the_same_standardised_split(files):
    data, tmp = files
    t_npy = get_task("file", path=str(tmp / "d.npy"), seed=3)
    t_csv = get_task("file", path=str(tmp / "d.csv"), columns=["a", "b", "c"], seed=3)
    t_pq = get_task("file", path=str(tmp / "d.parquet"), columns=["a", "b", "c"], seed=3)
    assert t_npy.train.shape == (400, 3) and t_npy.test.shape == (100, 3) and t_npy.train.dtype == torch.float32
    for t in (t_csv, t_pq):
        assert torch.allclose(t.train, t_npy.train, atol=1e-6) and torch.allclose(t.test, t_npy.test, atol=1e-6)
    # statistics from the training split only: train is exactly standardised, test is not
    assert torch.allclose(t_npy.train.double().mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(t_npy.train.double().std(0, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-5)
    assert not torch.allclose(t_npy.test.double().mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-3)
    # train and test partition the rows, chosen by the seed
    raw = get_task("file", path=str(tmp / "d.npy"), seed=3, standardise=False)
    rows = np.vstack([raw.train.numpy(), raw.test.numpy()])
    assert sorted(map(tuple, rows.round(4))) == sorted(map(tuple, data.astype(np.float32).round(4)))
    mean, std = raw.train.double().mean(0), raw.train.double().std(0, unbiased=False)
    assert torch.allclose(((raw.test.double() - mean) / std).float(), t_npy.test, atol=1e-5)
    other = get_task("file", path=str(tmp / "d.npy"), seed=4, standardise=False)
    assert not torch.equal(other.test, raw.test)
    assert torch.equal(get_task("file", path=str(tmp / "d.npy"), seed=3, standardise=False).test, raw.test)


def test_columns_fraction_name_and_dim(files):
    _, tmp = files
    t = get_task("file", path=str(tmp / "d.csv"), columns=["c", "a"], test_fraction=0.1, name="mydata")
    assert t.dim == 2 and t.test.shape == (50, 2) and t.name == "mydata" and "mydata" in t.description
    assert task_dim("file", {"path": str(tmp / "d.csv"), "columns": ["a", "b"]}) == 2
    assert task_dim("file", {"path": str(tmp / "d.npy")}) == 3
    assert get_task("file", path=str(tmp / "d.npy"), columns=[2]).dim == 1


@pytest.mark.parametrize("opts, error, message", [
    ({"path": "nope.csv"}, FileNotFoundError, "data file 'nope.csv' not found"),
    ({"path": "d.txt"}, ValueError, "is not an .npy, .csv, .parquet file"),
    ({}, ValueError, "needs the option path"),
    ({"path": "d.csv"}, ValueError, "non-numeric column(s) ['label']"),
    ({"path": "d.parquet"}, ValueError, "non-numeric column(s) ['label']"),
    ({"path": "d.csv", "columns": ["a", "zz"]}, ValueError, "column(s) ['zz'] not in d.csv"),
    ({"path": "d.npy", "test_fraction": 1.5}, ValueError, "test_fraction must be a number in (0, 1)"),
    ({"path": "nan.csv"}, ValueError, "1 NaN/inf value(s) (first in row 2, columns ['b'])"),
    ({"path": "const.csv"}, ValueError, "column(s) ['k'] are constant in the training split"),
])
def test_bad_files_are_refused_with_the_reason(files, opts, error, message):
    _, tmp = files
    pd.DataFrame({"a": [1.0, 2, 3, 4, 5], "b": [1.0, 2, None, 4, 5]}).to_csv(tmp / "nan.csv", index=False)
    pd.DataFrame({"a": [1.0, 2, 3, 4, 5], "k": [7.0] * 5}).to_csv(tmp / "const.csv", index=False)
    (tmp / "d.txt").write_text("1,2\n")
    opts = {k: (str(tmp / v) if k == "path" and v != "nope.csv" else v) for k, v in opts.items()}
    with pytest.raises(error) as e:
        get_task("file", **opts)
    assert message in str(e.value)


def _matrix(tmp: Path, task_options: str, dims: str = "") -> Path:
    p = tmp / "m.toml"
    p.write_text(f'name = "mine"\nimports = [{json.dumps(PLUGIN)}]\nmethods = ["test-diag"]\ntasks = ["file"]\n'
                 f'layers = [1]\nseeds = [0]\nbudgets = [200]\n{dims}\n[task_options.file]\n{task_options}\n'
                 "[eval]\nn_samples = 200\n")
    return p


def test_matrix_runs_a_csv_without_dims_and_refuses_a_bad_one(files, capsys):
    _, tmp = files
    m = _matrix(tmp, f'path = {json.dumps(str(tmp / "d.csv"))}\ncolumns = ["a", "b"]\nname = "ab"')
    (cell,) = validate(load_matrix(m))
    assert cell.dim == 2
    # the diagonal model ignores the strong a-b correlation: its NLL lies nearer uniform noise on the data's box
    # than the full-covariance Gaussian fit, so the cell is diagnosed degenerate (exit code 4), with its numbers
    assert main(["run", "--workers", "1", "--matrix", str(m), "--out", str(tmp / "run"), "--quiet"]) == 4
    df = load_results(tmp / "run")
    assert (df["cell_status"] == "degenerate").all()
    assert df["cell_reason"].iloc[0].startswith("NLL far worse than a Gaussian fit")
    nll = df.set_index("metric").loc["test_nll", "value"]
    # a diagonal Gaussian fitted to standardised data: NLL near its entropy, D/2 log(2 pi e) minus what the
    # strong a-b correlation (which the diagonal model ignores) would give; both bound it
    assert 2.0 < nll < 0.5 * 2 * np.log(2 * np.pi * np.e) + 0.1, nll
    with pytest.raises(MatrixError, match="impossible D 3 for task 'file': its dimension is fixed at 2"):
        validate(load_matrix(_matrix(tmp, f'path = {json.dumps(str(tmp / "d.csv"))}\ncolumns = ["a", "b"]',
                                     "dims = [3]")))
    code = main(["run", "--workers", "1", "--matrix", str(_matrix(tmp, 'path = "/nonexistent/x.csv"')), "--out", str(tmp / "r2")])
    err = capsys.readouterr().err
    assert code == 2 and "data file '/nonexistent/x.csv' not found" in err and not (tmp / "r2").exists()


def test_register_file_task_names_the_data(files):
    _, tmp = files
    register_file_task("test-file-npy", tmp / "d.npy", columns=[0, 1])
    assert task_dim("test-file-npy", {}) == 2
    t = get_task("test-file-npy", seed=1)
    assert t.name == "test-file-npy" and t.dim == 2 and t.train.shape == (400, 2)
