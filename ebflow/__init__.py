"""EBFlow: normalizing flows trained as energy-based models, without Jacobian determinants.

Chao, Sun, Hsu, Kira, Lee, "Training Energy-Based Normalizing Flow with Score-Matching Objectives",
NeurIPS 2023. See :mod:`ebflow.model` for the maths and ``docs/ARCHITECTURE.md`` for the contract.
"""

from . import architectures, ema, layers, objectives, preprocessing, training
from .model import EBFlow

__all__ = ["EBFlow", "architectures", "ema", "layers", "objectives", "preprocessing", "training"]
