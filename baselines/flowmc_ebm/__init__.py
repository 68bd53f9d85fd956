"""flowMC-EBM (Grenioux, Moulines, Gabrié 2023): an EBM tilted by a flow's base density, trained with
persistent flowMC chains (i-SIR with flow proposals + MALA) while the flow is fitted to the chains; and the
ULA-EBM ablation (persistent unadjusted Langevin chains, no flow).

Public API: :class:`EnergyNet`, :class:`GaussianBase`, :class:`TiltedEBM`, :class:`RealNVP`, samplers
:func:`isir`, :func:`mala`, :func:`ula`, :func:`flowmc`, trainers :class:`FlowMCEBM`, :class:`ULAEBM`, and
:func:`estimate_log_z` (a :class:`LogZEstimate` with the ESS), :func:`mode_weights`.
"""

from .estimate import LogZEstimate, estimate_log_z, mode_weights
from .models import EnergyNet, GaussianBase, RealNVP, TiltedEBM
from .samplers import flowmc, isir, mala, ula
from .training import FlowMCEBM, ULAEBM

__all__ = ["EnergyNet", "GaussianBase", "TiltedEBM", "RealNVP", "isir", "mala", "ula", "flowmc",
           "FlowMCEBM", "ULAEBM", "LogZEstimate", "estimate_log_z", "mode_weights"]
