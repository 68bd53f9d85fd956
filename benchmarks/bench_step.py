"""Cost of one training step of the dense EBFlow architecture (``gaussian`` task, batch 100, 2 threads).

``TimeStepD`` sweeps D at L = 2 and ``TimeStepL`` sweeps L at D = 512 (not the full product: too slow on two
cores); ``PeakMemStep`` records the process's peak resident memory for a build plus two steps at a few D.
Every ``setup`` pins the threads and seeds (``common.pin``) and runs one untimed warm-up step; asv's own
warm-up is off (``warmup_time = 0``) and each sample is one step (``number = 1``). Rough cost of a full
run on 2 cores: about 8 minutes for TimeStepD, 1.5 for TimeStepL, 0.5 for PeakMemStep.
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
    # 2 to 5 samples, stop after 10 s of samples; 2 rounds (processes) interleaved over the parameters
    repeat = (2, 5, 10.0)
    rounds = 2
    timeout = 300.0


class TimeStepL(_Step):
    """Step time against L at fixed D (linear in L for every objective)."""

    params = [common.STEP_METHODS, [common.L_SWEEP_DIM], common.L_SWEEP]
    repeat = (3, 10, 5.0)
    rounds = 2
    timeout = 120.0


class PeakMemStep:
    """Peak resident memory of a process that builds the model and runs a warm-up and one more step."""

    params = [common.PEAKMEM_METHODS, common.PEAKMEM_DIMS, [common.D_SWEEP_LAYERS]]
    param_names = ["method", "dim", "layers"]
    timeout = 120.0

    def setup(self, method: str, dim: int, layers: int) -> None:
        common.pin()

    def peakmem_step(self, method: str, dim: int, layers: int) -> None:
        common.warmed_step(method, dim, layers).step()
