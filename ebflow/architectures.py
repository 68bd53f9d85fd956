"""EBFlow architectures of the paper, each returned as an :class:`ebflow.EBFlow` (CPU, default dtype).

Move them with ``.to(device, dtype)``.
"""

from __future__ import annotations


from collections.abc import Callable

from torch import nn

from .layers import ActNorm, AffineCoupling, Conv2d, Dense, Layer, SmoothLeakyReLU
from .model import EBFlow

__all__ = ["fully_connected", "dense_stack", "cnn", "coupling", "toy2d"]


def _interleave(linear: list[Layer], alpha: float, residual: bool = False) -> list[Layer]:
    """``linear[0], act, linear[1], act, ..., linear[-1]``: an activation between consecutive linear layers."""
    layers: list[Layer] = []
    for i, layer in enumerate(linear):
        if i:
            layers.append(SmoothLeakyReLU(alpha, residual=residual))
        layers.append(layer)
    return layers


def _check_layers(num_layers: int) -> None:
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")


def dense_stack(dim: int, num_layers: int, dense: Callable[[], Layer], *, alpha: float = 0.3, residual: bool = False,
                preprocessing: nn.Module | None = None) -> EBFlow:
    """The FC model's shape with any dense layer: ``num_layers`` layers built by ``dense()``, a smooth leaky ReLU
    ``alpha`` (``residual``: the CIFAR-10 form) between consecutive ones. :func:`fully_connected` is it with
    :class:`Dense`; the baselines' LU-dense, SNF and relative-gradient models use it with their own layers."""
    _check_layers(num_layers)
    return EBFlow(_interleave([dense() for _ in range(num_layers)], alpha, residual), (dim,), preprocessing)


def fully_connected(dim: int, num_layers: int = 2, *, alpha: float = 0.3, neg_init: bool = True,
                    bias: bool = True, init: str = "identity", bias_init: float = 1.0, residual: bool = False,
                    preprocessing: nn.Module | None = None) -> EBFlow:
    """``L`` dense ``D x D`` layers with a smooth leaky ReLU between consecutive ones (paper's FC model: L = 2).

    Defaults follow EBFlow's MNIST configs (``models/mnist/fc.py``): ``W = -I`` (``neg_init``), bias initialised
    to ones, alpha 0.3. ``residual=True`` is the CIFAR-10 FC model (``models/cifar/fc.py``): the same dense
    layers with the residual activation ``x + alpha x + (1 - alpha) softplus(x)`` between them.
    """
    return dense_stack(dim, num_layers, lambda: Dense(dim, bias=bias, init=init, neg_init=neg_init,
                                                      bias_init=bias_init),
                       alpha=alpha, residual=residual, preprocessing=preprocessing)


def cnn(shape: tuple[int, int, int], num_layers: int = 2, *, kernel_size: int = 3, alpha: float = 0.3,
        neg_init: bool = True, bias: bool = True, init: str = "identity", bias_init: float = 1.0,
        preprocessing: nn.Module | None = None) -> EBFlow:
    """``L`` ``C -> C`` "same" convolutions (arbitrary kernels) with smooth leaky ReLUs between them.

    Data are flat ``[B, C*H*W]``; the model views them as images. Choice where the paper's text is silent:
    the same initialisation as :func:`fully_connected` applied to the centre tap.
    """
    _check_layers(num_layers)
    convs = [Conv2d(shape, kernel_size, bias=bias, init=init, neg_init=neg_init, bias_init=bias_init)
             for _ in range(num_layers)]
    return EBFlow(_interleave(convs, alpha), tuple(shape), preprocessing)


def coupling(dim: int, num_blocks: int = 10, *, hidden: int = 64, init: str = "orthogonal",
             preprocessing: nn.Module | None = None) -> EBFlow:
    """``num_blocks`` x [dense ``D x D``, affine coupling (alternating masks), ActNorm] (EBFlow's toy model)."""
    _check_layers(num_blocks)
    if dim < 2:
        raise ValueError(f"coupling flows need dim >= 2, got {dim}")
    layers: list[Layer] = []
    for b in range(num_blocks):
        layers += [Dense(dim, init=init), AffineCoupling(dim, hidden=hidden, parity=b), ActNorm(dim)]
    return EBFlow(layers, (dim,), preprocessing)


def toy2d(num_blocks: int = 10, hidden: int = 64) -> EBFlow:
    """The paper's 2-D toy model: ``num_blocks`` x [dense 2x2 (orthogonal init), coupling, ActNorm]."""
    return coupling(2, num_blocks, hidden=hidden)


