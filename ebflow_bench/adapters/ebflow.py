"""EBFlow (Chao et al. 2023) behind the adapter protocol: one adapter class, parameterised by the objective.

Registered names: ``ebflow-ml``, ``ebflow-sml``, ``ebflow-ssm``, ``ebflow-dsm``, ``ebflow-fdssm`` (family
``ebflow``) and ``mle-lu`` (family ``mle-flow``, objective ``ml``: the same model with every dense matrix in LU
form, :func:`baselines.mle_flows.fully_connected_lu`). ``ebflow-ml`` is also the suite's "same dense
architecture trained with exact log-dets" maximum-likelihood baseline. The loss is
``ebflow.objectives.get(objective)``; its noise is drawn from a generator seeded with the cell's seed.

Architecture (hparam ``arch``): ``fc`` (default) is ``fully_connected(dim, layers)``, the paper's dense model,
used on every task including 2-D toys (the dense model is the point of the comparison); ``fc-residual`` is the
official CIFAR-10 FC model (``fully_connected(dim, layers, residual=True)``: the same dense layers with the
residual smooth leaky ReLU ``x + alpha x + (1 - alpha) softplus(x)``), allowed wherever ``fc`` is; ``toy2d`` (D = 2 only,
refused elsewhere by ``check``) is the paper's toy model (``layers`` x [dense, affine coupling of width ``hidden``, ActNorm]); ``cnn`` (image tasks only)
``layers`` 3x3 convolutions. ``mle-lu`` accepts only ``fc``. On image tasks (``task.image_shape`` set, data in
[0, 1]) the model gets the MaP logit preprocessing (``ebflow.preprocessing.LogitTransform``), as in the paper;
NLLs are in data (pixel) space.

Defaults, scaled for short CPU runs (the paper trains for hours on a GPU with RMSprop/Adam at lr 1e-4):
Adam, lr 1e-3 (``ssm``: 3e-4, see below), batch 256, EMA 0.999 used for ``nll`` and ``sample``. The EMA decay warms up as in the official
code: ``min(decay, (1 + n) / (10 + n))`` with the counter ``n`` incremented before (``EMA(warmup=True)``).
Stabilisers of the official configs, all off by default: ``logit_smoothness`` (MaP logit divided by it; 0.5 in
MNIST-FC), ``clip_per_dim`` (a gradient clip on the official, per-dimension loss scale; ``clip`` is on the
suite's summed scale), ``lr_decay``/``lr_decay_epochs`` (per-epoch decay), ``optimizer`` ``rmsprop``/``adamw``,
and the energy regulariser ``lam`` of ``ssm``/``dsm``/``fdssm``. DSM noise ``std`` and FDSSM ``eps`` default on
image tasks to 0.5, the paper's MNIST-FC 1.0 in its logit space of smoothness 0.5 re-expressed for the plain
logit (``logit_smoothness`` 1, the suite's default); on a smoothed task (option ``smooth``) DSM's ``std`` is the
smoothing (EBFlow's toy rule); elsewhere 0.1 (the CIFAR/CNN configs and EBFlow's toy FDSSM). docs/TUNING.md has
the measurements behind these choices. SSM uses one Rademacher slice and lr 3e-4: at 1e-3 its gradient noise
misplaces mode weights and, trained longer on small tables, lets mass escape.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar

from .._lazy import lazy, no_grad
from ..tasks import Task
from .base import Adapter, HParam, Unsupported, count, positive, register

# torch and the method's library load when a cell builds the adapter; the declarations below do not need them
# (the static checks of a matrix import no torch: ebflow_bench/_lazy.py)
torch = lazy("torch")
_mle = lazy("baselines.mle_flows")
_ebflow = lazy("ebflow")
objectives = lazy("ebflow.objectives")
_archs = lazy("ebflow.architectures")
_ema = lazy("ebflow.ema")
_pre = lazy("ebflow.preprocessing")
_training = lazy("ebflow.training")

if TYPE_CHECKING:
    from ebflow import EBFlow
    from ebflow.preprocessing import LogitTransform

#: optimizer name -> class name in torch.optim
_OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}
_NLL_CHUNK = 1024

#: architectures: name -> builder(adapter) -> EBFlow
_ARCHS: dict[str, Callable[["EBFlowAdapter"], EBFlow]] = {
    "fc": lambda a: _archs.fully_connected(a.dim, a.layers, preprocessing=a._preprocessing()),
    "fc-residual": lambda a: _archs.fully_connected(a.dim, a.layers, residual=True, preprocessing=a._preprocessing()),
    "fc-lu": lambda a: _mle.fully_connected_lu(a.dim, a.layers, preprocessing=a._preprocessing()),
    "toy2d": lambda a: _archs.coupling(a.dim, a.layers, hidden=int(a.hparams["hidden"]),
                                       preprocessing=a._preprocessing()),
    "cnn": lambda a: _archs.cnn(a._image_shape("cnn"), a.layers, preprocessing=a._preprocessing()),
}

#: the architectures of the ``ebflow-*`` adapters (``mle-lu`` builds only ``fc-lu``)
_ARCH_NAMES: tuple[str, ...] = ("fc", "fc-residual", "toy2d", "cnn")

_COMMON: dict[str, HParam] = {
    "lr": positive(1e-3, "learning rate"),
    "batch_size": count(256, doc="mini-batch size"),
    "optimizer": HParam("adam", str, choices=tuple(_OPTIMIZERS),
                        doc="adam, adamw (EBFlow's toy configs) or rmsprop (its image configs)"),
    "ema_decay": HParam(0.999, float, low=0.0, high=1.0, doc="EMA decay for nll/sample; 0 = no EMA"),
    "clip": positive(None, "gradient-norm clip on the suite's (summed over D) loss scale; None = off",
                     optional=True),
    "clip_per_dim": positive(None, "gradient-norm clip on the official (per-dimension averaged) loss scale, "
                             "i.e. clip_per_dim * D here (MNIST-FC FDSSM: 5 -> 3920); exclusive with clip",
                             optional=True),
    "hidden": count(64, doc="coupling width of arch toy2d"),
    "logit_smoothness": HParam(1.0, float, low=0.05, high=10.0,
                               doc="MaP logit u = logit(p) / logit_smoothness on image tasks (official MNIST-FC "
                                   "0.5; 1 = plain logit, faster at short budgets: docs/TUNING.md)"),
    "map": HParam(True, bool, doc="image tasks: the logit as fixed preprocessing outside the trained model "
                                  "(match after preprocessing); false puts it inside the model (paper's ablation)"),
    "lr_decay": HParam(1.0, float, low=1e-6, high=1.0,
                       doc="lr x lr_decay after each of the first lr_decay_epochs epochs (official MNIST-FC 0.95)"),
    "lr_decay_epochs": HParam(0, int, low=0, doc="epochs with lr decay; an epoch is len(train) // batch_size steps"),
    "lr_decay_period": HParam(0, int, low=0, doc="steps per lr-decay 'epoch'; 0 = one pass over the training set. "
                              "Matches a published schedule on a smaller data set: the paper's MNIST epoch is "
                              "600 steps of batch 100, MNIST-5k's 45"),
}
#: the per-task objective hyperparameters: name -> (declaration, value on image tasks, value elsewhere);
#: DSM's std on a smoothed task (option ``smooth``) is the smoothing itself (EBFlow's toy rule)
_OBJECTIVE_HPARAMS: dict[str, tuple[HParam, Any, Any]] = {
    "slices": (count(None, per_task=True, doc="Rademacher slices of SSM"), 1, 1),
    "std": (positive(None, "DSM noise std; None = 0.5 on image tasks (the paper's MNIST-FC 1.0 in its logit "
                           "space of smoothness 0.5), the smoothing on smoothed toys, 0.1 elsewhere",
                     per_task=True), 0.5, 0.1),
    "eps": (positive(None, "FDSSM finite-difference step; None = 0.5 on image tasks, 0.1 elsewhere",
                     per_task=True), 0.5, 0.1),
    "lam": (HParam(0.0, float, low=0.0, doc="energy regulariser lam * mean E (official configs: 0 on MNIST, "
                   "1e-3 on CIFAR-10 and CelebA/STL, 0.1 for Glow)"),
            None, None),
}


class EBFlowAdapter(Adapter):
    """An EBFlow trained with ``objectives.get(self.objective)``; subclasses set the names and hparam_spec.

    ``objective_hparams`` names the objective keywords (``slices``, ``std``, ``eps``) passed to the loss; each is
    a per-task hyperparameter whose default (``None``) :meth:`per_task_value` resolves from the task.
    """

    family = "ebflow"
    #: the architectures this adapter may build
    archs: ClassVar[tuple[str, ...]] = _ARCH_NAMES
    objective_hparams: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def per_task_value(cls, name: str, task: Task) -> Any:
        _, image, other = _OBJECTIVE_HPARAMS[name]
        if name == "std" and task.image_shape is None and getattr(task, "smooth", 0):
            return float(task.smooth)  # EBFlow's toy rule: DSM noise = the data smoothing
        return image if task.image_shape is not None else other

    @classmethod
    def check(cls, task: Task, dim: int, layers: int, hparams: dict[str, Any] | None = None) -> str | None:
        if layers < 1:
            return f"{cls.name} needs at least one layer, got layers={layers}"
        arch = (hparams or cls.defaults).get("arch")
        if arch == "cnn" and task.image_shape is None:
            return f"arch='cnn' needs an image task (task {task.name!r} has no image shape)"
        if arch == "toy2d" and dim != 2:
            return (f"arch='toy2d' is the paper's 2-D toy model; task {task.name!r} has D={dim} "
                    "(use arch='fc', the dense model of every other task)")
        return None

    #: activation bytes per (batch row x dimension x layer) of a training step, by objective (measured:
    #: tests/test_preflight.py); ML and SML also hold LU factors of every D x D layer
    ACTIVATION_BYTES: ClassVar[dict[str, int]] = {"ml": 48, "sml": 64, "ssm": 96, "dsm": 64, "fdssm": 96}

    @classmethod
    def memory_parts(cls, dim: int, layers: int, hparams: dict[str, Any], batch: int) -> dict[str, int]:
        """The dense model: ``L`` D x D layers with biases (``toy2d`` adds its couplings, ``cnn`` is far smaller
        and estimated as ``fc``, an upper bound); Adam/AdamW state 2 buffers, RMSprop 1; an EMA copy when
        ``ema_decay > 0``; activations of a step (:data:`ACTIVATION_BYTES`); the LU factors and inverses of
        the log-det (ML in training; every objective when sampling or evaluating the NLL)."""
        from ..preflight import dense_parts

        d2 = dim * dim
        n_params = layers * (d2 + dim)
        if hparams.get("arch") == "toy2d":
            h = int(hparams.get("hidden") or 64)
            n_params += layers * (h * dim + h * h + 2 * h * dim)
        parts = dense_parts(n_params, optimizer=str(hparams.get("optimizer", "adam")),
                            ema=bool(hparams.get("ema_decay")))
        parts["activations"] = cls.ACTIVATION_BYTES.get(cls.objective, 96) * batch * dim * layers
        lu_layers = layers if cls.objective in ("ml", "sml") else 1  # saved for backward in ML's training
        parts["log-det workspace"] = 4 * d2 * lu_layers + 12 * d2
        return parts

    # ------------------------------------------------------------ building
    def _image_shape(self, arch: str) -> tuple[int, int, int]:
        if self.task.image_shape is None:
            raise Unsupported(f"{self.name}: arch={arch!r} needs an image task (task {self.task.name!r} has none)")
        return tuple(self.task.image_shape)  # type: ignore[return-value]

    def _logit(self) -> LogitTransform | None:
        if self.task.image_shape is None:
            return None
        return _pre.LogitTransform(smoothness=float(self.hparams["logit_smoothness"]))

    def _preprocessing(self) -> LogitTransform | None:
        """MaP: the logit outside the trained model (``map`` true, the default); else None (it goes inside)."""
        return self._logit() if self.hparams["map"] else None

    def build(self) -> None:
        arch = str(self.hparams["arch"])
        if arch not in self.archs:
            raise Unsupported(f"{self.name}: unknown arch {arch!r}; expected one of {list(self.archs)}")
        reason = self.check(self.task, self.dim, self.layers, self.hparams)
        if reason:
            raise Unsupported(f"{self.name}: {reason}")
        opt = str(self.hparams["optimizer"]).lower()
        if opt not in _OPTIMIZERS:
            raise ValueError(f"{self.name}: optimizer must be one of {sorted(_OPTIMIZERS)}, got {opt!r}")
        model = _ARCHS[arch](self)
        if not self.hparams["map"] and self.task.image_shape is not None:
            # no MaP (the paper's ablation): the logit is the model's first, non-linear layer, so score
            # matching sees raw pixels and the logit's Jacobian is part of the energy
            model = _ebflow.EBFlow([self._logit(), *model.layers], model.event_shape, None)
        self.model = model.to(self.device)
        # Adam's fused kernel (CPU and CUDA): one pass over each tensor instead of several, which matters at
        # large D, where a step's optimizer update is memory-bound (5x faster at D = 4096 on 2 CPU cores)
        extra = {"fused": True} if opt == "adam" else {}
        optimizer = getattr(torch.optim, _OPTIMIZERS[opt])
        self.optimizer = optimizer(self.model.parameters(), lr=float(self.hparams["lr"]), **extra)
        decay = self.hparams["ema_decay"]
        self.ema = _ema.EMA(self.model, float(decay), warmup=True) if decay else None
        self.loss_fn = objectives.get(self.objective)
        self.loss_kwargs: dict[str, Any] = {key: self.hparams[key] for key in self.objective_hparams}
        if "generator" in inspect.signature(self.loss_fn).parameters:
            self.loss_kwargs["generator"] = torch.Generator().manual_seed(self.seed)
        clip, clip_per_dim = self.hparams["clip"], self.hparams["clip_per_dim"]
        if clip is not None and clip_per_dim is not None:
            raise ValueError(f"{self.name}: give clip (suite scale) or clip_per_dim (official scale), not both")
        self.clip = None if clip is None else float(clip)
        if clip_per_dim is not None:
            self.clip = float(clip_per_dim) * self.dim
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"{self.name}: gradient clip must be positive, got {self.clip}")
        self.lr0 = float(self.hparams["lr"])
        self.lr_decay = float(self.hparams["lr_decay"])
        self.lr_decay_epochs = int(self.hparams["lr_decay_epochs"])
        _training.decayed_lr(self.lr0, 0, 1, self.lr_decay, self.lr_decay_epochs)  # validates the schedule
        self.steps_per_epoch = int(self.hparams["lr_decay_period"]) or max(
            1, self.task.train.shape[0] // min(self.batch_size, self.task.train.shape[0]))
        self.steps_done = 0

    # ------------------------------------------------------------- verbs
    def train_step(self, batch: torch.Tensor) -> float:
        self.model.train()
        if self.lr_decay != 1.0:
            lr = _training.decayed_lr(self.lr0, self.steps_done, self.steps_per_epoch, self.lr_decay,
                                      self.lr_decay_epochs)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        loss = _training.train_step(self.model, self.optimizer, self.loss_fn, batch.to(self.device), clip=self.clip,
                                    **self.loss_kwargs)
        self.steps_done += 1
        if self.ema is not None:
            self.ema.update()
        return loss

    def _evaluated(self) -> AbstractContextManager[EBFlow]:
        """Context in which the model holds its evaluation (EMA) weights."""
        return self.ema.swapped() if self.ema is not None else nullcontext(self.model)

    @no_grad
    def nll(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        with self._evaluated() as model:
            parts = [-model.log_prob(chunk.to(self.device)) for chunk in x.split(_NLL_CHUNK)]
        return torch.cat(parts).to("cpu")

    @no_grad
    def sample(self, n: int) -> torch.Tensor:
        self.model.eval()
        with self._evaluated() as model:
            return model.sample(n).to("cpu", torch.float32)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


#: ``ebflow-bench tune`` search spaces, 6 points each (docs/TUNING.md): the learning rate and the objective's own knob
_GRID_ML = {"lr": (3e-4, 1e-3, 3e-3), "batch_size": (128, 256)}
_GRIDS: dict[str, dict[str, tuple]] = {
    "ml": _GRID_ML, "sml": _GRID_ML,
    "ssm": {"lr": (1e-3, 3e-4, 1e-4), "clip_per_dim": (None, 1.0)},
    "dsm": {"lr": (1e-3, 3e-4), "std": (0.1, 0.3, 0.5)},
    "fdssm": {"lr": (1e-3, 3e-4), "eps": (0.1, 0.5, 1.0)},
}


def _define(name: str, objective: str, objective_hparams: tuple[str, ...] = (), *,
            family: str = "ebflow", archs: tuple[str, ...] = _ARCH_NAMES,
            arch: str = "fc", **defaults: Any) -> type[EBFlowAdapter]:
    """Create and register the adapter class ``name`` for ``objective`` (``defaults`` override the declared
    defaults of ``_COMMON``, e.g. ``lr=3e-4``); its ``tune_grid`` is the objective's entry of ``_GRIDS``."""
    spec = {**_COMMON, "arch": HParam(arch, str, choices=archs, doc="model architecture"),
            **{key: _OBJECTIVE_HPARAMS[key][0] for key in objective_hparams}}
    for key, value in defaults.items():
        spec[key] = dataclasses.replace(spec[key], default=value)
    cls = type(f"EBFlow_{name.replace('-', '_')}", (EBFlowAdapter,), {
        "name": name, "family": family, "objective": objective, "archs": archs,
        "objective_hparams": objective_hparams, "hparam_spec": spec, "__module__": __name__,
        "tune_grid": dict(_GRIDS[objective]),
        "__doc__": f"``{name}``: {EBFlowAdapter.__doc__.splitlines()[0]} (objective ``{objective}``).",
    })
    return register(cls)


_define("ebflow-ml", "ml")
_define("ebflow-sml", "sml")
# ssm at lr 3e-4: at 1e-3 its single-slice gradient noise misplaces mode weights (eight_gaussians +88% vs +28%
# at 3e-4) and lets mass escape on small tables with longer training; docs/TUNING.md
_define("ebflow-ssm", "ssm", ("slices", "lam"), lr=3e-4)
_define("ebflow-dsm", "dsm", ("std", "lam"))
_define("ebflow-fdssm", "fdssm", ("eps", "lam"))
_define("mle-lu", "ml", family="mle-flow", archs=("fc-lu",), arch="fc-lu")
