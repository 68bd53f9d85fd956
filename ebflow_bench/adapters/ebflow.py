"""EBFlow (Chao et al. 2023) behind the adapter protocol: one adapter class, parameterised by the objective.

Registered names: ``ebflow-ml``, ``ebflow-sml``, ``ebflow-ssm``, ``ebflow-dsm``, ``ebflow-fdssm`` (family
``ebflow``) and ``mle-lu`` (family ``mle-flow``, objective ``ml``: the same model with every dense matrix in LU
form, :func:`baselines.mle_flows.fully_connected_lu`). ``ebflow-ml`` is also the suite's "same dense
architecture trained with exact log-dets" maximum-likelihood baseline. The loss is
``ebflow.objectives.get(objective)``; its noise is drawn from a generator seeded with the cell's seed.

Architecture (hparam ``arch``): ``fc`` (default) is ``fully_connected(dim, layers)``, the paper's dense model,
used on every task including 2-D toys (the dense model is the point of the comparison); ``toy2d`` is the paper's
toy model (``layers`` x [dense, affine coupling of width ``hidden``, ActNorm]); ``cnn`` (image tasks only)
``layers`` 3x3 convolutions. ``mle-lu`` accepts only ``fc``. On image tasks (``task.image_shape`` set, data in
[0, 1]) the model gets the MaP logit preprocessing (``ebflow.preprocessing.LogitTransform``), as in the paper;
NLLs are in data (pixel) space.

Defaults, scaled for short CPU runs (the paper trains for hours on a GPU with RMSprop/Adam at lr 1e-4):
Adam, lr 1e-3, batch 256, EMA 0.999 used for ``nll`` and ``sample``. Choice where the paper is silent: the EMA
decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (TensorFlow's ``num_updates`` rule),
because with a fixed 0.999 the initial weights would still carry ``0.999^1500 = 22%`` of the average after the
default budget. DSM noise ``std`` and FDSSM ``eps`` default to the paper's MNIST-FC values (1.0) on image tasks
(MaP logit space) and to 0.1 elsewhere (the CIFAR/CNN configs and EBFlow's toy FDSSM; on unit-scale data a
larger ``std`` biases the learned density towards the noise-smoothed one). SSM uses one Rademacher slice.
``clip`` (gradient-norm clipping) is off by default; ``optimizer`` may be ``rmsprop`` (the paper's image runs).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar

import torch

from baselines.mle_flows import fully_connected_lu
from ebflow import EBFlow, objectives
from ebflow.architectures import cnn, coupling, fully_connected
from ebflow.ema import EMA
from ebflow.preprocessing import LogitTransform
from ebflow.training import train_step

from ..tasks import Task
from .base import Adapter, HParam, Unsupported, count, positive, register

_OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
_NLL_CHUNK = 1024

#: architectures: name -> builder(adapter) -> EBFlow
_ARCHS: dict[str, Callable[["EBFlowAdapter"], EBFlow]] = {
    "fc": lambda a: fully_connected(a.dim, a.layers, preprocessing=a._preprocessing()),
    "fc-lu": lambda a: fully_connected_lu(a.dim, a.layers, preprocessing=a._preprocessing()),
    "toy2d": lambda a: coupling(a.dim, a.layers, hidden=int(a.hparams["hidden"]), preprocessing=a._preprocessing()),
    "cnn": lambda a: cnn(a._image_shape("cnn"), a.layers, preprocessing=a._preprocessing()),
}

_COMMON: dict[str, HParam] = {
    "lr": positive(1e-3, "learning rate"),
    "batch_size": count(256, doc="mini-batch size"),
    "optimizer": HParam("adam", str, choices=tuple(_OPTIMIZERS), doc="adam or rmsprop (the paper's image runs)"),
    "ema_decay": HParam(0.999, float, low=0.0, high=1.0, doc="EMA decay for nll/sample; 0 = no EMA"),
    "clip": positive(None, "gradient-norm clipping threshold; None = off", optional=True),
    "hidden": count(64, doc="coupling width of arch toy2d"),
}
#: the per-task objective hyperparameters: name -> (declaration, value on image tasks, value elsewhere)
_OBJECTIVE_HPARAMS: dict[str, tuple[HParam, Any, Any]] = {
    "slices": (count(None, per_task=True, doc="Rademacher slices of SSM"), 1, 1),
    "std": (positive(None, "DSM noise std; None = 1.0 on image tasks (MaP logit space), 0.1 elsewhere",
                     per_task=True), 1.0, 0.1),
    "eps": (positive(None, "FDSSM finite-difference step; None = 1.0 on image tasks, 0.1 elsewhere",
                     per_task=True), 1.0, 0.1),
}


class EBFlowAdapter(Adapter):
    """An EBFlow trained with ``objectives.get(self.objective)``; subclasses set the names and hparam_spec.

    ``objective_hparams`` names the objective keywords (``slices``, ``std``, ``eps``) passed to the loss; each is
    a per-task hyperparameter whose default (``None``) :meth:`per_task_value` resolves from the task.
    """

    family = "ebflow"
    #: the architectures this adapter may build
    archs: ClassVar[tuple[str, ...]] = ("fc", "toy2d", "cnn")
    objective_hparams: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def per_task_value(cls, name: str, task: Task) -> Any:
        _, image, other = _OBJECTIVE_HPARAMS[name]
        return image if task.image_shape is not None else other

    @classmethod
    def check(cls, task: Task, dim: int, layers: int, hparams: dict[str, Any] | None = None) -> str | None:
        if layers < 1:
            return f"{cls.name} needs at least one layer, got layers={layers}"
        arch = (hparams or cls.defaults).get("arch")
        if arch == "cnn" and task.image_shape is None:
            return f"arch='cnn' needs an image task (task {task.name!r} has no image shape)"
        return None

    # ------------------------------------------------------------ building
    def _image_shape(self, arch: str) -> tuple[int, int, int]:
        if self.task.image_shape is None:
            raise Unsupported(f"{self.name}: arch={arch!r} needs an image task (task {self.task.name!r} has none)")
        return tuple(self.task.image_shape)  # type: ignore[return-value]

    def _preprocessing(self) -> LogitTransform | None:
        return LogitTransform() if self.task.image_shape is not None else None

    def build(self) -> None:
        arch = str(self.hparams["arch"])
        if arch not in self.archs:
            raise Unsupported(f"{self.name}: unknown arch {arch!r}; expected one of {list(self.archs)}")
        opt = str(self.hparams["optimizer"]).lower()
        if opt not in _OPTIMIZERS:
            raise ValueError(f"{self.name}: optimizer must be one of {sorted(_OPTIMIZERS)}, got {opt!r}")
        self.model = _ARCHS[arch](self).to(self.device)
        # Adam's fused kernel (CPU and CUDA): one pass over each tensor instead of several, which matters at
        # large D, where a step's optimizer update is memory-bound (5x faster at D = 4096 on 2 CPU cores)
        extra = {"fused": True} if opt == "adam" else {}
        self.optimizer = _OPTIMIZERS[opt](self.model.parameters(), lr=float(self.hparams["lr"]), **extra)
        decay = self.hparams["ema_decay"]
        self.ema = EMA(self.model, float(decay)) if decay else None
        self.loss_fn = objectives.get(self.objective)
        self.loss_kwargs: dict[str, Any] = {key: self.hparams[key] for key in self.objective_hparams}
        if "generator" in inspect.signature(self.loss_fn).parameters:
            self.loss_kwargs["generator"] = torch.Generator().manual_seed(self.seed)
        clip = self.hparams["clip"]
        self.clip = None if clip is None else float(clip)

    # ------------------------------------------------------------- verbs
    def train_step(self, batch: torch.Tensor) -> float:
        self.model.train()
        loss = train_step(self.model, self.optimizer, self.loss_fn, batch.to(self.device), clip=self.clip,
                          **self.loss_kwargs)
        if self.ema is not None:
            n = self.ema.num_updates
            self.ema.decay = min(float(self.hparams["ema_decay"]), (1.0 + n) / (10.0 + n))
            self.ema.update()
        return loss

    def _evaluated(self) -> AbstractContextManager[EBFlow]:
        """Context in which the model holds its evaluation (EMA) weights."""
        return self.ema.swapped() if self.ema is not None else nullcontext(self.model)

    @torch.no_grad()
    def nll(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        with self._evaluated() as model:
            parts = [-model.log_prob(chunk.to(self.device)) for chunk in x.split(_NLL_CHUNK)]
        return torch.cat(parts).to("cpu")

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        self.model.eval()
        with self._evaluated() as model:
            return model.sample(n).to("cpu", torch.float32)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def _define(name: str, objective: str, objective_hparams: tuple[str, ...] = (), *,
            family: str = "ebflow", archs: tuple[str, ...] = ("fc", "toy2d", "cnn"),
            arch: str = "fc") -> type[EBFlowAdapter]:
    """Create and register the adapter class ``name`` for ``objective``."""
    spec = {**_COMMON, "arch": HParam(arch, str, choices=archs, doc="model architecture"),
            **{key: _OBJECTIVE_HPARAMS[key][0] for key in objective_hparams}}
    cls = type(f"EBFlow_{name.replace('-', '_')}", (EBFlowAdapter,), {
        "name": name, "family": family, "objective": objective, "archs": archs,
        "objective_hparams": objective_hparams, "hparam_spec": spec, "__module__": __name__,
        "__doc__": f"``{name}``: {EBFlowAdapter.__doc__.splitlines()[0]} (objective ``{objective}``).",
    })
    return register(cls)


_define("ebflow-ml", "ml")
_define("ebflow-sml", "sml")
_define("ebflow-ssm", "ssm", ("slices",))
_define("ebflow-dsm", "dsm", ("std",))
_define("ebflow-fdssm", "fdssm", ("eps",))
_define("mle-lu", "ml", family="mle-flow", archs=("fc-lu",), arch="fc-lu")
