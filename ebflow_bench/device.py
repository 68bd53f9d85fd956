"""Device and dtype selection shared by the harness."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """'auto' or None -> default_device(); anything else -> torch.device(name)."""
    if name is None or name == "auto":
        return default_device()
    return torch.device(name)
