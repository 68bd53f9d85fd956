"""Reference rows per task (family ``reference``): what the metrics say about the truth and about a Gaussian.

- ``truth``: exact samples from ``task.sampler`` and NLL ``-task.log_prob`` where the task has them, through the
  same metrics as every method: the noise floor of each metric at that sample size. A task without a sampler
  (real data) samples a seeded random permutation of its *training* data (held out from the test set the
  metrics compare against), repeated if more samples are asked for than it has; its NLL is then unavailable.
- ``gaussian-fit``: a full-covariance Gaussian fitted to the training data in closed form
  (:func:`ebflow_bench.diagnostics.gaussian_fit`), exact NLL and exact samples. Every model should beat it.

Neither trains: ``train_step`` does nothing and returns 0 (the runner still runs the step budget, cheaply).
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._lazy import lazy
from .base import Adapter, NLLUnavailable, register

# torch and the method's library load when a cell builds the adapter; the declarations below do not need them
# (the static checks of a matrix import no torch: ebflow_bench/_lazy.py)
torch = lazy("torch")
_diagnostics = lazy("ebflow_bench.diagnostics")


class _Reference(Adapter):
    family = "reference"
    defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def memory_parts(cls, dim: int, layers: int, hparams: dict[str, Any], batch: int) -> dict[str, int]:
        """No model: the task and the evaluation are all (:mod:`ebflow_bench.preflight` adds them)."""
        return {}

    def train_step(self, batch: torch.Tensor) -> float:
        return 0.0

    def num_params(self) -> int:
        return 0


@register
class Truth(_Reference):
    """``truth``: the task's exact sampler and density (or held-out training data when it has no sampler)."""

    name = "truth"
    objective = "truth"

    def build(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        if self.task.log_prob is None:
            raise NLLUnavailable(f"task {self.task.name!r} has no exact density, so the truth has no NLL")
        return -self.task.log_prob(x.to("cpu", torch.float64))

    def sample(self, n: int) -> torch.Tensor:
        if self.task.sampler is not None:
            return self.task.sampler(n, self.generator).to("cpu", torch.float32)
        train = self.task.train
        reps = -(-n // train.shape[0])
        idx = torch.cat([torch.randperm(train.shape[0], generator=self.generator) for _ in range(reps)])[:n]
        return train[idx].to("cpu", torch.float32)


@register
class GaussianFitReference(_Reference):
    """``gaussian-fit``: N(mean, cov) of the training data (plus s^2 I on a task smoothed with s)."""

    name = "gaussian-fit"
    objective = "closed-form"

    @classmethod
    def memory_parts(cls, dim: int, layers: int, hparams: dict[str, Any], batch: int) -> dict[str, int]:
        """No training state: the float64 covariance, its Cholesky factor and a work copy (D x D each)."""
        return {"covariance": 3 * 8 * dim * dim}

    def build(self) -> None:
        self.fit = _diagnostics.gaussian_fit(self.task)
        self.generator = torch.Generator().manual_seed(self.seed)

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        return self.fit.nll(x.to("cpu"))

    def sample(self, n: int) -> torch.Tensor:
        return self.fit.sample(n, self.generator).to(torch.float32)
