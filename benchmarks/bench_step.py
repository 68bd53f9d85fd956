"""Cost of one training step of the dense EBFlow architecture (``gaussian`` task, batch 100, 2 threads).

``TimeStepD`` sweeps D at L = 2 and ``TimeStepL`` sweeps L at D = 512 (not the full product: too slow on two
cores); ``TimeFloorD`` times, at the same D, a plain forward+backward of the same model and each objective's
matrix products alone (``ebflow_bench.stepcost`` reports each step as a multiple of both); ``PeakMemStep``
records the process's peak resident memory for a build plus two steps at every D of the sweep, beside a
``baseline`` process that only imports the suite (the report subtracts it).
Every ``setup`` pins the threads and seeds (``common.pin``) and runs one untimed warm-up step; asv's own
warm-up is off (``warmup_time = 0``) and each sample is one step (``number = 1``). Every timer takes at least
5 samples in each of 2 rounds (processes), so that one preemption moves no statistic: asv reports the median of
the samples and stores their quartiles (``stats_q_25``/``stats_q_75``: the spread). Rough cost of a full run
on 2 cores: about 12 minutes for TimeStepD, 4 for TimeFloorD, 2 for TimeStepL, 4 for PeakMemStep.
"""

from __future__ import annotations

from . import common


class _Step:
    param_names = ["method", "dim", "layers"]
    number = 1
    warmup_time = 0.0

    def setup(self, method: str, dim: int, layers: int) -> None:
        self.bench = common.warmed_step(method, dim, layers)

    def time_step(self, method: str, dim: int, layers: int) -> None:
        self.bench.step()


class TimeStepD(_Step):
    """Step time against D at fixed L (the O(D^2) vs O(D^3) claim)."""

    params = [common.STEP_METHODS, common.D_SWEEP, [common.D_SWEEP_LAYERS]]
    # 5 to 10 samples, stop after 10 s of samples; 2 rounds (processes) interleaved over the parameters
    repeat = (5, 10, 10.0)
    rounds = 2
    timeout = 300.0


class TimeStepL(_Step):
    """Step time against L at fixed D (linear in L for every objective)."""

    params = [common.STEP_METHODS, [common.L_SWEEP_DIM], common.L_SWEEP]
    repeat = (5, 10, 5.0)
    rounds = 2
    timeout = 120.0


class TimeFloorD:
    """The limits of a step against D at L = 2: plain forward+backward (``plain-fb``) and GEMM floors
    (``gemm-<objective>``: the step's matrix products alone, ``ebflow_bench.steptime.product_counts``)."""

    params = [common.FLOOR_METHODS, common.D_SWEEP, [common.D_SWEEP_LAYERS]]
    param_names = ["method", "dim", "layers"]
    number = 1
    warmup_time = 0.0
    repeat = (5, 10, 10.0)
    rounds = 2
    timeout = 300.0

    def setup(self, method: str, dim: int, layers: int) -> None:
        self.bench = common.warmed_floor(method, dim, layers)

    def time_floor(self, method: str, dim: int, layers: int) -> None:
        self.bench.timed_step()


class PeakMemStep:
    """Peak resident memory of a process that builds the model and runs a warm-up and one more step
    (``baseline``: a process that only imports the suite and pins its threads)."""

    params = [common.PEAKMEM_METHODS, common.PEAKMEM_DIMS, [common.D_SWEEP_LAYERS]]
    param_names = ["method", "dim", "layers"]
    timeout = 120.0

    def setup(self, method: str, dim: int, layers: int) -> None:
        common.pin()

    def peakmem_step(self, method: str, dim: int, layers: int) -> None:
        if method != common.PEAKMEM_BASELINE:
            common.warmed_step(method, dim, layers).step()
