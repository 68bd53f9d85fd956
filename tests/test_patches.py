"""The large-D image-patch task: shapes, range, and train/test regions that share no pixel."""

import numpy as np
import torch

from ebflow_bench.tasks import _region_patches, bits_per_dim, get_task


def test_patches32_shapes_and_range():
    t = get_task("patches32", n_train=500, n_test=100, seed=3)
    assert t.train.shape == (500, 1024) and t.test.shape == (100, 1024)
    assert t.image_shape == (1, 32, 32) and t.discrete_scale == 256.0
    for x in (t.train, t.test):
        assert float(x.min()) >= 0.0 and float(x.max()) < 1.0
    again = get_task("patches32", n_train=500, n_test=100, seed=3)
    assert torch.equal(t.train, again.train) and torch.equal(t.test, again.test)
    assert not torch.equal(t.train, get_task("patches32", n_train=500, n_test=100, seed=4).train)
    # uniform density on the pixel cube: 8 bits/dim
    assert abs(bits_per_dim(torch.zeros(1), t).item() - 8.0) < 1e-6


def test_region_patches_do_not_share_pixels():
    # patches of the test region are cut from rows the training patches never touch: no patch is shared
    tr, te = _region_patches(32, 8, 0.25)
    assert tr.shape[1] == te.shape[1] == 1024
    assert len(tr) == 5 * 45 * 61 and len(te) == 5 * 13 * 61
    assert not (set(map(bytes, tr[:, :].astype(np.int16))) & set(map(bytes, te.astype(np.int16))))
