"""Fused energy / score / second-directional-derivative sweep of dense EBFlows, with a hand-written backward.

:meth:`ebflow.EBFlow.energy_score` computes ``(E, grad_u E, v^T (grad_u^2 E) v)`` with explicit sweeps; left to
autograd, the parameter gradient of a score-matching loss then treats every dense matrix ``W`` as two unrelated
uses (the forward product ``h = W a`` and the reverse-sweep product ``g_in = g_out W``): two weight-gradient
products ``[D, B] x [B, D]``, each into a fresh ``D x D`` buffer, and a third buffer for their sum. On a CPU
those fresh ``D x D`` buffers (page faults on memory the allocator just returned) cost as much as the products.

:class:`DenseSweep` computes the same three quantities for a model made of :class:`~ebflow.layers.Dense` and
:class:`~ebflow.layers.Elementwise` layers (``max_order >= 3``) and differentiates them by hand: both uses of
``W`` go into one product ``[adjoints of both uses]^T [inputs of both uses]`` (inner dimension ``2B`` for the
score, ``4B`` with the second directional derivative), so each ``W`` gets one weight-gradient product and one
buffer. The backward of the second directional derivative needs third derivatives of the element-wise layers
(``g3``, ``l3`` from ``derivatives(x, 3)``).

Notation (per element-wise layer, input ``h``, tangents ``dh``, ``ddh`` along ``u + t v``):
``y = g(h)``, ``dy = g' dh``, ``ddy = g'' dh^2 + g' ddh``, ``curv -= l'' dh^2 + l' ddh``;
energy ``E = |z|^2 / 2 + D log(2 pi) / 2 - sum l(h)``; second directional derivative
``q = curv + |dz|^2 + z . ddz``; reverse sweep ``g <- g g' - l'`` (element-wise), ``g <- g W`` (dense).

The backward is exact (checked against autograd in float64 by the tests); it is once-differentiable: a loss
that differentiates through it twice (a gradient penalty on the parameters' gradient) must use
:meth:`ebflow.EBFlow.energy_score` with ``fused=False``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .layers import Dense, Elementwise, Layer

__all__ = ["supports", "DenseSweep", "energy_score"]


def supports(layers: Sequence[Layer]) -> bool:
    """Whether :func:`energy_score` handles ``layers``: only :class:`Dense` and element-wise layers with
    third derivatives (``max_order >= 3``), at least one dense layer."""
    return any(isinstance(layer, Dense) for layer in layers) and all(
        isinstance(layer, Dense) or (isinstance(layer, Elementwise) and getattr(layer, "max_order", 2) >= 3)
        for layer in layers)


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


class DenseSweep(torch.autograd.Function):
    """``(u [B, D], v [B, D] or None, *params) -> (E [B], grad_u E [B, D], v^T H v [B] or empty)``.

    ``params`` are the dense layers' weights and biases in layer order (a bias only where the layer has one),
    passed so that autograd routes their gradients here; the layers themselves come in ``layers``.
    """

    @staticmethod
    def forward(ctx, layers: tuple[Layer, ...], u: Tensor, v: Tensor | None, *params: Tensor):  # type: ignore[override]
        b, dim = u.shape
        second = v is not None
        order = 3 if second else 2  # the backward needs one derivative more than the sweep
        hs: list[Tensor] = [u] if v is None else [u, v]
        logdet = u.new_zeros(b)
        curv = u.new_zeros(b)
        records: list[dict] = []
        for layer in layers:
            if isinstance(layer, Dense):
                x = hs[0] if len(hs) == 1 else torch.cat(hs)
                out = F.linear(x, layer.weight)
                parts = list(out.split(b)) if len(hs) > 1 else [out]
                if layer.bias is not None:
                    parts[0] = parts[0] + layer.bias
                records.append({"x": x, "n": len(hs)})
                hs = parts
                continue
            h = hs[0]
            d = layer.derivatives(h, order)
            y, ld, g1, l1, g2, l2 = d[:6]
            logdet = logdet + ld.sum(dim=1)
            rec = {"g1": g1, "l1": l1, "g2": g2, "l2": l2}
            if second:
                g3, l3 = d[6], d[7]
                dh = hs[1]
                ddh = hs[2] if len(hs) == 3 else None
                dh2 = dh * dh
                dy = g1 * dh
                ddy = g2 * dh2
                c = l2 * dh2
                if ddh is not None:
                    ddy = ddy + g1 * ddh
                    c = c + l1 * ddh
                curv = curv - c.sum(dim=1)
                rec.update(g3=g3, l3=l3, dh=dh, ddh=ddh, dh2=dh2)
                hs = [y, dy, ddy]
            else:
                hs = [y]
            records.append(rec)
        z = hs[0]
        energy = 0.5 * z.pow(2).sum(dim=1) + 0.5 * dim * math.log(2 * math.pi) - logdet
        q = None
        if second:
            dz = hs[1]
            q = curv + dz.pow(2).sum(dim=1)
            if len(hs) == 3:
                q = q + (z * hs[2]).sum(dim=1)
        g = z
        for layer, rec in zip(reversed(layers), reversed(records)):
            rec["g_out"] = g
            if isinstance(layer, Dense):
                g = g @ layer.weight
            else:
                g = g * rec["g1"] - rec["l1"]
        ctx.layers = layers
        ctx.records = records
        ctx.top = hs
        ctx.second = second
        ctx.set_materialize_grads(False)
        return energy, g, (q if second else u.new_empty(0))

    @staticmethod
    @once_differentiable
    def backward(ctx, e_bar: Tensor | None, g_bar: Tensor | None, q_bar: Tensor | None):  # type: ignore[override]
        layers, records, second = ctx.layers, ctx.records, ctx.second
        if not second:
            q_bar = None
        e_col = None if e_bar is None else e_bar.unsqueeze(1)
        q_col = None if q_bar is None else q_bar.unsqueeze(1)
        # 1. adjoint of the reverse sweep, from the input side to the output side
        gb = g_bar
        rev_pairs: dict[int, tuple[Tensor, Tensor]] = {}
        rev_h: dict[int, Tensor] = {}
        for i, (layer, rec) in enumerate(zip(layers, records)):
            if gb is None:
                break
            if isinstance(layer, Dense):
                rev_pairs[i] = (rec["g_out"], gb)  # W_bar += g_out^T gb
                gb = F.linear(gb, layer.weight)
            else:
                rev_h[i] = gb * (rec["g_out"] * rec["g2"] - rec["l2"])
                gb = gb * rec["g1"]
        # 2. adjoints at the top of the forward sweep
        top = ctx.top
        z = top[0]
        zb = _add(gb, None if e_col is None else e_col * z)
        bars: list[Tensor | None] = [zb]
        if second:
            dzb = None if q_col is None else 2.0 * q_col * top[1]
            bars.append(dzb)
            if len(top) == 3:
                bars.append(None if q_col is None else q_col * z)
                if q_col is not None:
                    bars[0] = _add(bars[0], q_col * top[2])
        # 3. adjoint of the forward sweep, from the output side to the input side
        param_bars: dict[int, tuple[Tensor | None, Tensor | None]] = {}  # layer index -> (W_bar, b_bar)
        v_bar = None
        for i in range(len(layers) - 1, -1, -1):
            layer, rec = layers[i], records[i]
            if isinstance(layer, Dense):
                n = rec["n"]
                bars = bars[:n]
                x = rec["x"]
                b = x.shape[0] // n
                has_bar = any(t is not None for t in bars)
                stack = None  # the adjoints of the forward product's outputs, stacked as its input was
                if has_bar:
                    parts = [t if t is not None else x.new_zeros(b, x.shape[1]) for t in bars]
                    stack = parts[0] if n == 1 else torch.cat(parts)
                lefts, rights = [], []
                if stack is not None:
                    lefts.append(stack)
                    rights.append(x)
                if i in rev_pairs:
                    lefts.append(rev_pairs[i][0])
                    rights.append(rev_pairs[i][1])
                w_bar = None
                if lefts:
                    left = lefts[0] if len(lefts) == 1 else torch.cat(lefts)
                    right = rights[0] if len(rights) == 1 else torch.cat(rights)
                    w_bar = left.T @ right  # one product and one D x D buffer for both uses of W
                b_bar = None if layer.bias is None or bars[0] is None else bars[0].sum(dim=0)
                param_bars[i] = (w_bar, b_bar)
                need_in = i > 0 or ctx.needs_input_grad[1] or (n > 1 and ctx.needs_input_grad[2])
                if need_in and stack is not None:
                    x_bar = F.linear(stack, layer.weight.T)
                    bars = list(x_bar.split(b)) if n > 1 else [x_bar]
                else:
                    bars = [None] * n
                continue
            g1, l1, g2, l2 = rec["g1"], rec["l1"], rec["g2"], rec["l2"]
            hb = None if bars[0] is None else bars[0] * g1
            hb = _add(hb, rev_h.get(i))
            if e_col is not None:
                hb = _add(hb, -e_col * l1)
            if second:
                dh, ddh, dh2 = rec["dh"], rec["ddh"], rec["dh2"]
                g3, l3 = rec["g3"], rec["l3"]
                dyb = bars[1] if len(bars) > 1 else None
                ddyb = bars[2] if len(bars) > 2 else None
                dhb = ddhb = None
                if dyb is not None:
                    hb = _add(hb, dyb * g2 * dh)
                    dhb = dyb * g1
                if ddyb is not None:
                    t = g3 * dh2 if ddh is None else g3 * dh2 + g2 * ddh
                    hb = _add(hb, ddyb * t)
                    dhb = _add(dhb, 2.0 * ddyb * g2 * dh)
                    if ddh is not None:
                        ddhb = ddyb * g1
                if q_col is not None:
                    t = l3 * dh2 if ddh is None else l3 * dh2 + l2 * ddh
                    hb = _add(hb, -q_col * t)
                    dhb = _add(dhb, -2.0 * q_col * l2 * dh)
                    if ddh is not None:
                        ddhb = _add(ddhb, -q_col * l1)
                bars = [hb, dhb] if ddh is None else [hb, dhb, ddhb]
            else:
                bars = [hb]
        u_bar = bars[0] if ctx.needs_input_grad[1] else None
        if second and ctx.needs_input_grad[2] and len(bars) > 1:
            v_bar = bars[1]
        param_grads: list[Tensor | None] = []  # in the order of ``params``: weight, then bias if any, per layer
        for i, layer in enumerate(layers):
            if isinstance(layer, Dense):
                w_bar, b_bar = param_bars[i]
                param_grads.append(w_bar)
                if layer.bias is not None:
                    param_grads.append(b_bar)
        return (None, u_bar, v_bar, *param_grads)


def energy_score(layers: Sequence[Layer], u: Tensor, v: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(E [B], grad_u E [B, D], v^T (grad_u^2 E) v [B] or None)`` of the dense flow ``layers`` on flat
    ``u [B, D]`` through :class:`DenseSweep` (requires :func:`supports`)."""
    params: list[Tensor] = []
    for layer in layers:
        if isinstance(layer, Dense):
            params.append(layer.weight)
            if layer.bias is not None:
                params.append(layer.bias)
    energy, grad, q = DenseSweep.apply(tuple(layers), u, v, *params)
    return energy, grad, (q if v is not None else None)
