"""EBFlow: a normalizing flow read as an energy-based model (Chao et al. 2023).

For a flow ``f`` with layers split into linear ``g_i`` and non-linear ``n_j`` and a standard normal base,

    log p(x) = log N(f(x); 0, I) + sum_j log|det J_nj(x)| + sum_i log|det J_gi|
             = -E(x) - log Z,        E(x) = -log N(f(x); 0, I) - sum_j log|det J_nj(x)|,
                                     log Z = -sum_i log|det J_gi|   (a function of the parameters only).

Score matching needs only ``grad_x E`` and never the ``O(D^3)`` linear log-dets; :meth:`EBFlow.linear_logdet`
computes them for the exact likelihood. With a MaP ``preprocessing`` (:mod:`ebflow.preprocessing`) the flow
acts on ``u = pre(x)``: ``energy(x) = E(pre(x))`` and ``log_prob`` adds the preprocessing log-det.

Data are flat ``[B, D]`` in and out; the layers see ``[B, *event_shape]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from . import sweep as _sweep
from .layers import Elementwise, Layer
from .layers import _sum_per_sample as _per_sample

__all__ = ["EBFlow", "randn"]


def randn(shape: Sequence[int], like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal draw with ``like``'s dtype and device; ``generator`` may live on another device."""
    device = like.device if generator is None else generator.device
    return torch.randn(tuple(shape), generator=generator, dtype=like.dtype, device=device).to(like.device)


class EBFlow(nn.Module):
    """Flow ``x -> z`` with energy, exact log-density, score, exact sampling and inversion.

    Args:
        layers: the flow's layers, applied in order from data to latent.
        event_shape: shape of one sample as the layers see it (``(D,)`` or ``(C, H, W)``).
        preprocessing: optional fixed bijection (``forward(x) -> (u, logdet [B])``, ``inverse(u)``) without
            trainable parameters, applied before the flow (MaP).
    """

    def __init__(self, layers: Iterable[Layer], event_shape: int | Sequence[int],
                 preprocessing: nn.Module | None = None) -> None:
        super().__init__()
        layers = list(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} is a {type(layer).__name__}, not an ebflow.layers.Layer")
        if not layers:
            raise ValueError("EBFlow needs at least one layer")
        self.layers = nn.ModuleList(layers)
        self.event_shape = (int(event_shape),) if isinstance(event_shape, int) else tuple(int(s) for s in event_shape)
        self.dim = math.prod(self.event_shape)
        if preprocessing is not None and any(p.requires_grad for p in preprocessing.parameters()):
            raise ValueError("preprocessing must be fixed (MaP): it has trainable parameters")
        self.preprocessing = preprocessing
        self._logdet_cache: tuple[tuple, Tensor] | None = None

    # ----------------------------------------------------------------- helpers
    @property
    def _ref(self) -> Tensor:
        """A tensor with the model's dtype and device (first parameter or buffer; default dtype on CPU)."""
        for t in self.parameters():
            return t
        for t in self.buffers():
            return t
        return torch.zeros(())

    def _check(self, x: Tensor) -> Tensor:
        """``x`` as a flat ``[B, D]`` tensor of the model's floating dtype, or a clear error.

        numpy arrays (and other array-likes) are converted; other dtypes (float64 data for a float32 model,
        integers) are cast to the model's dtype, keeping any autograd graph. An empty batch is refused: every
        loss would be the mean of nothing (NaN).
        """
        if not isinstance(x, Tensor):
            try:
                x = torch.as_tensor(x)
            except (TypeError, ValueError, RuntimeError) as e:
                raise TypeError(f"EBFlow expects a tensor or numpy array [B, {self.dim}], got "
                                f"{type(x).__name__}: {e}") from None
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"EBFlow expects flat data [B, {self.dim}], got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"EBFlow got an empty batch (shape {tuple(x.shape)}): give at least one sample")
        dtype = self._ref.dtype
        if x.dtype != dtype:
            if x.is_complex() or x.dtype == torch.bool:
                raise TypeError(f"EBFlow expects real-valued data, got dtype {x.dtype}")
            x = x.to(dtype)
        return x

    def linear_layers(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.linear]

    # ----------------------------------------------------------- preprocessing
    def preprocess(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x -> (u, log|det du/dx|)``; the identity (log-det 0) without preprocessing.

        Accepts numpy arrays and any real dtype (cast to the model's); refuses an empty batch."""
        x = self._check(x)
        if self.preprocessing is None:
            return x, x.new_zeros(x.shape[0])
        return self.preprocessing(x)

    def postprocess(self, u: Tensor) -> Tensor:
        """``u -> x``, the inverse of :meth:`preprocess`."""
        return u if self.preprocessing is None else self.preprocessing.inverse(u)

    # -------------------------------------------------------- flow (u space)
    def flow(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Trained flow on preprocessed data: ``u [B, D] -> (z [B, D], sum of non-linear log-dets [B])``."""
        u = self._check(u)
        h = u.reshape(u.shape[0], *self.event_shape)
        logdet = u.new_zeros(u.shape[0])
        for layer in self.layers:
            h, ld = layer(h)
            if ld is not None:
                logdet = logdet + ld
        return h.reshape(u.shape[0], self.dim), logdet

    @property
    def explicit_derivatives(self) -> bool:
        """Whether every layer has closed-form derivatives (linear maps and :class:`~ebflow.layers.Elementwise`
        layers), so that :meth:`energy_score` runs without autograd; otherwise it falls back to autograd."""
        return all(hasattr(layer, "transpose_map") if layer.linear else isinstance(layer, Elementwise)
                   for layer in self.layers)

    def energy_score(self, u: Tensor, v: Tensor | None = None, *,
                     fused: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(E(u) [B], grad_u E [B, D], v^T (grad_u^2 E) v [B] or None)``, differentiable in the parameters
        (and in ``u`` when it requires grad).

        With :attr:`explicit_derivatives`, the gradient is one explicit reverse sweep (``A^T`` for linear layers,
        ``g' * . - l'`` for element-wise ones) and the second directional derivative one forward sweep carrying
        ``(h, dh, ddh)`` along ``u + t v`` (``ddh' = g'' dh^2 + g' ddh``; ``E'' = |dz|^2 + z . ddz - sum
        (l'' dh^2 + l' ddh)``), the primal and tangents stacked into one product per linear layer. Exactly the
        derivatives that nested ``torch.autograd.grad`` calls would give, but without building a graph of
        the backward pass nor requiring grad on ``u`` (whose gradient the training step never needs). Else the
        same quantities come from autograd (``create_graph=True``).

        Dense models (only :class:`~ebflow.layers.Dense` and element-wise layers with third derivatives) take,
        with ``fused`` (default), the same sweeps with a hand-written backward (:mod:`ebflow.sweep`): one
        weight-gradient product per dense matrix for both of its uses (the training step's case: ``u`` and ``v``
        without grad). It is once-differentiable in the parameters; with ``u`` requiring grad (derivatives in
        the data, of any order) or ``fused=False`` the sweeps stay in the autograd graph.
        """
        self._check(u)
        if v is not None and v.shape != u.shape:
            raise ValueError(f"energy_score: direction v has shape {tuple(v.shape)}, expected {tuple(u.shape)}")
        if not self.explicit_derivatives:
            return self._energy_score_autograd(u, v)
        if fused and not u.requires_grad and (v is None or not v.requires_grad) and _sweep.supports(self.layers):
            return _sweep.energy_score(list(self.layers), u, v)
        b = u.shape[0]
        shape = (b, *self.event_shape)
        hs = [u.reshape(shape)] if v is None else [u.reshape(shape), v.reshape(shape)]
        order = 1 if v is None else 2
        logdet = u.new_zeros(b)
        curv = u.new_zeros(b)  # second directional derivative of -sum_j log|det J_nj|
        slopes: list[tuple[Tensor, Tensor] | None] = []
        for layer in self.layers:
            if layer.linear:
                if len(hs) == 1:
                    hs = [layer(hs[0])[0]]
                elif getattr(layer, "stack_tangents", True):  # primal and tangents through one product
                    out = layer.linear_map(torch.cat(hs)).split(b)
                    hs = [layer.add_bias(out[0]), *out[1:]]  # the bias only moves the primal
                else:
                    hs = [layer(hs[0])[0], *(layer.linear_map(h) for h in hs[1:])]
                slopes.append(None)
                continue
            y, ld, g1, l1, *second = layer.derivatives(hs[0], order)
            logdet = logdet + _per_sample(ld)
            slopes.append((g1, l1))
            if v is not None:
                g2, l2 = second
                dh = hs[1]
                dh2 = dh * dh
                new = [y, g1 * dh, g2 * dh2]
                curv = curv - _per_sample(l2 * dh2)
                if len(hs) == 3:  # ddh is zero until the first non-linear layer
                    new[2] = new[2] + g1 * hs[2]
                    curv = curv - _per_sample(l1 * hs[2])
                hs = new
            else:
                hs = [y]
        z = hs[0].reshape(b, self.dim)
        energy = 0.5 * z.pow(2).sum(dim=1) + 0.5 * self.dim * math.log(2 * math.pi) - logdet
        second_dir = None
        if v is not None:
            dz = hs[1].reshape(b, self.dim)
            second_dir = curv + dz.pow(2).sum(dim=1)
            if len(hs) == 3:
                second_dir = second_dir + (z * hs[2].reshape(b, self.dim)).sum(dim=1)
        g = hs[0]  # dE/dz = z
        for layer, slope in zip(reversed(self.layers), reversed(slopes)):
            g = layer.transpose_map(g) if slope is None else g * slope[0] - slope[1]
        return energy, g.reshape(b, self.dim), second_dir

    def _energy_score_autograd(self, u: Tensor, v: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """:meth:`energy_score` by autograd (any layer): two nested passes with ``create_graph=True``."""
        with torch.enable_grad():
            u = u if u.requires_grad else u.detach().requires_grad_(True)
            energy = self.flow_energy(u)
            (grad,) = torch.autograd.grad(energy.sum(), u, create_graph=True)
            if v is None:
                return energy, grad, None
            (hv,) = torch.autograd.grad((grad * v).sum(), u, create_graph=True)
        return energy, grad, (hv * v).sum(dim=1)

    def flow_inverse(self, z: Tensor) -> Tensor:
        """``z -> u`` (inverts every layer of the trained flow)."""
        z = self._check(z)
        h = z.reshape(z.shape[0], *self.event_shape)
        for layer in reversed(self.layers):
            h = layer.inverse(h)
        return h.reshape(z.shape[0], self.dim)

    def flow_energy(self, u: Tensor) -> Tensor:
        """``E(u) = 0.5 ||f(u)||^2 + (D/2) log(2 pi) - sum_j log|det J_nj(u)|``, ``[B]``."""
        z, logdet = self.flow(u)
        return 0.5 * z.pow(2).sum(dim=1) + 0.5 * self.dim * math.log(2 * math.pi) - logdet

    # ------------------------------------------------------ data-space API
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x -> (z, non-linear log-dets [B])``; the preprocessing log-det is not included."""
        return self.flow(self.preprocess(x)[0])

    def energy(self, x: Tensor) -> Tensor:
        """``E(pre(x))`` ([B]): ``-log p_z(f(x)) - sum_j log|det J_nj|`` without linear (or MaP) log-dets."""
        return self.flow_energy(self.preprocess(x)[0])

    def linear_logdet(self) -> Tensor:
        """``sum_i log|det J_gi|`` over the linear layers (scalar tensor).

        Cached and keyed on every linear parameter's ``(_version, data_ptr())``, so an optimizer step, a
        ``load_state_dict`` or an EMA swap invalidates it. Writes that bypass the version counter are not
        seen: through ``p.data``, and the fused optimizers (``torch.optim.Adam(fused=True)``); after those,
        call :meth:`invalidate_logdet_cache` (``ebflow.training.train_step`` does). With grad enabled and trainable parameters, it is recomputed with its
        graph so that ``ml`` can differentiate it (the graph of a cached value may already be freed).
        """
        params = [p for layer in self.linear_layers() for p in layer.parameters()]
        ref = self._ref
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            value = self._compute_linear_logdet(ref)
            self._logdet_cache = (self._key(params, ref), value.detach())
            return value
        key = self._key(params, ref)
        if self._logdet_cache is None or self._logdet_cache[0] != key:
            with torch.no_grad():
                self._logdet_cache = (key, self._compute_linear_logdet(ref))
        return self._logdet_cache[1]

    def invalidate_logdet_cache(self) -> None:
        """Forget the cached :meth:`linear_logdet` (needed after parameter writes the version counter misses)."""
        self._logdet_cache = None

    @staticmethod
    def _key(params: list[Tensor], ref: Tensor) -> tuple:
        return (ref.dtype, ref.device, tuple((p._version, p.data_ptr()) for p in params))

    def _compute_linear_logdet(self, ref: Tensor) -> Tensor:
        total = torch.zeros((), dtype=ref.dtype, device=ref.device)
        for layer in self.linear_layers():
            total = total + layer.const_logdet()
        return total

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)`` in data space ([B]): ``-energy(x) + linear_logdet() + log|det dpre/dx|``."""
        u, pre_logdet = self.preprocess(x)
        return -self.flow_energy(u) + self.linear_logdet() + pre_logdet

    def score(self, x: Tensor, *, create_graph: bool = False) -> Tensor:
        """``grad_x log p(x)`` ([B, D]); equals ``-grad_x energy(x)`` without preprocessing."""
        with torch.enable_grad():
            x = self._check(x).detach().requires_grad_(True)
            u, pre_logdet = self.preprocess(x)
            logp = pre_logdet - self.flow_energy(u)
            (g,) = torch.autograd.grad(logp.sum(), x, create_graph=create_graph)
        return g

    # ------------------------------------------------------------ sampling
    def inverse(self, z: Tensor) -> Tensor:
        """``z -> x`` in data space (inverts the flow, then the preprocessing)."""
        return self.postprocess(self.flow_inverse(z))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, *, preprocessed: bool = False) -> Tensor:
        """``n`` exact samples ``[n, D]`` (no graph), in data space, or in the flow's input space ``u`` if
        ``preprocessed``. The base draw follows the parameters' dtype and device. ``n = 0`` gives an empty
        ``[0, D]`` tensor."""
        ref = self._ref
        if isinstance(n, bool) or not hasattr(n, "__index__") or n.__index__() < 0:
            raise ValueError(f"sample: n must be an integer >= 0, got {n!r}")
        n = n.__index__()
        if n == 0:
            return ref.new_zeros((0, self.dim))
        z = randn((n, self.dim), ref, generator)
        u = self.flow_inverse(z)
        return u if preprocessed else self.postprocess(u)
