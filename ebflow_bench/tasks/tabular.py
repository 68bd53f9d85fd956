"""Tabular tasks: scikit-learn's bundled tables, UCI/MAF folders, and the user's own file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._lazy import lazy
from .base import DATA_HASH_OPTION, Task, TaskUnavailable, _sizes, register_task
from .images import _stratified_order  # noqa: F401

torch = lazy("torch")  # imported when a task is built (the static checks read only declarations)



# --- scikit-learn's bundled tabular data sets (standardised) ---------------------------------------------------

#: name -> (loader in sklearn.datasets, D, description)
SKLEARN_TABULAR = {
    "iris": ("load_iris", 4, "150 iris flowers, 4 measurements, 3 species (multimodal)"),
    "wine": ("load_wine", 13, "178 wines, 13 chemical measurements, 3 cultivars (multimodal)"),
    "breast_cancer": ("load_breast_cancer", 30, "569 breast-mass images, 30 features, 2 diagnoses"),
}


def _sklearn_tabular(name: str, seed: int, test_fraction: float) -> Task:
    """Class-stratified random split by ``seed`` (test first), then standardised with the *training* mean and
    standard deviation (so the test set carries no information into the preprocessing)."""
    import sklearn.datasets

    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"task {name!r}: test_fraction must lie in (0, 1), got {test_fraction!r}")
    loader, dim, desc = SKLEARN_TABULAR[name]
    d = getattr(sklearn.datasets, loader)()
    x = np.asarray(d.data, dtype=np.float64)
    n_test = max(1, int(round(test_fraction * len(x))))
    target = np.asarray(d.target)
    order = _stratified_order(target, torch.Generator().manual_seed(int(seed)))
    test, train = x[order[:n_test]], x[order[n_test:]]
    mean, sd = train.mean(0), train.std(0)
    sd[sd == 0] = 1.0
    train, test = ((a - mean) / sd for a in (train, test))
    return Task(name, dim, torch.from_numpy(train).float(), torch.from_numpy(test).float(),
                description=f"sklearn {name}: {desc}; standardised with the training split's mean and sd",
                source=f"sklearn.datasets.{loader} (UCI)",
                groups=torch.from_numpy(target[order[:n_test]].astype(np.int64)),
                train_groups=torch.from_numpy(target[order[n_test:]].astype(np.int64)),
                options={"test_fraction": float(test_fraction), "n_train": len(train), "n_test": n_test})


def _register_sklearn(name: str) -> None:
    def factory(seed: int = 0, test_fraction: float = 0.2) -> Task:
        return _sklearn_tabular(name, seed, test_fraction)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"sklearn {name!r} (D={SKLEARN_TABULAR[name][1]}), standardised, stratified split by seed."
    register_task(name, dim=SKLEARN_TABULAR[name][1])(factory)


for _name in SKLEARN_TABULAR:
    _register_sklearn(_name)


# --- UCI / BSDS300 (MAF benchmark), read from a user-given folder ------------------------------------------------

#: name -> (D, folder name)
UCI_DIMS = {"power": 6, "gas": 8, "hepmass": 21, "miniboone": 43, "bsds300": 63}
DATA_ENV = "EBFLOW_BENCH_DATA"


def _uci(name: str, seed: int, root: str | os.PathLike | None, n_train: int | None, n_test: int | None) -> Task:
    """Load ``<root>/<name>/train.npy`` and ``test.npy``: float arrays [N, D] already preprocessed as in the MAF
    benchmark (Papamakarios et al. 2017: the usual per-dataset cleaning and standardisation; convert the
    original ``data.npy``/csv/hdf5 files once with the MAF preprocessing). ``root`` defaults to the
    ``EBFLOW_BENCH_DATA`` environment variable. ``n_train``/``n_test`` take seeded random subsets."""
    dim = UCI_DIMS[name]
    root = root if root is not None else os.environ.get(DATA_ENV)
    expect = f"train.npy and test.npy (float arrays [N, {dim}], MAF-preprocessed)"
    if root is None:
        raise TaskUnavailable(f"task {name!r} needs its data files: give the option root=FOLDER or set {DATA_ENV}; "
                              f"expected FOLDER/{name}/{expect}")
    folder = Path(root).expanduser() / name
    missing = [f for f in ("train.npy", "test.npy") if not (folder / f).is_file()]
    if missing:
        raise TaskUnavailable(f"task {name!r}: {', '.join(missing)} not found in {folder}; expected {expect}")
    g = torch.Generator().manual_seed(int(seed))
    splits = []
    for split, n in (("train", n_train), ("test", n_test)):
        arr = np.load(folder / f"{split}.npy", mmap_mode="r", allow_pickle=False)
        if arr.ndim != 2 or arr.shape[1] != dim or not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"task {name!r}: {folder / f'{split}.npy'} holds a {arr.dtype} array of shape "
                             f"{arr.shape}, expected floats [N, {dim}]")
        if n is not None:
            _sizes(n, 1)
            if n > len(arr):
                raise ValueError(f"task {name!r}: asked for {split} n={n} but {split}.npy has {len(arr)} rows")
            idx = np.sort(torch.randperm(len(arr), generator=g)[:n].numpy())
            arr = arr[idx]
        splits.append(torch.from_numpy(np.array(arr, dtype=np.float32)))
    return Task(name, dim, splits[0], splits[1], description=f"UCI/MAF {name} (D={dim}) from {folder}",
                source="Papamakarios et al. 2017 (MAF) preprocessed data, user-supplied",
                options={"root": str(root), "n_train": n_train, "n_test": n_test})


def _register_uci(name: str) -> None:
    def factory(seed: int = 0, root: str | os.PathLike | None = None, n_train: int | None = None,
                n_test: int | None = None) -> Task:
        return _uci(name, seed, root, n_train, n_test)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"UCI/MAF {name!r} (D={UCI_DIMS[name]}) from <root>/{name}/{{train,test}}.npy."
    register_task(name, dim=UCI_DIMS[name])(factory)


for _name in UCI_DIMS:
    _register_uci(_name)


# --- the user's own data: a task from an .npy, .csv or .parquet file -------------------------------------------

FILE_SUFFIXES = (".npy", ".csv", ".parquet")


def _file_path(path: str | os.PathLike | None) -> Path:
    if path is None:
        raise ValueError("task 'file' needs the option path = \"data.csv\" (an .npy, .csv or .parquet file)")
    p = Path(os.path.expanduser(os.fspath(path)))
    if p.suffix.lower() not in FILE_SUFFIXES:
        raise ValueError(f"task 'file': {str(p)!r} is not an {', '.join(FILE_SUFFIXES)} file")
    if not p.is_file():
        raise FileNotFoundError(f"task 'file': data file {str(p)!r} not found")
    return p


def _file_columns(p: Path) -> list:
    """Column names (csv, parquet) or indices (npy) of a data file, read without loading the data."""
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
        if arr.ndim not in (1, 2):
            raise ValueError(f"task 'file': {p} holds an array of shape {arr.shape}, expected [N, D]")
        return list(range(arr.shape[1] if arr.ndim == 2 else 1))
    if suffix == ".csv":
        import pandas as pd

        return list(pd.read_csv(p, nrows=0).columns)
    import pyarrow.parquet as pq

    return list(pq.read_schema(p).names)


def _selected(p: Path, columns) -> list:
    have = _file_columns(p)
    if columns is None:
        return have
    if isinstance(columns, (str, int)) or not isinstance(columns, (list, tuple)) or not columns:
        raise ValueError(f"task 'file': columns must be a non-empty list, got {columns!r}")
    missing = [c for c in columns if c not in have]
    if missing:
        raise ValueError(f"task 'file': column(s) {missing} not in {p.name}; it has {have}")
    return list(columns)


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a data file's bytes (a ``file`` task's :data:`DATA_HASH_OPTION`)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_task_dim(path=None, columns=None, **_ignored) -> int:
    """D of a ``file`` task: the number of (selected) columns."""
    return len(_selected(_file_path(path), columns))


def _read_numeric(p: Path, columns: list) -> np.ndarray:
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
        arr = arr[:, None] if arr.ndim == 1 else arr
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"task 'file': {p} holds {arr.dtype} values, expected numbers")
        return np.asarray(arr[:, columns], dtype=np.float64)
    import pandas as pd

    df = pd.read_csv(p, usecols=columns) if suffix == ".csv" else pd.read_parquet(p, columns=columns)
    df = df[columns]
    bad = [str(c) for c in columns if not (pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]))]
    if bad:
        raise ValueError(f"task 'file': non-numeric column(s) {bad} in {p.name}; choose numeric ones with "
                         "`columns = [...]` or encode them as numbers")
    return df.to_numpy(dtype=np.float64)


@register_task("file", dim_of=file_task_dim)
def file_task(dim: int | None = None, seed: int = 0, path: str | None = None, columns: list | None = None,
              test_fraction: float = 0.2, standardise: bool = True, name: str | None = None,
              sha256: str | None = None) -> Task:
    """Your own data: rows of an ``.npy`` array [N, D], a ``.csv`` file with a header line, or a ``.parquet``
    file, optionally only ``columns`` (names; indices for .npy). A random ``test_fraction`` of the rows (drawn
    with ``seed``, the cell's data seed) is the test set, the rest the training set. With ``standardise`` (the
    default) every column is shifted and scaled by the *training* split's mean and standard deviation, so test
    data never leaks into the preprocessing; NLLs are then in the standardised space. ``name`` labels the data
    in descriptions (default: the file's stem). ``sha256`` pins the file's content (the matrix records it in
    every cell's spec, so the data are part of the cells' identity and a file changed since is refused rather
    than mixed in); the task's options carry the hash either way. Missing files, non-numeric columns, NaN/inf
    values, constant columns and too few rows are refused with the reason."""
    p = _file_path(path)
    digest = file_sha256(p)
    if sha256 is not None and str(sha256).lower() != digest:
        raise ValueError(f"task 'file': {p} has changed since the matrix was resolved (its SHA-256 is "
                         f"{digest[:12]}..., the cell expects {str(sha256)[:12]}...): run the changed data as a "
                         "new run")
    cols = _selected(p, columns)
    if dim is not None and int(dim) != len(cols):
        raise ValueError(f"task 'file': {p.name} has {len(cols)} (selected) columns, not D = {dim}; leave out "
                         "`dims` for this task")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"task 'file': test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if not isinstance(standardise, bool):
        raise ValueError(f"task 'file': standardise must be true or false, got {standardise!r}")
    data = _read_numeric(p, cols)
    finite = np.isfinite(data)
    if not finite.all():
        rows, where = np.nonzero(~finite)
        bad_cols = sorted({str(cols[j]) for j in where})
        raise ValueError(f"task 'file': {p.name} has {len(rows)} NaN/inf value(s) (first in row {rows[0]}, "
                         f"columns {bad_cols}); drop or impute them first")
    n = len(data)
    n_test = int(round(n * test_fraction))
    if n_test < 1 or n - n_test < 2:
        raise ValueError(f"task 'file': {p.name} has {n} rows: too few for a train/test split at "
                         f"test_fraction = {test_fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).numpy()
    train, test = data[order[n_test:]], data[order[:n_test]]
    if standardise:
        mean, std = train.mean(0), train.std(0)
        const = [str(c) for c, s in zip(cols, std) if s == 0]
        if const:
            raise ValueError(f"task 'file': column(s) {const} are constant in the training split; leave them out "
                             "with `columns`")
        train, test = (train - mean) / std, (test - mean) / std
    label = name or p.stem
    return Task(label, len(cols), torch.from_numpy(train).float(), torch.from_numpy(test).float(),
                description=f"{label}: {n} rows x {len(cols)} columns of {p.name}, {n - n_test}/{n_test} split"
                            f"{', standardised by the training split' if standardise else ''}",
                source=f"user data {p}",
                options={"path": str(p), "columns": cols, "test_fraction": test_fraction,
                         "standardise": standardise, "name": label, DATA_HASH_OPTION: digest})


def register_file_task(name: str, path: str | os.PathLike, **options) -> None:
    """Register a task ``name`` for the data file ``path`` (options as for ``file``); for plugins that bring
    several data sets, each under its own name in the results."""
    fixed = {"path": os.fspath(path), "name": name, **options}

    def factory(dim: int | None = None, seed: int = 0, **more) -> Task:
        return file_task(dim=dim, seed=seed, **{**fixed, **more})

    factory.__doc__ = f"User data {name!r} from {fixed['path']}."
    register_task(name, dim_of=lambda **more: file_task_dim(**{**fixed, **more}))(factory)
