"""Maximum-likelihood flows from nflows and normflows behind the adapter protocol (family ``mle-flow``).

Registered names: ``nflows-maf``, ``nflows-realnvp``, ``nflows-lu``, ``normflows-realnvp``, ``normflows-nsf``,
``normflows-glow``, ``normflows-residual``; models from :func:`baselines.mle_flows.library_flow` (its docstring
lists them). Training minimises the mean NLL of the batch with Adam (lr 1e-3, batch 256, hidden width 64;
``clip`` optional gradient-norm clipping). On image tasks (``task.image_shape`` set, data in [0, 1]) the flow
models the logit of the pixels (the same fixed ``LogitTransform`` as EBFlow's MaP) and NLLs include its log-det,
so they are in pixel space like every other method's. ``normflows-nsf`` takes ``autoregressive=True`` for the
autoregressive spline. ``normflows-residual``'s NLL is a stochastic (Russian-roulette) estimate, exact only for
D = 2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from .._lazy import lazy, no_grad
from ..tasks import Task
from .base import Adapter, HParam, count, positive, register

# torch and the method's library load when a cell builds the adapter; the declarations below do not need them
# (the static checks of a matrix import no torch: ebflow_bench/_lazy.py)
torch = lazy("torch")
_mle = lazy("baselines.mle_flows")
_pre = lazy("ebflow.preprocessing")

if TYPE_CHECKING:
    from baselines.mle_flows import LibraryFlow

_NLL_CHUNK = 1024


class LibFlowAdapter(Adapter):
    """A library flow trained by maximum likelihood; subclasses set ``lib`` and ``kind``."""

    family = "mle-flow"
    objective = "ml"
    lib: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    hparam_spec: ClassVar[dict[str, HParam]] = {
        "lr": positive(1e-3, "learning rate"), "batch_size": count(256), "hidden": count(64),
        "clip": positive(None, "gradient-norm clipping; None = off", optional=True)}
    #: ``ebflow-bench tune`` search space (6 points, docs/TUNING.md)
    tune_grid: ClassVar[dict[str, tuple]] = {"lr": (3e-4, 1e-3, 3e-3), "hidden": (32, 64)}

    @classmethod
    def check(cls, task: Task, dim: int, layers: int, hparams: dict[str, Any] | None = None) -> str | None:
        return _mle.check_kind(cls.lib, cls.kind, dim, layers, task.image_shape)

    def build(self) -> None:
        image = self.task.image_shape is not None
        extra = {"autoregressive": bool(self.hparams["autoregressive"])} if "autoregressive" in self.hparams else {}
        self.model: LibraryFlow = _mle.library_flow(
            self.lib, self.kind, self.dim, self.layers, hidden=int(self.hparams["hidden"]),
            image_shape=self.task.image_shape, preprocessing=_pre.LogitTransform() if image else None, **extra,
        ).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=float(self.hparams["lr"]))
        clip = self.hparams["clip"]
        self.clip = None if clip is None else float(clip)

    def train_step(self, batch: torch.Tensor) -> float:
        self.model.train()
        loss = -self.model.log_prob(batch.to(self.device)).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.name}: non-finite training loss {loss.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        return float(loss.detach())

    @no_grad  # residual flows re-enable grad inside their blocks for the log-det estimate
    def nll(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        parts = [-self.model.log_prob(chunk.to(self.device)) for chunk in x.split(_NLL_CHUNK)]
        return torch.cat(parts).to("cpu")

    @no_grad
    def sample(self, n: int) -> torch.Tensor:
        self.model.eval()
        return self.model.sample(n).to("cpu", torch.float32)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def _define(lib: str, kind: str, **extra: HParam) -> type[LibFlowAdapter]:
    name = f"{lib}-{kind}"
    cls = type(f"LibFlow_{lib}_{kind}", (LibFlowAdapter,), {
        "name": name, "lib": lib, "kind": kind, "__module__": __name__,
        "hparam_spec": {**LibFlowAdapter.hparam_spec, **extra},
        "__doc__": f"``{name}``: {lib}'s {kind} flow trained by maximum likelihood.",
    })
    return register(cls)


_define("nflows", "maf")
_define("nflows", "realnvp")
_define("nflows", "lu")
_define("normflows", "realnvp")
_define("normflows", "nsf", autoregressive=HParam(False, bool, doc="autoregressive spline"))
_define("normflows", "glow")
_define("normflows", "residual")
