"""Any invertible flow of the suite as a generator trained by the energy score (Si et al. 2023).

Training needs only pathwise samples ``x = G(eps)``, ``eps ~ N(0, I)``: the energy score (:mod:`.loss`) is
estimated from ``m`` samples per datum and differentiated through ``G``; no density or log-det is formed.
Since ``G`` is invertible, the exact density is still available for evaluation by change of variables.

Two kinds of flow are accepted:

- an :class:`ebflow.EBFlow` ``g`` (e.g. ``ebflow.architectures.fully_connected(dim, L)``). Its trained map
  ``F = g.flow`` (data -> latent in EBFlow's own use) is used here as the generator, in the *cheap* direction:
  ``x = pre^{-1}(F(eps))`` costs ``O(D^2)`` per sample for dense layers and is differentiable, while ``F^{-1}``
  needs linear solves and Newton iterations. ``pre`` is the EBFlow's fixed MaP preprocessing (e.g. the logit of
  pixels in [0, 1]; the identity if it has none), so samples live in the same space as the data. The exact
  density, for evaluation only, is

      log p(x) = log N(eps; 0, I) - sum_j log|det J_nj(eps)| - g.linear_logdet() + log|det d pre/dx|,
      eps = F^{-1}(pre(x)).

  The architecture is EBFlow's, unchanged; only the direction in which it is used differs (a choice of this
  suite, since energy-score training wants cheap differentiable sampling).
- a ``normflows.NormalizingFlow`` (latent -> data convention): ``sample(n)`` is pathwise, ``log_prob(x)`` exact.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .loss import check_beta, check_m, energy_score_loss

__all__ = ["FlowGenerator"]


def _is_ebflow(flow: nn.Module) -> bool:
    return all(hasattr(flow, a) for a in ("flow", "flow_inverse", "linear_logdet", "preprocess", "postprocess"))


def _is_normflows(flow: nn.Module) -> bool:
    try:
        import normflows
    except ImportError:  # pragma: no cover - normflows is a declared dependency
        return False
    return isinstance(flow, normflows.NormalizingFlow)


class FlowGenerator(nn.Module):
    """Wraps an invertible flow as a generator with pathwise ``rsample``, exact ``log_prob`` and an ``energy_loss``.

    Args:
        flow: an :class:`ebflow.EBFlow` or a ``normflows.NormalizingFlow`` (see the module docstring).
        dim: the data dimension; required for normflows models (EBFlow knows its own).
    """

    def __init__(self, flow: nn.Module, dim: int | None = None) -> None:
        super().__init__()
        if _is_ebflow(flow):
            self.kind = "ebflow"
            flow_dim = int(flow.dim)
            if dim is not None and int(dim) != flow_dim:
                raise ValueError(f"FlowGenerator: dim={dim} but the EBFlow has dimension {flow_dim}")
            self.dim = flow_dim
        elif _is_normflows(flow):
            self.kind = "normflows"
            if dim is None:
                raise ValueError("FlowGenerator: pass dim= for a normflows model")
            self.dim = int(dim)
        else:
            raise TypeError(f"FlowGenerator: {type(flow).__name__} is neither an ebflow.EBFlow nor a "
                            "normflows.NormalizingFlow")
        self.flow = flow

    def _ref(self) -> Tensor:
        return next(self.flow.parameters())

    def rsample(self, n: int) -> Tensor:
        """``n`` samples ``[n, D]`` that stay in the autodiff graph (reparameterised: ``x = G(eps)``)."""
        if self.kind == "ebflow":
            ref = self._ref()
            eps = torch.randn(n, self.dim, dtype=ref.dtype, device=ref.device)
            return self.flow.postprocess(self.flow.flow(eps)[0])
        return self.flow.sample(n)[0]

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """``n`` samples ``[n, D]`` without a graph."""
        return self.rsample(n)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)`` ([B]) by change of variables; inverts the generator (evaluation only)."""
        if self.kind == "normflows":
            return self.flow.log_prob(x)
        u, pre_logdet = self.flow.preprocess(x)
        eps = self.flow.flow_inverse(u)
        _, nonlinear_logdet = self.flow.flow(eps)
        log_base = -0.5 * eps.pow(2).sum(dim=1) - 0.5 * self.dim * math.log(2 * math.pi)
        return log_base - nonlinear_logdet - self.flow.linear_logdet() + pre_logdet

    def energy_loss(self, y: Tensor, m: int = 2, beta: float = 1.0) -> Tensor:
        """Energy score of the model at the batch ``y [B, D]`` from ``m`` fresh pathwise samples per datum."""
        m, beta = check_m(m), check_beta(beta)
        if y.ndim != 2 or y.shape[1] != self.dim:
            raise ValueError(f"FlowGenerator.energy_loss: y must have shape [B, {self.dim}], got {tuple(y.shape)}")
        samples = self.rsample(m * y.shape[0]).view(m, y.shape[0], self.dim)
        return energy_score_loss(samples, y, beta)
