"""Invertible layers of an EBFlow, split into linear and non-linear ones.

Every layer maps ``x -> y`` and keeps the batch shape it receives (flat ``[B, D]`` or image ``[B, C, H, W]``).

- **Linear layers** (``linear = True``): ``y = A x + b`` with a Jacobian ``A`` that does not depend on ``x``.
  ``forward`` returns ``(y, None)``; ``const_logdet()`` returns ``log|det A|`` computed from the parameters
  (``O(D^3)`` for dense matrices and convolutions). Score-matching objectives never call it.
- **Non-linear layers** (``linear = False``): ``forward`` returns ``(y, logdet)`` with the per-sample
  ``log|det dy/dx|`` as a ``[B]`` tensor; ``const_logdet()`` raises.

``inverse(y)`` inverts every layer exactly (linear solves, Newton iterations for the smooth leaky ReLU).

Explicit derivatives (used by :meth:`ebflow.EBFlow.energy_score`, which computes the score and a second
directional derivative of the energy with ordinary differentiable ops instead of nested autograd passes):

- linear layers implement ``linear_map(x) = A x`` (no bias), ``add_bias(y)`` and ``transpose_map(g) = A^T g``;
- element-wise layers (:class:`Elementwise`: ``y_i = g(x_i)``, ``log|det| = sum_i l(x_i)`` with
  ``l = log|g'|``) implement ``derivatives(x, order)``: ``g, l`` and, by order, ``g', l'``, ``g'', l''`` and
  ``g'''`` and ``l'''`` in closed form (the third order is what the fused score-matching sweep of dense models,
  :mod:`ebflow.sweep`, needs for the parameter gradient of the second directional derivative); ``max_order``
  says how far a layer goes.
Layers with neither (couplings) make the model fall back to autograd.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Layer", "Elementwise", "Dense", "Conv2d", "ActNorm", "SmoothLeakyReLU", "Logit", "Sigmoid", "AffineCoupling",
]


def _sum_per_sample(t: Tensor) -> Tensor:
    """Sum over every dimension but the first (batch)."""
    return t.reshape(t.shape[0], -1).sum(dim=1)


class Layer(nn.Module):
    """Base class. Subclasses set ``linear`` and implement ``forward`` and ``inverse``."""

    linear: ClassVar[bool] = False

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def const_logdet(self) -> Tensor:
        """``log|det J|`` of a linear layer (a scalar depending only on the parameters)."""
        raise TypeError(f"{type(self).__name__} is non-linear: its log-det depends on x and is returned by forward")


def _init_square(dim: int, init: str, neg_init: bool) -> Tensor:
    if init == "identity":
        w = torch.eye(dim)
    elif init == "orthogonal":
        w = nn.init.orthogonal_(torch.empty(dim, dim))
    else:
        raise ValueError(f"unknown init {init!r}; expected 'identity' or 'orthogonal'")
    return -w if neg_init else w


class Dense(Layer):
    """``y = W x + b`` with an unconstrained ``D x D`` matrix ``W`` (no triangular or LU structure).

    ``log|det W|`` by ``torch.linalg.slogdet`` and the inverse by ``torch.linalg.solve`` (both ``O(D^3)``).
    Initialisation: ``W = I`` or a random orthogonal matrix, negated with ``neg_init`` (EBFlow's MNIST models
    use ``-I``); ``b = bias_init`` (the EBFlow code initialises the bias to ones).
    Image-shaped inputs are flattened for the product and reshaped back.
    """

    linear = True

    def __init__(self, dim: int, *, bias: bool = True, init: str = "identity", neg_init: bool = False,
                 bias_init: float = 0.0) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"Dense: dim must be positive, got {dim}")
        self.dim = dim
        self.weight = nn.Parameter(_init_square(dim, init, neg_init))
        self.bias = nn.Parameter(torch.full((dim,), float(bias_init))) if bias else None

    def _flat(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"Dense({self.dim}) got input with {flat.shape[1]} features per sample")
        return flat

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        return F.linear(self._flat(x), self.weight, self.bias).view_as(x), None

    def linear_map(self, x: Tensor) -> Tensor:
        return F.linear(self._flat(x), self.weight).view_as(x)

    def transpose_map(self, g: Tensor) -> Tensor:
        return (self._flat(g) @ self.weight).view_as(g)

    def add_bias(self, y: Tensor) -> Tensor:
        return y if self.bias is None else y + self.bias.view(y.shape[1:])

    def inverse(self, y: Tensor) -> Tensor:
        flat = self._flat(y)
        if self.bias is not None:
            flat = flat - self.bias
        return torch.linalg.solve(self.weight, flat.T).T.reshape(y.shape)

    def const_logdet(self) -> Tensor:
        return torch.linalg.slogdet(self.weight)[1]


class Conv2d(Layer):
    """``C -> C`` convolution with an arbitrary ``k x k`` kernel, stride 1 and zero "same" padding.

    As a linear map on ``C*H*W`` pixels it is a (block-Toeplitz) ``D x D`` matrix ``M``; nothing constrains ``M``
    to be invertible, as in EBFlow. ``M`` is built exactly by convolving the ``D`` identity basis images, so
    ``const_logdet`` (slogdet of ``M``) and ``inverse`` (a solve with ``M``) cost ``O(D^3)``: fine for the
    image sizes of the paper, and only needed for the exact NLL and sampling. The layer must know its input
    ``shape = (C, H, W)`` to form ``M``. Initialisation: the centre tap is the identity (or a random orthogonal
    ``C x C`` matrix), negated with ``neg_init``; the other taps are zero.
    """

    linear = True
    #: energy_score maps the primal and its tangents with separate convolutions: CPU's convolution backward
    #: (oneDNN) is superlinear in the batch at few channels (a 3x batch cost 6x at C = 1), unlike a GEMM
    stack_tangents: ClassVar[bool] = False

    def __init__(self, shape: tuple[int, int, int], kernel_size: int = 3, *, bias: bool = True,
                 init: str = "identity", neg_init: bool = False, bias_init: float = 0.0) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ValueError(f"Conv2d: shape must be (C, H, W), got {shape}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"Conv2d: kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.shape = tuple(int(s) for s in shape)
        self.dim = math.prod(self.shape)
        c = self.shape[0]
        w = torch.zeros(c, c, kernel_size, kernel_size)
        w[:, :, kernel_size // 2, kernel_size // 2] = _init_square(c, init, neg_init)
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.full((c,), float(bias_init))) if bias else None
        self.padding = kernel_size // 2

    def _image(self, x: Tensor) -> Tensor:
        if math.prod(x.shape[1:]) != self.dim:
            raise ValueError(f"Conv2d{self.shape} got input of shape {tuple(x.shape)}")
        return x.reshape(x.shape[0], *self.shape)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        y = F.conv2d(self._image(x), self.weight, self.bias, padding=self.padding)
        return y.reshape(x.shape), None

    def linear_map(self, x: Tensor) -> Tensor:
        return F.conv2d(self._image(x), self.weight, padding=self.padding).reshape(x.shape)

    def transpose_map(self, g: Tensor) -> Tensor:
        # the adjoint of a stride-1 "same" convolution (the transposed convolution with the same padding) is the
        # convolution with the kernel's channels swapped and taps flipped; written so, it runs on the same fast
        # convolution kernels as forward (CPU's conv_transpose2d took 3x longer at C = 1)
        adjoint = self.weight.transpose(0, 1).flip(2, 3)
        return F.conv2d(self._image(g), adjoint, padding=self.padding).reshape(g.shape)

    def add_bias(self, y: Tensor) -> Tensor:
        if self.bias is None:
            return y
        return (self._image(y) + self.bias.view(1, -1, 1, 1)).reshape(y.shape)

    def matrix(self) -> Tensor:
        """The dense ``D x D`` matrix ``M`` with ``conv(x) - bias = M x`` on flattened images."""
        eye = torch.eye(self.dim, dtype=self.weight.dtype, device=self.weight.device)
        columns = F.conv2d(eye.view(self.dim, *self.shape), self.weight, padding=self.padding)
        return columns.reshape(self.dim, self.dim).T

    def inverse(self, y: Tensor) -> Tensor:
        img = self._image(y)
        if self.bias is not None:
            img = img - self.bias.view(1, -1, 1, 1)
        x = torch.linalg.solve(self.matrix(), img.reshape(y.shape[0], -1).T).T
        return x.reshape(y.shape)

    def const_logdet(self) -> Tensor:
        return torch.linalg.slogdet(self.matrix())[1]


class ActNorm(Layer):
    """Per-feature affine map ``y = x * exp(log_scale) + bias`` (linear, ``log|det| = sum log_scale``).

    Parameters have the shape of one sample (``(D,)`` or ``(C, 1, 1)`` per channel for images) and start at the
    identity. Choice where the paper is silent: no data-dependent initialisation (the layer stays a pure
    function of its parameters, so the log-det cache and EMA need no special case).
    """

    linear = True

    def __init__(self, shape: int | tuple[int, ...]) -> None:
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if len(shape) == 3:  # per channel for images
            self.event_shape: tuple[int, ...] = shape
            param_shape: tuple[int, ...] = (shape[0], 1, 1)
        else:
            self.event_shape = shape
            param_shape = shape
        self.log_scale = nn.Parameter(torch.zeros(param_shape))
        self.bias = nn.Parameter(torch.zeros(param_shape))

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        xs = x.reshape(x.shape[0], *self.event_shape)
        return (xs * self.log_scale.exp() + self.bias).reshape(x.shape), None

    def linear_map(self, x: Tensor) -> Tensor:
        return (x.reshape(x.shape[0], *self.event_shape) * self.log_scale.exp()).reshape(x.shape)

    transpose_map = linear_map  # diagonal

    def add_bias(self, y: Tensor) -> Tensor:
        return (y.reshape(y.shape[0], *self.event_shape) + self.bias).reshape(y.shape)

    def inverse(self, y: Tensor) -> Tensor:
        ys = y.reshape(y.shape[0], *self.event_shape)
        return ((ys - self.bias) * torch.exp(-self.log_scale)).reshape(y.shape)

    def const_logdet(self) -> Tensor:
        ld = self.log_scale.sum()
        if len(self.event_shape) == 3:
            ld = ld * self.event_shape[1] * self.event_shape[2]
        return ld


class Elementwise(Layer):
    """Non-linear element-wise bijection ``y_i = g(x_i)`` with ``log|det| = sum_i l(x_i)``, ``l = log|g'|``.

    Subclasses implement :meth:`derivatives` in closed form; ``forward`` is its order-0 part. The first and
    second derivatives are what :meth:`ebflow.EBFlow.energy_score` needs for the score (``g'``, ``l'``) and for
    the second directional derivative of the energy (``g''``, ``l''``), without autograd re-deriving them.
    """

    linear = False
    #: highest order :meth:`derivatives` implements (2 suffices for :meth:`ebflow.EBFlow.energy_score`'s
    #: explicit sweep; 3 lets dense models use the fused sweep of :mod:`ebflow.sweep`)
    max_order: ClassVar[int] = 2

    def derivatives(self, x: Tensor, order: int = 0) -> tuple[Tensor, ...]:  # pragma: no cover - abstract
        """Element-wise ``(g, l)`` (order 0), ``+ (g', l')`` (order 1), ``+ (g'', l'')`` (order 2), ``+ (g3, l3)``
        (third derivatives, order 3, where :attr:`max_order` >= 3)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, ld = self.derivatives(x, 0)
        return y, _sum_per_sample(ld)


class SmoothLeakyReLU(Elementwise):
    """Element-wise ``y = alpha x + (1 - alpha) softplus(x)``, ``dy/dx = alpha + (1 - alpha) sigmoid(x)``.

    With ``residual=True`` (EBFlow's CIFAR-10 FC model, ``models/cifar/fc.py``) the input is added back:
    ``y = x + alpha x + (1 - alpha) softplus(x)``, slope ``1 + alpha + (1 - alpha) sigmoid(x)`` in
    ``(1 + alpha, 2)``; the higher derivatives are those of the plain form (the ``+ x`` is linear).

    The slope lies in ``(m, m + 1 - alpha)`` with ``m = alpha`` (plain) or ``1 + alpha`` (residual), so the
    map is a bijection of R. The inverse has no closed form: it runs Newton's method inside a bracket that
    provably contains the root (``|x - y| <= |y - g(y)| / m``) and falls back to bisection whenever a Newton
    step leaves the bracket, until ``|g(x) - y|`` reaches the dtype's tolerance. Derivatives share one sigmoid
    ``sig``: ``g'' = (1 - alpha) sig (1 - sig)``, third ``g3 = g'' (1 - 2 sig)``, fourth
    ``g4 = g'' (1 - 6 sig + 6 sig^2)``; ``l' = g'' / g'``, ``l'' = g3 / g' - l'^2``,
    ``l3 = g4 / g' - l' g3 / g' - 2 l' l''``.
    """

    max_order = 3

    def __init__(self, alpha: float = 0.3, *, residual: bool = False, max_iter: int = 100) -> None:
        super().__init__()
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"SmoothLeakyReLU: alpha must lie in (0, 1), got {alpha}")
        self.alpha = float(alpha)
        self.residual = bool(residual)
        #: the linear part's slope: alpha, plus 1 for the residual form (also the slope's lower bound)
        self.linear_slope = self.alpha + (1.0 if self.residual else 0.0)
        self.max_iter = max_iter

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + (", residual=True" if self.residual else "")

    def _g(self, x: Tensor) -> Tensor:
        return self.linear_slope * x + (1.0 - self.alpha) * F.softplus(x)

    def _slope(self, x: Tensor) -> Tensor:
        return self.linear_slope + (1.0 - self.alpha) * torch.sigmoid(x)

    def derivatives(self, x: Tensor, order: int = 0) -> tuple[Tensor, ...]:
        sig = torch.sigmoid(x)
        g1 = self.linear_slope + (1.0 - self.alpha) * sig
        out: tuple[Tensor, ...] = (self._g(x), torch.log(g1))
        if order >= 1:
            g2 = (1.0 - self.alpha) * (sig - sig * sig)
            l1 = g2 / g1
            out += (g1, l1)
            if order >= 2:
                t = 1.0 - 2.0 * sig
                g3_g1 = g2 * t / g1  # g3 / g'
                l2 = g3_g1 - l1 * l1
                out += (g2, l2)
                if order >= 3:
                    g4_g1 = g2 * (t * t - 2.0 * (sig - sig * sig)) / g1
                    out += (g3_g1 * g1, g4_g1 - l1 * g3_g1 - 2.0 * l1 * l2)
        return out

    def inverse(self, y: Tensor) -> Tensor:
        tol = 1e-12 if y.dtype == torch.float64 else 1e-5
        with torch.no_grad():
            # widened by 0.1%: the bound is tight where g is nearly linear (x << 0: root = y / m), and a
            # Newton step that lands on it by rounding would be rejected for slow bisection
            radius = (y - self._g(y)).abs() / self.linear_slope * 1.001 + tol
            lo, hi = y - radius, y + radius
            x = y.clone()
            for _ in range(self.max_iter):
                r = self._g(x) - y
                if bool((r.abs() <= tol * (1.0 + y.abs())).all()):
                    break
                lo = torch.where(r < 0, x, lo)
                hi = torch.where(r > 0, x, hi)
                step = x - r / self._slope(x)
                x = torch.where((step > lo) & (step < hi), step, 0.5 * (lo + hi))
        return x


class Logit(Elementwise):
    """``y = logit(lam + (1 - 2 lam) x)`` for ``x`` in ``[0, 1]`` (``lam`` keeps it finite at 0 and 1).

    ``log|dy/dx| = log(1 - 2 lam) - log(p) - log(1 - p)`` with ``p = lam + (1 - 2 lam) x``, summed per sample;
    with ``c = 1 - 2 lam`` and ``q = p (1 - p)``: ``g' = c / q``, ``l' = c (2p - 1) / q``,
    ``g'' = c^2 (2p - 1) / q^2``, ``l'' = c^2 (1 / p^2 + 1 / (1 - p)^2)``; third derivatives
    ``g3 = 2 c^3 (1 / p^3 + 1 / (1 - p)^3)``, ``l3 = 2 c^3 (1 / (1 - p)^3 - 1 / p^3)``.
    """

    max_order = 3

    def __init__(self, lam: float = 1e-6) -> None:
        super().__init__()
        if not 0.0 <= lam < 0.5:
            raise ValueError(f"Logit: lam must lie in [0, 0.5), got {lam}")
        self.lam = float(lam)

    def derivatives(self, x: Tensor, order: int = 0) -> tuple[Tensor, ...]:
        c = 1.0 - 2.0 * self.lam
        p = self.lam + c * x
        log_p, log_q = torch.log(p), torch.log1p(-p)  # each computed once for y and the log-det
        out: tuple[Tensor, ...] = (log_p - log_q, math.log1p(-2.0 * self.lam) - log_p - log_q)
        if order >= 1:
            inv_p, inv_q = 1.0 / p, 1.0 / (1.0 - p)
            g1 = c * inv_p * inv_q
            out += (g1, c * (inv_q - inv_p))
            if order >= 2:
                out += (g1 * (c * (inv_q - inv_p)), c * c * (inv_p * inv_p + inv_q * inv_q))
                if order >= 3:
                    p3, q3 = inv_p * inv_p * inv_p, inv_q * inv_q * inv_q
                    out += (2.0 * c ** 3 * (p3 + q3), 2.0 * c ** 3 * (q3 - p3))
        return out

    def inverse(self, y: Tensor) -> Tensor:
        return (torch.sigmoid(y) - self.lam) / (1.0 - 2.0 * self.lam)


class Sigmoid(Layer):
    """``y = (sigmoid(x) - lam) / (1 - 2 lam)``: the inverse of :class:`Logit`, mapping R to ``[0, 1]``."""

    linear = False

    def __init__(self, lam: float = 0.0) -> None:
        super().__init__()
        self._logit = Logit(lam)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self._logit.inverse(x)
        # log|dy/dx| = log sigmoid(x) + log sigmoid(-x) - log(1 - 2 lam)
        ld = F.logsigmoid(x) + F.logsigmoid(-x) - math.log1p(-2.0 * self._logit.lam)
        return y, _sum_per_sample(ld)

    def inverse(self, y: Tensor) -> Tensor:
        return self._logit(y)[0]


class AffineCoupling(Layer):
    """Affine coupling (RealNVP): features with ``mask == 1`` pass through and condition the others,

    ``y = m * x + (1 - m) * (x * exp(s) + t)``, ``(s_raw, t) = MLP(m * x)``, ``s = bound * tanh(s_raw / bound)``.

    The tanh bound on the log-scale (choice where the paper is silent: ``bound = 2``) keeps the layer well
    conditioned. The MLP has two hidden layers of width ``hidden`` with SiLU ("swish", as in EBFlow's toy
    models); its output layer starts at zero so the layer starts as the identity. The default mask keeps the
    features whose index has parity ``parity``. ``log|det| = sum (1 - m) * s`` per sample.
    """

    linear = False

    def __init__(self, dim: int, *, hidden: int = 64, mask: Tensor | None = None, parity: int = 0,
                 bound: float = 2.0) -> None:
        super().__init__()
        if mask is None:
            mask = (torch.arange(dim) % 2 == parity % 2)
        mask = torch.as_tensor(mask, dtype=torch.get_default_dtype()).reshape(-1)
        if mask.numel() != dim:
            raise ValueError(f"AffineCoupling: mask has {mask.numel()} entries, expected {dim}")
        if not bool(((mask == 0) | (mask == 1)).all()) or mask.sum() in (0, dim):
            raise ValueError("AffineCoupling: mask must be 0/1 with at least one entry of each")
        self.dim = dim
        self.bound = float(bound)
        self.register_buffer("mask", mask)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 2 * dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _params(self, x_cond: Tensor) -> tuple[Tensor, Tensor]:
        s_raw, t = self.net(x_cond).chunk(2, dim=1)
        s = self.bound * torch.tanh(s_raw / self.bound)
        free = 1.0 - self.mask
        return s * free, t * free

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        flat = x.reshape(x.shape[0], -1)
        s, t = self._params(flat * self.mask)
        y = flat * torch.exp(s) + t  # s = t = 0 on the conditioning features
        return y.reshape(x.shape), s.sum(dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        flat = y.reshape(y.shape[0], -1)
        s, t = self._params(flat * self.mask)
        return ((flat - t) * torch.exp(-s)).reshape(y.shape)
