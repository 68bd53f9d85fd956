"""Device and dtype selection shared by the harness."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from ._lazy import lazy

torch = lazy("torch")  # only a CUDA query needs it: check_device("cpu") and check_device("auto", resolve=False) do not

if TYPE_CHECKING:
    import torch as _torch


def default_device() -> _torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str | _torch.device | None) -> _torch.device:
    """'auto' or None -> default_device(); anything else -> torch.device(name)."""
    if name is None or name == "auto":
        return default_device()
    return torch.device(name)


def check_device(name: object, *, resolve: bool = True) -> tuple[str | None, str | None]:
    """``(resolved, None)`` for a usable device name, else ``(None, problem)``.

    Accepted: ``cpu``, ``auto`` (``cuda`` when present, else ``cpu``), ``cuda`` and ``cuda:N`` (only when that
    GPU exists). Anything else (``mps``, ``tpu``, typos) is refused: the harness measures on CPU or CUDA only.
    ``resolve=False`` returns ``auto`` as it is (always usable) without asking torch for CUDA.
    """
    if not isinstance(name, str):
        return None, f"bad device {name!r}: expected 'cpu', 'cuda', 'cuda:N' or 'auto'"
    if name == "auto":
        if not resolve:
            return "auto", None
        return ("cuda" if torch.cuda.is_available() else "cpu"), None
    if name == "cpu":
        return "cpu", None
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        return None, f"bad device {name!r}: expected 'cpu', 'cuda', 'cuda:N' or 'auto'"
    if not torch.cuda.is_available():
        return None, f"device {name!r} requested but CUDA is not available"
    if index and int(index) >= torch.cuda.device_count():
        return None, f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)"
    return name, None


@contextlib.contextmanager
def cell_threads(n: int):
    """torch and BLAS (numpy's too, through ``threadpoolctl``) at a cell's thread count ``n`` for the duration,
    torch's count restored after. Every cell runs inside it (``runner.run_cell``), and so does a task built and
    cached while validating (e.g. the ``gaussian`` task's float64 QR): Dask starts its workers with one BLAS
    thread, and a float64 reduction summed in another order by more threads would differ in its last bits, so a
    serial run equals a parallel one bit for bit."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        with threadpool_limits(limits=int(n), user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)
