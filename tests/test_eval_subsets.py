"""Evaluation subsets (``tasks.evaluation_rows``): every subset of test rows that a checkpoint, the final NLL, a
metric or a claim reads is a seeded random sample of the whole test set, stratified by the task's ``groups``
(class labels, source images) where it has them; no subset is dominated by one source."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from ebflow_bench.tasks import (TaskUnavailable, available_tasks, evaluation_indices, evaluation_rows, get_task,
                                task_dim)

#: checkpoint subset size read by the reproduce preset (checkpoint_test = 500)
N_CKPT = 500
#: tasks that need what this machine lacks (a file, a UCI folder) or are slow to build
SKIP = {"file"}


@functools.lru_cache(maxsize=None)
def _build(name: str, seed: int = 0):
    dim = 4 if task_dim(name) is None else None
    try:
        return get_task(name, dim=dim, seed=seed)
    except (TaskUnavailable, FileNotFoundError):
        return None


def _tasks():
    """The suite's own tasks (plugin tasks that other test modules register at import are not the suite's)."""
    from ebflow_bench.tasks import _TASKS

    return [n for n in available_tasks()
            if n not in SKIP and getattr(_TASKS[n], "__module__", "").startswith("ebflow_bench.tasks")]


@pytest.mark.parametrize("name", _tasks())
def test_checkpoint_subset_is_a_stratified_seeded_sample(name):
    task = _build(name)
    if task is None:
        pytest.skip(f"{name} cannot be built here")
    n_test = task.test.shape[0]
    n = min(N_CKPT, n_test // 2)
    idx = evaluation_indices(task, n)
    assert idx.shape == (n,) and len(set(idx.tolist())) == n
    assert torch.equal(idx, evaluation_indices(task, n))  # repeats given the seed (a fresh build: patches32 below)
    assert torch.equal(evaluation_indices(task, n // 2), idx[:n // 2])  # nested: checkpoints within the final
    assert torch.equal(evaluation_rows(task, n), task.test[idx])
    assert torch.equal(evaluation_rows(task, None), task.test) and torch.equal(evaluation_rows(task, 10**9), task.test)
    if task.image_shape is not None:
        assert task.groups is not None, f"image task {name!r} exposes no strata (groups: class or source image)"
    if task.groups is not None:
        # stratified: every stratum holds its share of the whole test set, to within 2 rows
        labels = task.groups
        for c in torch.unique(labels):
            share = float((labels == c).double().mean())
            got = int((labels[idx] == c).sum())
            assert abs(got - share * n) <= 2, (name, int(c), got, share * n)
    else:
        # no strata: a uniform random sample even of a test set in the worst order (sorted by a coordinate)
        order = torch.argsort(task.test[:, 0])
        worst = dataclasses.replace(task, test=task.test[order])
        x = evaluation_rows(worst, n)[:, 0].double()
        full = worst.test[:, 0].double()
        se = float(full.std()) / n ** 0.5 * (1 - n / n_test) ** 0.5
        assert abs(float(x.mean()) - float(full.mean())) < 5 * se + 1e-12, name


def test_patches32_checkpoint_rows_are_not_dominated_by_one_image():
    """The defect of issue 21: the first 500 test rows were 406 patches of one image and 94 of another."""
    task = get_task("patches32")
    assert task.groups is not None and int(task.groups.unique().numel()) == 5
    for rows in (torch.arange(N_CKPT), evaluation_indices(task, N_CKPT)):  # the test set itself is in random order
        counts = torch.bincount(task.groups[rows], minlength=5)
        assert int(counts.max()) <= 0.3 * N_CKPT, counts.tolist()  # each image about 20%
    assert torch.equal(evaluation_rows(get_task("patches32"), N_CKPT), evaluation_rows(task, N_CKPT))
    other = dataclasses.replace(task, seed=1)
    assert not torch.equal(evaluation_indices(other, N_CKPT), evaluation_indices(task, N_CKPT))  # the seed decides


def test_class_strata_of_digits_mnist_and_their_validation_split():
    for name in ("digits", "mnist5k"):
        task = _build(name)
        counts = torch.bincount(task.groups[evaluation_indices(task, 100)], minlength=10)
        assert int(counts.min()) >= 9 and int(counts.max()) <= 11, (name, counts.tolist())
    val = get_task("digits", validation=0.2)
    assert val.groups is not None and val.groups.shape == (val.test.shape[0],)
    assert val.train_groups.shape == (val.train.shape[0],)
    from sklearn.datasets import load_digits

    d = load_digits()
    lookup = {tuple(r): int(t) for r, t in zip(d.data.astype(int).tolist(), d.target.tolist())}
    k = (val.test.double() * 17).floor().long().tolist()  # undo the dequantisation: the labels follow the rows
    assert all(lookup[tuple(r)] == int(g) for r, g in zip(k[:50], val.groups[:50]))


def test_groups_of_the_wrong_shape_are_refused():
    task = get_task("iris")
    with pytest.raises(ValueError, match="groups must be"):
        dataclasses.replace(task, groups=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="needs n >= 1"):
        evaluation_indices(task, 0)
