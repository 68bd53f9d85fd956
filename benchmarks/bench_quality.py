"""Quality after a short fixed-seed training: test NLL (nats) and sliced Wasserstein distance to the test set.

One matrix cell per (method, task) through ``ebflow_bench.runner.run_cell`` (``common.train_quality``:
200 steps, L = 4, seed 0, each adapter's default hyperparameters, 2 pinned threads), computed once in
``setup_cache`` and read by both tracks. Values are deterministic for a given commit and thread count, so any
change over commits is a change of the code. Lower is better for both.
"""

from __future__ import annotations

from typing import Any

from . import common


class TrackQuality:
    params = [common.TRACK_METHODS, common.TRACK_TASKS]
    param_names = ["method", "task"]
    timeout = 600.0

    def setup_cache(self) -> dict[tuple[str, str], Any]:
        common.pin()
        return common.quality_table()

    setup_cache.timeout = 600.0  # type: ignore[attr-defined]

    def setup(self, cache: dict, method: str, task: str) -> None:
        common.pin()

    @staticmethod
    def _value(cache: dict, method: str, task: str, metric: str) -> float:
        entry = cache[(method, task)]
        if isinstance(entry, str):
            raise RuntimeError(entry)
        if metric not in entry:
            raise RuntimeError(f"{method} on {task}: no {metric} (metric unavailable for this method)")
        return entry[metric]

    def track_test_nll(self, cache: dict, method: str, task: str) -> float:
        return self._value(cache, method, task, "test_nll")

    track_test_nll.unit = "nats"  # type: ignore[attr-defined]

    def track_sliced_wasserstein(self, cache: dict, method: str, task: str) -> float:
        return self._value(cache, method, task, "sliced_wasserstein")

    track_sliced_wasserstein.unit = "data units"  # type: ignore[attr-defined]
