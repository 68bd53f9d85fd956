"""Approximate maximum likelihood without determinants: three ways to follow the ML gradient of a flow.

- :mod:`.snf`: Self-Normalizing Flows (Keller et al., ICML 2021): every dense layer ``W`` has a learned inverse
  ``R``; the log-det gradient ``W^-T`` is replaced by ``R^T`` (the inverse model's by ``W^T``), plus a layer-wise
  reconstruction penalty.
- :mod:`.relative_gradient`: Relative Gradient (Gresele et al., NeurIPS 2020): each dense layer's gradient is
  right-multiplied by ``W^T W`` (the augmented affine matrix with its bias), so the log-det part becomes ``W``.
- :mod:`.free_form`: Free-form Flows (Draxler et al., AISTATS 2024): a free-form encoder ``f`` and decoder ``g``;
  the log-det gradient is estimated by ``v^T f'(x) sg(g'(z) v)`` with one Hutchinson vector.

Each trains in ``O(B D^2)`` per dense layer; the exact NLL at evaluation still needs the ``O(D^3)`` log-dets
(computed once per parameter version by :class:`ebflow.EBFlow`, whose layers these models reuse) or, for a
free-form encoder, its full Jacobian per sample (:func:`.free_form.jacobian_log_prob`).
"""

from .common import finite_mean
from .free_form import MirroredDense, ResidualNet, fff_loss, jacobian_log_prob, sample_v, volume_surrogate
from .relative_gradient import RelativeDense, relative_fully_connected, relative_loss
from .snf import SelfNormDense, snf_fully_connected, snf_loss

__all__ = [
    "MirroredDense", "ResidualNet", "RelativeDense", "SelfNormDense", "fff_loss", "finite_mean", "jacobian_log_prob",
    "relative_fully_connected", "relative_loss", "sample_v", "snf_fully_connected", "snf_loss", "volume_surrogate",
]
