"""Modules imported on first use, so that the suite's declarations load without torch.

The harness's static checks (``ebflow-bench run``'s refusal of an impossible matrix, ``ebflow-bench list``)
read only declarations: each adapter's hyperparameters and memory estimate, each task's name, fixed D and data
sizes. ``import torch`` alone takes 1.6 s on the 2-core reference machine, longer than the whole check should;
so the modules holding those declarations (``ebflow_bench.adapters.*``, ``ebflow_bench.tasks.*``,
``ebflow_bench.device``) name torch and the compute libraries (``ebflow``, ``baselines``) through
:func:`lazy` and import them the first time a cell builds, trains or evaluates something.

``torch = lazy("torch")`` behaves as the module for attribute access (``torch.randn``, ``torch.Tensor`` in
``isinstance``); it is not the module itself (``sys.modules["torch"]`` is only the real one) and pickles as an
import of the real module. Modules that do the work (``ebflow``, ``baselines``, ``metrics``, ``runner``)
import torch as usual. ``tests/test_preflight.py`` checks the static path imports no torch.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any


class LazyModule:
    """A stand-in for module ``name``, imported on the first attribute access."""

    __slots__ = ("_name", "_module")

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_module", None)

    def _load(self) -> Any:
        module = self._module
        if module is None:
            module = importlib.import_module(self._name)
            object.__setattr__(self, "_module", module)
        return module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        raise AttributeError(f"lazy module {self._name!r} is read-only here; import it to modify it")

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __reduce__(self) -> tuple:
        return importlib.import_module, (self._name,)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name!r} ({state})>"


@functools.cache
def lazy(name: str) -> LazyModule:
    """The lazy stand-in for module ``name`` (one per name)."""
    return LazyModule(name)


def no_grad(fn):
    """``@torch.no_grad()`` without importing torch when the class is defined."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with lazy("torch").no_grad():
            return fn(*args, **kwargs)

    return wrapper


__all__ = ["LazyModule", "lazy", "no_grad"]
