"""Maximum-likelihood flows, the suite's likelihood-trained peers.

- :class:`LUDense` / :func:`fully_connected_lu`: EBFlow's dense model with each ``D x D`` matrix in LU form,
  so the exact log-det is ``O(D)`` and maximum likelihood needs no ``O(D^3)`` term (:mod:`.lu`).
- :func:`library_flow`: nflows / normflows models (MAF, RealNVP, LU, NSF, Glow, residual flows) behind
  ``log_prob`` / ``sample`` (:mod:`.library`).
"""

from .library import KINDS, LibraryFlow, check_kind, library_flow
from .lu import LUDense, fully_connected_lu

__all__ = ["KINDS", "LUDense", "LibraryFlow", "check_kind", "fully_connected_lu", "library_flow"]
