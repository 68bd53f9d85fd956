"""Energy-objective flows (Si, Chen, Sahoo, Schiff, Kuleshov, "Semi-Autoregressive Energy Flows", ICML 2023).

Generators trained with the energy score, a strictly proper scoring rule estimated from model samples, so no
density and no Jacobian log-determinant is ever formed during training:

- :func:`energy_score_loss` (``samples [m, B, D]``, ``y [B, D]``, ``beta`` in (0, 2)): unbiased estimate of
  ``E||X - y||^beta - 1/2 E||X - X'||^beta``;
- :class:`FlowGenerator`: any invertible flow of the suite (an ``ebflow.EBFlow`` used in its cheap direction,
  or a ``normflows.NormalizingFlow``) with pathwise ``rsample``, exact ``log_prob`` and ``energy_loss``;
- :class:`SemiAutoregressiveFlow`: block-autoregressive generator with one-shot (non-invertible) blocks,
  trained with teacher forcing; it has no tractable likelihood.
"""

from .generator import FlowGenerator
from .loss import energy_score_loss
from .saef import SemiAutoregressiveFlow

__all__ = ["FlowGenerator", "SemiAutoregressiveFlow", "energy_score_loss"]
