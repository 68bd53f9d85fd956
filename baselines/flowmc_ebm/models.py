"""Energy network, Gaussian base, tilted EBM and the RealNVP flow of flowMC-EBM (Grenioux et al. 2023).

The tilted EBM (their Eq. 6) is ``p_theta(x) ∝ exp(-E_theta(x)) rho(x)`` where ``rho`` is the flow's base
density ``N(0, sigma^2 I)`` with ``sigma^2`` the largest per-dimension variance of the data (App. C). With
``E_theta0 ≡ 0`` (zero last layer) and an identity flow at start, EBM and flow coincide at initialisation.
"""

from __future__ import annotations

import math

import normflows as nf
import torch
from torch import Tensor, nn


class GaussianBase(nn.Module):
    """Fixed isotropic Gaussian ``N(0, sigma^2 I_D)``: ``log_prob``, ``sample`` and ``sample_and_log_prob``.

    Samples come in the dtype and device of the module (``.double()``/``.to(device)`` move it).
    """

    def __init__(self, dim: int, sigma: float = 1.0) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"GaussianBase: dim must be >= 1, got {dim}")
        if not sigma > 0:
            raise ValueError(f"GaussianBase: sigma must be > 0, got {sigma}")
        self.dim = int(dim)
        self.register_buffer("log_sigma", torch.tensor(math.log(sigma)))

    @property
    def sigma(self) -> float:
        return float(self.log_sigma.exp())

    def log_prob(self, x: Tensor) -> Tensor:
        """``-|x|^2 / (2 sigma^2) - D/2 log(2 pi) - D log sigma``, per row."""
        s2 = torch.exp(2 * self.log_sigma).to(x.dtype)
        return (-0.5 * x.pow(2).sum(-1) / s2
                - self.dim * (0.5 * math.log(2 * math.pi) + self.log_sigma.to(x.dtype)))

    def sample_and_log_prob(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        eps = torch.randn(n, self.dim, generator=generator, device=self.log_sigma.device, dtype=self.log_sigma.dtype)
        x = eps * self.log_sigma.exp()
        return x, self.log_prob(x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.sample_and_log_prob(n, generator)[0]

    # normflows' base-distribution protocol: forward(num_samples) -> (z, log_q)
    def forward(self, num_samples: int = 1, context=None) -> tuple[Tensor, Tensor]:
        return self.sample_and_log_prob(num_samples)


class EnergyNet(nn.Module):
    """MLP energy ``E_theta: R^D -> R`` with SiLU activations (smooth, so MALA/ULA gradients are continuous).

    ``depth`` hidden layers of width ``hidden``. The output layer is zero-initialised, so ``E_theta0 ≡ 0``.
    """

    def __init__(self, dim: int, hidden: int = 64, depth: int = 3) -> None:
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"EnergyNet: dim, hidden and depth must be >= 1, got {dim}, {hidden}, {depth}")
        layers: list[nn.Module] = []
        width = dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        out = nn.Linear(width, 1)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*layers, out)

    def forward(self, x: Tensor) -> Tensor:
        """Energies ``[B]`` of ``x`` ``[B, D]``."""
        return self.net(x).squeeze(-1)


class TiltedEBM(nn.Module):
    """``log p~(x) = -E_theta(x) + log rho(x)`` (unnormalised); ``Z = E_rho[exp(-E_theta)]``."""

    def __init__(self, energy: EnergyNet, base: GaussianBase) -> None:
        super().__init__()
        self.energy = energy
        self.base = base

    def log_unnorm(self, x: Tensor) -> Tensor:
        return -self.energy(x) + self.base.log_prob(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.log_unnorm(x)


class RealNVP(nn.Module):
    """RealNVP (affine couplings, ``normflows``) on a fixed ``GaussianBase``; ``forward`` maps latent -> data.

    Each of the ``blocks`` couplings transforms half the coordinates with an MLP conditioner (``depth`` hidden
    layers of ``hidden`` units) on the other half, followed by a fixed random permutation. Conditioners' last
    layers are zero-initialised, so the flow starts as the identity (the paper uses ~1e-6 initial weights).
    """

    def __init__(self, base: GaussianBase, blocks: int = 4, hidden: int = 32, depth: int = 2) -> None:
        super().__init__()
        dim = base.dim
        if dim < 2:
            raise ValueError(f"RealNVP needs dim >= 2 to split coordinates, got {dim}")
        if blocks < 1:
            raise ValueError(f"RealNVP: blocks must be >= 1, got {blocks}")
        d1, d2 = (dim + 1) // 2, dim // 2  # normflows' 'channel' split: first ceil(D/2) condition the rest
        flows: list[nf.flows.Flow] = []
        for _ in range(blocks):
            net = nf.nets.MLP([d1] + [hidden] * depth + [2 * d2], init_zeros=True)
            flows += [nf.flows.AffineCouplingBlock(net), nf.flows.Permute(dim, mode="shuffle")]
        self.dim = dim
        self.base = base
        self.flow = nf.NormalizingFlow(q0=base, flows=flows)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.flow.log_prob(x)

    def sample_and_log_prob(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        z, log_q = self.base.sample_and_log_prob(n, generator)
        for f in self.flow.flows:
            z, log_det = f(z)
            log_q = log_q - log_det
        return z, log_q

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.sample_and_log_prob(n, generator)[0]
