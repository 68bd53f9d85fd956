"""Training-batch augmentations of image tasks (task option ``augment``), drawn from the cell's generator.

``augment="cifar"`` is the official EBFlow CIFAR-10 training augmentation (``real_world/ebflow/datasets/
cifar10.py``, ``data_aug`` 1), applied per image of each training batch by :meth:`Task.augment`; the test set
is never augmented. The official pipeline, on the integer (uint8) image:

1. ``RandomHorizontalFlip()``: flip when a uniform draw is below 0.5;
2. ``Pad(ceil(32 * 0.04), padding_mode='edge')``: 2 pixels of edge replication, 32 -> 36;
3. ``RandomAffine(degrees=0, translate=(0.04, 0.04))``: an integer shift ``t = round(U(-0.04 * 36, 0.04 * 36))``
   per axis (so -1, 0 or +1 with probabilities 0.326 / 0.347 / 0.326), nearest pixel, fill 0 outside;
   ``out[y, x] = in[y - ty, x - tx]``;
4. ``CenterCrop(32)``: rows and columns from ``round((36 - 32) / 2) = 2``;
5. ``RandomHorizontalFlip()`` again;

then ``ToTensorNoNorm`` (integers, C x H x W) and the model's ``Dequantization`` layer (fresh uniform noise
each batch). Here the task's data are already dequantized, ``x = (k + u) / s``: the augmentation recovers the
integers ``k = floor(s x)`` (clamped to ``[0, s - 1]``), applies steps 1-5 to them and dequantizes the result
with fresh noise, ``(k' + u') / s``, as the official code does after augmenting (so the edge-replicated pixels
get their own noise). On an image of another size the same rule is applied with ``H`` and ``W`` in place of 32
(pad ``ceil(0.04 H)``, shift ``round(U(-0.04 H', 0.04 H'))`` with ``H' = H + 2 pad``, crop back to ``H x W``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .._lazy import lazy

torch = lazy("torch")  # imported when a task is built (the static checks read only declarations)

if TYPE_CHECKING:
    from torch import Tensor

#: fraction of the side: the pad (ceil(32 * 0.04) in the official code) and the maximal translation
CIFAR_TRANSLATE = 0.04


def _flip_where(x: Tensor, flip: Tensor) -> Tensor:
    """Horizontally flip (last axis) the images ``x [B, C, H, W]`` where ``flip [B]`` is true."""
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def _shift_and_crop(padded: Tensor, tx: Tensor, ty: Tensor, top: int, left: int, h: int, w: int) -> Tensor:
    """``RandomAffine``'s integer translation (fill 0) followed by the crop of ``h x w`` at (``top``, ``left``):
    ``out[b, :, y, x] = padded[b, :, y + top - ty[b], x + left - tx[b]]`` (0 outside ``padded``)."""
    b, _, hp, wp = padded.shape
    dev = padded.device
    rows = torch.arange(h, device=dev).view(1, h) + top - ty.view(b, 1)  # [B, h]
    cols = torch.arange(w, device=dev).view(1, w) + left - tx.view(b, 1)  # [B, w]
    valid = ((rows >= 0) & (rows < hp)).view(b, 1, h, 1) & ((cols >= 0) & (cols < wp)).view(b, 1, 1, w)
    idx_b = torch.arange(b, device=dev).view(b, 1, 1)
    out = padded[idx_b, :, rows.clamp(0, hp - 1).view(b, h, 1), cols.clamp(0, wp - 1).view(b, 1, w)]  # [B, h, w, C]
    return out.permute(0, 3, 1, 2) * valid


def cifar_parameters(n: int, h: int, w: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The random draws of the official CIFAR-10 augmentation for ``n`` images of ``h x w`` pixels, from
    ``generator`` (on its device) in the order first flip, shift x, shift y, second flip (each for all ``n``):
    ``(flip1 [n] bool, tx [n] long, ty [n] long, flip2 [n] bool)``."""

    def draw() -> Tensor:
        return torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device)

    hp, wp = h + 2 * math.ceil(CIFAR_TRANSLATE * h), w + 2 * math.ceil(CIFAR_TRANSLATE * w)
    flip1 = draw() < 0.5  # RandomHorizontalFlip: flip if torch.rand(1) < p
    max_dx, max_dy = CIFAR_TRANSLATE * wp, CIFAR_TRANSLATE * hp  # RandomAffine.get_params: translate * (W, H)
    tx = torch.round(draw() * (2 * max_dx) - max_dx).long()  # round(uniform(-max_dx, max_dx))
    ty = torch.round(draw() * (2 * max_dy) - max_dy).long()
    flip2 = draw() < 0.5
    return flip1, tx, ty, flip2


def cifar_apply(k: Tensor, flip1: Tensor, tx: Tensor, ty: Tensor, flip2: Tensor) -> Tensor:
    """Steps 1-5 of the official CIFAR-10 augmentation with the given draws, on integer-valued images
    ``k [B, C, H, W]`` (any float dtype and device)."""
    _, _, h, w = k.shape
    ph, pw = math.ceil(CIFAR_TRANSLATE * h), math.ceil(CIFAR_TRANSLATE * w)
    hp, wp = h + 2 * ph, w + 2 * pw
    dev = k.device
    x = _flip_where(k, flip1.to(dev))
    x = torch.nn.functional.pad(x, (pw, pw, ph, ph), mode="replicate")  # Pad(..., padding_mode='edge')
    top, left = int(round((hp - h) / 2.0)), int(round((wp - w) / 2.0))  # CenterCrop's offsets
    x = _shift_and_crop(x, tx.to(dev), ty.to(dev), top, left, h, w)
    return _flip_where(x, flip2.to(dev))


def dequantize(k: Tensor, u: Tensor, scale: float, dtype: torch.dtype) -> Tensor:
    """``(k + u) / scale`` in ``dtype``, kept below ``(k + 1) / scale``: rounding to ``dtype`` would otherwise put
    a value whose noise ``u`` lies within half a ``dtype`` step of 1 on the next level (about 1e-5 of float32
    pixels at scale 256), and then ``floor(scale x)`` would not give ``k`` back (nor ``x < 1`` hold)."""
    x = ((k + u) / scale).to(dtype)
    top = ((k + 1.0) / scale).to(dtype)
    return torch.minimum(x, torch.nextafter(top, torch.zeros_like(top)))


def cifar(batch: Tensor, image_shape: tuple[int, int, int], scale: float, generator: torch.Generator) -> Tensor:
    """The official CIFAR-10 training augmentation of a dequantized batch ``[B, C*H*W]`` (module docstring):
    integers recovered, augmented, dequantized again with fresh noise from ``generator``."""
    b = batch.shape[0]
    levels = int(round(scale))
    k = torch.floor(batch.double() * scale).clamp_(0, levels - 1).view(b, *image_shape)
    k = cifar_apply(k, *cifar_parameters(b, image_shape[1], image_shape[2], generator))
    u = torch.rand(tuple(k.shape), generator=generator, dtype=torch.float64, device=generator.device)
    return dequantize(k, u.to(k.device), scale, batch.dtype).reshape(batch.shape)


#: option value -> augmentation(batch, image_shape, discrete_scale, generator)
AUGMENTATIONS = {"cifar": cifar}
