"""Timings that keep their order under load (issue 22): ``steptime.measure`` on an injected clock: blocks of
enough calls, interleaved, the median of blocks with its quartiles, robust to a preempted block."""

from __future__ import annotations

import pytest

from ebflow_bench.steptime import Timing, measure


class FakeClock:
    """A clock that only moves when a fake step runs: each call of ``step(name)`` advances it by the next
    duration of that step (cycling through its list), and records the call order."""

    def __init__(self, durations: dict[str, list[float]]) -> None:
        self.t = 0.0
        self.durations = durations
        self.calls: list[str] = []
        self.count = {name: 0 for name in durations}

    def __call__(self) -> float:
        return self.t

    def step(self, name: str):
        def run() -> None:
            seq = self.durations[name]
            self.t += seq[self.count[name] % len(seq)]
            self.count[name] += 1
            self.calls.append(name)
        return run


def test_blocks_last_at_least_min_block_and_the_median_is_per_call():
    clock = FakeClock({"a": [0.01]})
    (t,) = measure({"a": clock.step("a")}, blocks=5, min_block_s=0.05, clock=clock).values()
    assert t.number == 5 and t.blocks == 5  # ceil(0.05 / 0.01) calls per block
    assert t.median == pytest.approx(0.01) and t.iqr == pytest.approx(0.0) and t.minimum == pytest.approx(0.01)
    assert clock.count["a"] == 1 + 5 * 5  # the calibration call, then the blocks


def test_a_preempted_block_moves_neither_the_median_nor_the_order():
    # method a takes 2 ms and b 3 ms per call; one block of each is hit by a 1 s preemption
    a = [0.002] * 10
    b = [0.003] * 10
    a[3] = 1.0  # calibration call is a[0]; a[3] falls in a timed block
    b[5] = 1.0
    clock = FakeClock({"a": a, "b": b})
    t = measure({"a": clock.step("a"), "b": clock.step("b")}, blocks=7, min_block_s=0.0, clock=clock)
    assert t["a"].number == t["b"].number == 1
    assert t["a"].median == pytest.approx(0.002) and t["b"].median == pytest.approx(0.003)
    assert t["a"].median < t["b"].median
    mean_a = (6 * 0.002 + 1.0) / 7
    assert mean_a > t["b"].median  # ...the mean flips the order, the median does not
    assert t["a"].q3 == pytest.approx(0.002) and t["a"].minimum == pytest.approx(0.002)


def test_blocks_are_interleaved():
    clock = FakeClock({"a": [0.1], "b": [0.1]})
    measure({"a": clock.step("a"), "b": clock.step("b")}, blocks=3, min_block_s=0.0, clock=clock)
    assert clock.calls == ["a", "b"] + ["a", "b"] * 3


def test_quartiles_of_known_block_times():
    t = Timing.of([1.0, 2.0, 3.0, 4.0, 5.0], number=2)
    assert (t.median, t.q1, t.q3, t.iqr, t.minimum, t.blocks, t.number) == (3.0, 2.0, 4.0, 2.0, 1.0, 5, 2)


def test_sync_is_called_around_every_clock_read():
    events = []
    clock = FakeClock({"a": [0.01]})
    measure({"a": clock.step("a")}, blocks=2, min_block_s=0.0, clock=clock, sync=lambda: events.append("s"))
    assert events == ["s"] * (2 * 3)  # before and after each of the 3 blocks (calibration + 2)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="blocks must be >= 1"):
        measure({"a": lambda: None}, blocks=0)
