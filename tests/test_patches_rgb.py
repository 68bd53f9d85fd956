"""The D = 3072 colour patch task (CIFAR-10's layout): shapes, range, C x H x W rows cut from the bundled photos,
train/test regions that share no pixel, and test subsets stratified by source image in every prefix."""

import numpy as np
import pytest
import torch

from ebflow_bench.tasks import bits_per_dim, get_task
from ebflow_bench.tasks.images import COLOUR_PATCH_IMAGES, _colour_image, _colour_region_patches, _proportional_order


@pytest.fixture(scope="module")
def regions():
    return _colour_region_patches(32, 8, 0.25)


@pytest.fixture(scope="module")
def task():
    return get_task("patches32-rgb", n_train=600, n_test=400, seed=3)


def test_shapes_range_and_seeding(task):
    assert task.dim == 3072 and task.train.shape == (600, 3072) and task.test.shape == (400, 3072)
    assert task.image_shape == (3, 32, 32) and task.discrete_scale == 256.0
    for x in (task.train, task.test):
        assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) < 1.0
    again = get_task("patches32-rgb", n_train=600, n_test=400, seed=3)
    assert torch.equal(task.train, again.train) and torch.equal(task.test, again.test)
    other = get_task("patches32-rgb", n_train=600, n_test=400, seed=4)
    assert not torch.equal(task.train, other.train) and not torch.equal(task.test, other.test)
    assert abs(bits_per_dim(torch.zeros(1), task).item() - 8.0) < 1e-6  # uniform on the pixel cube
    with pytest.raises(ValueError, match="3597 test patches"):
        get_task("patches32-rgb", n_test=5000)


def test_rows_are_channel_first_patches_of_the_photos(regions):
    tr, tr_src, te, te_src = regions
    astronaut = _colour_image("astronaut")  # the first image: its first patches open both arrays
    assert np.array_equal(tr[0].reshape(3, 32, 32), astronaut[:32, :32].transpose(2, 0, 1))
    assert np.array_equal(tr[1].reshape(3, 32, 32), astronaut[:32, 8:40].transpose(2, 0, 1))
    cut = int(round(512 * 0.75))
    assert np.array_equal(te[0].reshape(3, 32, 32), astronaut[cut:cut + 32, :32].transpose(2, 0, 1))
    # every image contributes (rows - 32) // 8 + 1 by (cols - 32) // 8 + 1 patches per region, in image order
    for src, name in enumerate(COLOUR_PATCH_IMAGES):
        h, w, _ = _colour_image(name).shape
        c = int(round(h * 0.75))
        assert (tr_src == src).sum() == ((c - 32) // 8 + 1) * ((w - 32) // 8 + 1)
        assert (te_src == src).sum() == ((h - c - 32) // 8 + 1) * ((w - 32) // 8 + 1)
    assert len(tr) == 13194 and len(te) == 3597


def test_train_and_test_regions_share_no_patch(regions, task):
    tr, _, te, _ = regions
    train_set, test_set = set(map(bytes, tr)), set(map(bytes, te))
    # the regions are disjoint rows; the only patches found in both are constant (astronaut's black corner)
    shared = train_set & test_set
    assert all(len(set(p)) == 1 for p in shared) and len(shared) <= 1
    # the task's rows dequantize patches of their own region: floor(256 x) recovers the integers
    for x, pool in ((task.train, train_set), (task.test, test_set)):
        k = torch.floor(x.double() * 256).clamp(0, 255).to(torch.uint8).numpy()
        assert all(bytes(row) in pool for row in k)


def test_subsets_are_stratified_by_source_in_every_prefix_and_not_sorted(regions, task):
    _, tr_src, _, te_src = regions
    share = np.bincount(te_src) / len(te_src)
    src = task.truth["test_source"].numpy()
    for m in range(1, len(src) + 1, 7):
        assert np.all(np.abs(np.bincount(src[:m], minlength=len(share)) - m * share) < 2.0), m
    # random order, not grouped by image: the source changes at most rows, and the draw depends on the seed
    assert (src[1:] != src[:-1]).mean() > 0.6
    other = get_task("patches32-rgb", n_train=600, n_test=400, seed=4).truth["test_source"].numpy()
    assert not np.array_equal(src, other)
    train_src = task.truth["train_source"].numpy()
    assert np.all(np.abs(np.bincount(train_src, minlength=5) - 600 * np.bincount(tr_src) / len(tr_src)) < 2.0)


def test_proportional_order_is_a_permutation_with_proportional_prefixes():
    labels = np.repeat(np.arange(4), [50, 7, 120, 23])
    for seed in range(3):
        order = _proportional_order(labels, torch.Generator().manual_seed(seed))
        assert sorted(order) == list(range(len(labels)))
        share = np.bincount(labels) / len(labels)
        for m in range(1, len(labels) + 1):
            assert np.all(np.abs(np.bincount(labels[order[:m]], minlength=4) - m * share) < 2.0)
