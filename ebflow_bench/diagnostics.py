"""Degenerate-model diagnosis, called by the runner once a cell's samples and test NLL exist.

``diagnose(task, samples, nll)`` returns ``None`` for a model that looks sound, else a :class:`Diagnosis` with a
one-line ``reason`` and an ``evidence`` dict (JSON-serialisable numbers); the runner then records the cell as
``degenerate`` with that reason and puts the evidence in the record's ``diagnosis``.

The check here is deliberately minimal: non-finite samples, or samples that explode (any ``|sample|`` larger
than ``EXPLODE_FACTOR`` times the training data's largest absolute value). A fuller diagnosis (mode collapse,
NLL against sample quality) is meant to replace this module behind the same signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

#: samples beyond this multiple of the training data's largest |value| count as exploded
EXPLODE_FACTOR = 1e3


@dataclass(frozen=True)
class Diagnosis:
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def diagnose(task: Any, samples: torch.Tensor, nll: torch.Tensor | None) -> Diagnosis | None:
    """``None`` if the samples look sound, else why the model is degenerate (see the module docstring)."""
    s = samples.detach().to("cpu", torch.float64)
    finite = torch.isfinite(s)
    if not finite.all():
        n_bad = int((~finite).any(dim=1).sum())
        return Diagnosis(f"{n_bad} of {s.shape[0]} samples have non-finite coordinates",
                         {"non_finite_samples": n_bad, "n_samples": int(s.shape[0])})
    scale = float(task.train.detach().abs().max()) if task.train.numel() else 0.0
    limit = EXPLODE_FACTOR * max(scale, 1e-12)
    biggest = float(s.abs().max()) if s.numel() else 0.0
    if biggest > limit:
        n_bad = int((s.abs() > limit).any(dim=1).sum())
        return Diagnosis(f"samples exploded: max |sample| {biggest:.3g} > {EXPLODE_FACTOR:g} x the training data's "
                         f"max |x| {scale:.3g} ({n_bad} of {s.shape[0]} samples)",
                         {"max_abs_sample": biggest, "max_abs_train": scale, "exploded_samples": n_bad,
                          "n_samples": int(s.shape[0])})
    return None


__all__ = ["Diagnosis", "diagnose", "EXPLODE_FACTOR"]
