"""Semi-autoregressive energy flow (SAEF, Si et al. 2023), simplified for flat data.

The ``D`` coordinates are cut into ``n_blocks = ceil(D / k)`` consecutive blocks of size ``k`` (the last one
may be shorter). Block ``b`` is generated from its own noise ``z_b ~ N(0, I_q)`` and the blocks before it:

    x_b = Dec(c_b(x_{<b}), z_b),        c_b = Trunk_b(x_{<b}),

- **across blocks (autoregressive):** ``Trunk`` is a MADE-style masked MLP on the whole (zero-padded) vector
  whose output block ``b`` depends only on blocks ``< b``; one pass gives every block's context, the analogue of
  the paper's masked (PixelCNN) convolutions. Its per-block output bias doubles as a learned embedding of the
  block index, so the decoder can be shared.
- **within a block (one shot):** ``Dec`` is one unconstrained MLP shared by all blocks, from ``[c_b, z_b]`` to
  the ``k`` coordinates. It is not invertible (nor triangular), so the model has **no tractable density: NLL is
  unavailable** for SAEF; only sample-based metrics apply.

Training (as in the public code): teacher forcing, i.e. the context is the *true* previous blocks, and the loss
is the energy score of each block's conditional summed over blocks, averaged over the batch:

    L = mean_y sum_b ES_beta(P(. | y_{<b}), y_b),

estimated with ``m >= 2`` noise draws per datum (:func:`.loss.energy_score_loss`, symmetric form). Sampling runs
``n_blocks`` sequential passes, feeding back the generated blocks. With ``k = 1`` the model is fully
autoregressive (e.g. ``D = 2``: ``x_1 = Dec(c_1, z_1)``, ``x_2 = Dec(c_2(x_1), z_2)``); with ``k >= D`` it is a
plain one-shot generator.

Choices where the paper is silent for flat data: SiLU activations, noise of size ``k`` per block, an optional
sigmoid output for data in [0, 1] (the paper's MNIST model ends in a sigmoid), no BatchNorm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .loss import check_beta, check_m, energy_score_loss

__all__ = ["SemiAutoregressiveFlow", "MaskedLinear"]


class MaskedLinear(nn.Linear):
    """``y = (W * mask) x + b`` with a fixed 0/1 ``mask [out, in]``."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        if i:
            layers.append(nn.SiLU())
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
    return nn.Sequential(*layers)


class SemiAutoregressiveFlow(nn.Module):
    """Block-autoregressive generator trained by the energy score (see the module docstring).

    Args:
        dim: data dimension ``D``.
        block_size: ``k``, coordinates per block (1 <= k <= D).
        hidden: width of the trunk's and the decoder's hidden layers; the trunk needs at least
            ``n_blocks - 1`` hidden units so every block's context can see each earlier block.
        num_hidden: hidden layers in the trunk and in the decoder (>= 1).
        context: size of each block's context vector ``c_b``.
        output: ``"identity"`` (samples in R^D) or ``"sigmoid"`` (samples in (0, 1)^D).
    """

    def __init__(self, dim: int, block_size: int, *, hidden: int = 128, num_hidden: int = 2, context: int = 32,
                 output: str = "identity") -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"SemiAutoregressiveFlow: dim must be positive, got {dim}")
        if not 1 <= block_size <= dim:
            raise ValueError(f"SemiAutoregressiveFlow: block_size must lie in [1, dim={dim}], got {block_size}")
        if num_hidden < 1:
            raise ValueError(f"SemiAutoregressiveFlow: num_hidden must be >= 1, got {num_hidden}")
        if output not in ("identity", "sigmoid"):
            raise ValueError(f"SemiAutoregressiveFlow: output must be 'identity' or 'sigmoid', got {output!r}")
        self.dim, self.block_size, self.output = dim, block_size, output
        self.n_blocks = math.ceil(dim / block_size)
        self.context = context
        if hidden < max(self.n_blocks - 1, 1):
            raise ValueError(f"SemiAutoregressiveFlow: hidden={hidden} is smaller than n_blocks - 1 = "
                             f"{self.n_blocks - 1}; the trunk could not route every earlier block")
        self.trunk = self._make_trunk(hidden, num_hidden)
        self.decoder = _mlp([context + block_size] + [hidden] * num_hidden + [block_size])

    def _make_trunk(self, hidden: int, num_hidden: int) -> nn.Sequential:
        """Masked MLP ``[B, n_blocks * k] -> [B, n_blocks * context]``, output block b sees input blocks < b.

        MADE degrees: input block ``c`` has degree ``c + 1``, output block ``b`` degree ``b``, hidden units
        cycle through ``1 .. n_blocks - 1``; a unit connects to units of lower or equal degree.
        """
        nb, k = self.n_blocks, self.block_size
        d_in = torch.arange(nb).repeat_interleave(k) + 1
        d_hidden = torch.arange(hidden) % max(nb - 1, 1) + 1
        d_out = torch.arange(nb).repeat_interleave(self.context)
        layers: list[nn.Module] = []
        prev = d_in
        for _ in range(num_hidden):
            layers += [MaskedLinear((prev[None, :] <= d_hidden[:, None]).float()), nn.SiLU()]
            prev = d_hidden
        layers.append(MaskedLinear((prev[None, :] <= d_out[:, None]).float()))
        return nn.Sequential(*layers)

    # ------------------------------------------------------------------ helpers
    def _ref(self) -> Tensor:
        return self.decoder[0].weight

    def _pad(self, x: Tensor) -> Tensor:
        """``[..., D] -> [..., n_blocks * k]`` with zeros in the missing coordinates of the last block."""
        return F.pad(x, (0, self.n_blocks * self.block_size - self.dim))

    def _decode(self, ctx: Tensor, z: Tensor) -> Tensor:
        out = self.decoder(torch.cat([ctx, z], dim=-1))
        return torch.sigmoid(out) if self.output == "sigmoid" else out

    def _contexts(self, x: Tensor) -> Tensor:
        """``[B, D] -> [B, n_blocks, context]``: block b's context from the blocks of ``x`` before b."""
        return self.trunk(self._pad(x)).view(x.shape[0], self.n_blocks, self.context)

    # ------------------------------------------------------------------ public
    def teacher_forced(self, y: Tensor, m: int) -> Tensor:
        """``m`` draws per datum of every block given the *true* previous blocks of ``y``: ``[m, B, D]``.

        Each block of draw ``i`` is a sample of ``P(x_b | y_{<b})``; draws are pathwise in the parameters.
        """
        if y.ndim != 2 or y.shape[1] != self.dim:
            raise ValueError(f"SemiAutoregressiveFlow: expected data [B, {self.dim}], got {tuple(y.shape)}")
        ctx = self._contexts(y).unsqueeze(0).expand(m, -1, -1, -1)
        z = torch.randn(m, y.shape[0], self.n_blocks, self.block_size, dtype=ctx.dtype, device=ctx.device)
        out = self._decode(ctx, z).reshape(m, y.shape[0], -1)
        return out[..., : self.dim]

    def energy_loss(self, y: Tensor, m: int = 2, beta: float = 1.0) -> Tensor:
        """Teacher-forced energy score summed over blocks, averaged over the batch ``y [B, D]``."""
        m, beta = check_m(m), check_beta(beta)
        samples = self._pad(self.teacher_forced(y, m))  # padded coordinates are 0 in samples and data alike
        b, nb, k = y.shape[0], self.n_blocks, self.block_size
        per_block = energy_score_loss(samples.view(m, b * nb, k), self._pad(y).view(b * nb, k), beta,
                                      reduction="none")
        return per_block.view(b, nb).sum(dim=1).mean()

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """``n`` samples ``[n, D]``, generated block by block (``n_blocks`` sequential passes)."""
        ref = self._ref()
        k = self.block_size
        x = torch.zeros(n, self.n_blocks * k, dtype=ref.dtype, device=ref.device)
        z = torch.randn(n, self.n_blocks, k, dtype=ref.dtype, device=ref.device)
        for b in range(self.n_blocks):
            ctx = self._contexts(x[:, : self.dim])[:, b]
            x[:, b * k: (b + 1) * k] = self._decode(ctx, z[:, b])
        return x[:, : self.dim]
