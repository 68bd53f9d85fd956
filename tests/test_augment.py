"""Task option augment="cifar": the official CIFAR-10 training augmentation per batch, from the cell's generator.

The reference in these tests is written independently in numpy (edge padding, integer shift, crop, flips); the
augmentation module itself was also checked once against torchvision's own ops on PIL images
(docs/ARCHITECTURE.md, Tasks).
"""

import itertools

import numpy as np
import pytest
import torch

from ebflow_bench.tasks import Task, get_task
from ebflow_bench.tasks.augment import cifar_apply, cifar_parameters, dequantize
from ebflow_bench.tasks.base import augment_task


def _image_task(n: int = 64, shape=(3, 32, 32), seed: int = 0) -> Task:
    g = torch.Generator().manual_seed(seed)
    dim = int(np.prod(shape))
    k = torch.randint(0, 256, (2 * n, dim), generator=g).double()
    x = dequantize(k, torch.rand(k.shape, generator=g, dtype=torch.float64), 256, torch.float32)
    return Task("img", dim, x[:n], x[n:], image_shape=shape, discrete_scale=256.0)


def _reference(img: np.ndarray, net_flip: int, tx: int, ty: int) -> np.ndarray:
    """The official pipeline on one integer C x H x W image with the second flip folded in (flip, pad 2 by edge
    replication, shift by (tx, ty) with fill 0, crop 32 at offset 2), written with numpy."""
    x = img[:, :, ::-1] if net_flip else img
    p = np.pad(x, ((0, 0), (2, 2), (2, 2)), mode="edge")
    shifted = np.zeros_like(p)  # shifted[:, y, x] = p[:, y - ty, x - tx], 0 where that is outside p
    hp, wp = p.shape[1:]
    shifted[:, max(ty, 0):hp + min(ty, 0), max(tx, 0):wp + min(tx, 0)] = \
        p[:, max(-ty, 0):hp - max(ty, 0), max(-tx, 0):wp - max(tx, 0)]
    return shifted[:, 2:34, 2:34]


def test_deterministic_given_the_generator_shape_and_range_preserved():
    task = augment_task(_image_task(), "cifar")
    batch = task.train[:32]
    a = task.augment(batch, torch.Generator().manual_seed(5))
    b = task.augment(batch, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == batch.shape and a.dtype == batch.dtype
    assert float(a.min()) >= 0.0 and float(a.max()) < 1.0
    gen = torch.Generator().manual_seed(5)
    first, second = task.augment(batch, gen), task.augment(batch, gen)  # fresh draws on every call
    assert not torch.equal(first, second)
    assert not torch.equal(task.augment(batch, torch.Generator().manual_seed(6)), a)


def test_integers_are_the_official_pipeline_with_the_drawn_parameters_and_fresh_noise():
    task = augment_task(_image_task(), "cifar")
    batch = task.train[:48]
    out = task.augment(batch, torch.Generator().manual_seed(1))
    flip1, tx, ty, flip2 = cifar_parameters(48, 32, 32, torch.Generator().manual_seed(1))
    k_in = torch.floor(batch.double() * 256).view(48, 3, 32, 32)
    k_out = torch.floor(out.double() * 256).view(48, 3, 32, 32)
    assert torch.equal(k_out, cifar_apply(k_in, flip1, tx, ty, flip2))
    for i in range(48):
        net = int(flip1[i] ^ flip2[i])
        sx = int(tx[i]) * (-1 if flip2[i] else 1)  # a flip after the shift mirrors its direction
        ref = _reference(k_in[i].numpy(), net, sx, int(ty[i]))
        assert np.array_equal(k_out[i].numpy(), ref), i
    # dequantization noise is drawn afresh (the official Dequantization runs after the augmentation)
    same = (flip1 == flip2) & (tx == 0) & (ty == 0)
    assert bool(same.any())
    i = int(torch.nonzero(same)[0])
    assert torch.equal(k_out[i], k_in[i]) and not torch.equal(out[i], batch[i])


def test_flips_and_translations_happen_with_the_official_frequencies():
    """Every augmented image is one of the 2 x 3 x 3 official outcomes (net flip, shift x, shift y in {-1, 0, 1}),
    all of them occur, the net flip is a fair coin, a zero shift has probability 1 / 2.88 per axis
    (round(U(-1.44, 1.44)))."""
    img = torch.randint(0, 256, (1, 3 * 32 * 32), generator=torch.Generator().manual_seed(0)).double()
    task = augment_task(_image_task(), "cifar")
    n = 600
    batch = dequantize(img.expand(n, -1), torch.rand(n, 3072, generator=torch.Generator().manual_seed(1),
                                                    dtype=torch.float64), 256, torch.float32)
    k_out = torch.floor(task.augment(batch, torch.Generator().manual_seed(2)).double() * 256).numpy()
    base = img.view(3, 32, 32).numpy()
    outcomes = {}
    for net, tx, ty in itertools.product((0, 1), (-1, 0, 1), (-1, 0, 1)):
        outcomes.setdefault(_reference(base, net, tx, ty).tobytes(), (net, tx, ty))
    assert len(outcomes) == 18  # a random image tells every outcome apart
    seen = [outcomes[row.reshape(3, 32, 32).tobytes()] for row in k_out]  # KeyError: not an official outcome
    assert set(seen) == set(outcomes.values())
    flips = np.array([s[0] for s in seen])
    zero_x = np.array([s[1] == 0 for s in seen])
    zero_y = np.array([s[2] == 0 for s in seen])
    for freq, p in ((flips.mean(), 0.5), (zero_x.mean(), 1 / 2.88), (zero_y.mean(), 1 / 2.88)):
        assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n)
    # the draws themselves, many of them: shifts in {-1, 0, 1} with P(0) = 1 / 2.88 (the 4% of the padded 36,
    # not of 32: that would give 1 / 2.56), symmetric; two fair flips
    m = 40000
    flip1, tx, ty, flip2 = cifar_parameters(m, 32, 32, torch.Generator().manual_seed(3))
    for t in (tx, ty):
        assert set(t.tolist()) == {-1, 0, 1}
        assert abs((t == 0).double().mean().item() - 1 / 2.88) < 4 * np.sqrt(0.227 / m)
        assert abs((t == 1).double().mean().item() - (t == -1).double().mean().item()) < 0.02
    for f in (flip1, flip2):
        assert abs(f.double().mean().item() - 0.5) < 4 * np.sqrt(0.25 / m)


def test_option_on_get_task_leaves_train_and_test_untouched_and_is_recorded():
    raw = get_task("digits", n_train=100, n_test=50, seed=1)
    aug = get_task("digits", n_train=100, n_test=50, seed=1, augment="cifar")
    assert torch.equal(raw.train, aug.train) and torch.equal(raw.test, aug.test)
    assert aug.options["augment"] == "cifar" and aug.augmentation == "cifar" and "augment" not in raw.options
    batch = raw.train[:8]
    assert raw.augment(batch, torch.Generator()) is batch
    # 8 x 8 digits: pad 1, shift round(U(-0.4, 0.4)) = 0, so only flips; levels 0..16 stay integers of scale 17
    out = aug.augment(aug.train[:40], torch.Generator().manual_seed(0))
    k_in = torch.floor(aug.train[:40].double() * 17).view(40, 8, 8)
    k_out = torch.floor(out.double() * 17).view(40, 8, 8)
    flipped = torch.tensor([torch.equal(a, b.flip(-1)) and not torch.equal(a, b) for a, b in zip(k_out, k_in)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(k_out, k_in)])
    assert bool((flipped | kept).all()) and bool(flipped.any()) and bool(kept.any())
    for value in (None, "none"):
        assert get_task("digits", n_train=100, n_test=50, augment=value).augmentation == ""


def test_refused_on_non_image_tasks_and_unknown_modes():
    with pytest.raises(ValueError, match="'gaussian' does not support augment='cifar': it is not an image task"):
        get_task("gaussian", dim=3, augment="cifar")
    with pytest.raises(ValueError, match=r"augment must be one of \['cifar'\] or 'none', got 'mnist'"):
        get_task("digits", augment="mnist")


def test_a_cell_with_the_option_trains_on_augmented_batches(monkeypatch):
    """Part of the cell's settings (its id changes) and used by the runner: with the augmentation switched off
    the same cell ends elsewhere; with it, the cell repeats exactly."""
    from conftest import cell_spec
    from ebflow_bench.runner import run_cell

    def cell(**opts):
        return cell_spec("ebflow-ml", "digits", layers=1, seed=2, budget=3, hparams={"batch_size": 32},
                         task_options={"n_train": 128, "n_test": 32, **opts}, n_samples=8, checkpoints=0)

    def nll(rec):
        assert rec["status"] in ("ok", "degenerate"), rec["reason"]
        return next(r["value"] for r in rec["rows"] if r["metric"] == "test_nll")

    assert cell(augment="cifar").cell_id != cell().cell_id
    a, b = nll(run_cell(cell(augment="cifar"))[0]), nll(run_cell(cell(augment="cifar"))[0])
    monkeypatch.setattr("ebflow_bench.tasks.Task.augment", lambda self, batch, generator: batch)
    plain = nll(run_cell(cell(augment="cifar"))[0])
    assert a == b and abs(a - plain) > 1e-6
