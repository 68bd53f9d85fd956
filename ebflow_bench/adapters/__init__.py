"""Adapters: one per method family, all behind :class:`~ebflow_bench.adapters.base.Adapter`.

A plugin needs nothing else: ``from ebflow_bench.adapters import Adapter, HParam, count, positive, register``
(and ``NLLUnavailable``, ``Unsupported``, ``HParamError``); ``ebflow-bench list METHOD`` prints what an adapter
declares (hyperparameters with types, defaults, bounds or choices and docs; its tune grid).
"""

from __future__ import annotations

import importlib

from .base import (Adapter, HParam, HParamError, NLLUnavailable, Unsupported, available, count, describe_hparam,
                   get, positive, register)

#: modules that register adapters when imported (one per method family)
ADAPTER_MODULES = (
    "ebflow_bench.adapters.ebflow",
    "ebflow_bench.adapters.energy_flow",
    "ebflow_bench.adapters.flowmc",
    "ebflow_bench.adapters.libflows",
    "ebflow_bench.adapters.reference",
    "ebflow_bench.adapters.approx_ml",
)

_loaded = False


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in ADAPTER_MODULES:
        importlib.import_module(mod)
    _loaded = True


__all__ = ["Adapter", "HParam", "HParamError", "NLLUnavailable", "Unsupported", "available", "count",
           "describe_hparam", "get", "positive", "register"]
