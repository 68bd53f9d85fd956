"""Published protocols: every value as the official config states it, and its conversion to this suite.

Two parts, one module:

1. **The official values** (:data:`OFFICIAL`): one :class:`OfficialConfig` per official config file of EBFlow
   (github.com/chen-hao-chao/ebflow at :data:`OFFICIAL_COMMIT`): MNIST FC, CIFAR-10 FC, MNIST CNN, CIFAR-10 CNN
   (``real_world/ebflow/configs/<data>/<model>/<loss>.txt``) and the 2-D toys
   (``toy_examples/ebflow/configs/<data>/<loss>.txt``), in the official code's own units, with the file (and,
   for values that live in code rather than in the config, the line) they come from. Beside them the
   flowMC-EBM and SAEF rows, whose papers state their values on this suite's scale already.
2. **The conversions** to the suite's hyperparameters: small named functions (:func:`loss_scale`,
   :func:`energy_regulariser`, :func:`gradient_clip`, :func:`noise_scale`, :func:`logit_smoothness`,
   :func:`optimizer`, :func:`epoch_steps`, :func:`epochs_to_steps`, :func:`lr_schedule`), each with its derivation
   from ``Experiment.get_loss`` (``real_world/ebflow/train/experiment.py``) or the toy training loop
   (``toy_examples/ebflow/run_lib/train_twodim.py``) in its docstring, composed by :func:`suite_hparams`.

Nothing converted is typed by hand: the ``paper`` preset's EBFlow blocks (:data:`PROTOCOLS`, via
:func:`block_hparams`) and the ``reproduce`` preset's EBFlow blocks (:data:`REPRODUCE`) are
``suite_hparams(official config, task shape)``; ``tests/test_protocols.py`` requires every resolved cell of those
blocks to carry exactly these values, ``tests/test_protocol_oracle.py`` checks each conversion against the
official loss arithmetic (float64 gradients, 1e-8), and ``tests/test_official_parity.py`` (marker ``official``)
against the official code itself. ``docs/PROTOCOLS.md`` is generated here:
``python -m ebflow_bench.protocols > docs/PROTOCOLS.md``.
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

OFFICIAL_REPO = "github.com/chen-hao-chao/ebflow"
OFFICIAL_COMMIT = "d59c4e5"
GET_LOSS = "real_world/ebflow/train/experiment.py"
TOY_LOOP = "toy_examples/ebflow/run_lib/train_twodim.py"
OBJECTIVES = ("ml", "sml", "ssm", "dsm", "fdssm")


# ============================================================================ 1. official values
@dataclass(frozen=True)
class OfficialConfig:
    """One official config file, its values as the file states them (keys as in the file).

    ``shape`` is the data shape the official loss sees (``[C, H, W]`` images, ``[D]`` toys); ``train_size`` the
    images of one official training epoch (None: the toys draw fresh batches, no epochs); ``code`` which loss
    code trains it (``real_world``: ``Experiment.get_loss``; ``toy``: the toy loop); ``optimizer`` and
    ``activation`` are set in code, with their source lines.
    """

    family: str
    objective: str
    path: str
    shape: tuple[int, ...]
    code: str
    train_size: int | None
    train_size_source: str
    optimizer: str
    optimizer_source: str
    activation: str
    activation_source: str
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    @property
    def key(self) -> tuple[str, str]:
        return (self.family, self.objective)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def _per_loss(**by_loss: Any) -> dict[str, Any]:
    """``ml=.., sml=.., ...`` or ``all=..`` with overrides -> a value per objective."""
    base = by_loss.pop("all", None)
    return {o: by_loss.get(o, base) for o in OBJECTIVES}


def _real_world(family: str, data: str, model: str, shape: tuple[int, ...], train: tuple[int, str],
                activation: tuple[str, str], shared: dict[str, Any], per_loss: dict[str, dict[str, Any]]
                ) -> list[OfficialConfig]:
    out = []
    for o in OBJECTIVES:
        values = {**shared, "loss": o, **{k: v[o] for k, v in per_loss.items()}}
        out.append(OfficialConfig(
            family, o, f"real_world/ebflow/configs/{data}/{model}/{o}.txt", shape, "real_world", train[0], train[1],
            "rmsprop", f"real_world/ebflow/experiments/{data}_{model}.py:{56 if model == 'fc' else 59} "
                       "(torch.optim.RMSprop(lr, weight_decay=wd); MultiStepLR(range(1, milestones), gamma) "
                       "stepped once per epoch)",
            activation[0], activation[1], MappingProxyType(values)))
    return out


_MNIST_TRAIN = (50_000, "real_world/ebflow/datasets/mnist.py:24 (Subset(range(0, 50_000)); 10,000 validation)")
_CIFAR_TRAIN = (40_000, "real_world/ebflow/datasets/cifar10.py:29 (Subset(arange(0, 40000)); 10,000 validation)")
_RW_SHARED = {"batch_size": 100, "lr": 1e-4, "ema_decay": 0.999, "slices": 1, "alpha": 0.3, "neg_init": 1,
              "bias": 1, "MaP": 1, "warmup_epochs": 0}

OFFICIAL: tuple[OfficialConfig, ...] = tuple([
    *_real_world("mnist-fc", "mnist", "fc", (1, 28, 28), _MNIST_TRAIN,
                 ("plain", "real_world/ebflow/models/mnist/fc.py:34 (SmoothLeakyRelu(alpha))"),
                 {**_RW_SHARED, "data_aug": 0, "epochs": 10000, "wd": 0, "gamma": 0.95, "milestones": 50,
                  "eps": 1.0, "std": 1.0, "lambda": 0.0, "num_layers": 2, "logit_smoothness": 0.5},
                 {"grad_clip_norm": _per_loss(all=-1, fdssm=5.0)}),
    *_real_world("cifar-fc", "cifar", "fc", (3, 32, 32), _CIFAR_TRAIN,
                 ("residual", "real_world/ebflow/models/cifar/fc.py:35 (SmoothLeakyRelu(alpha, residual=True))"),
                 {**_RW_SHARED, "data_aug": 1, "epochs": 10000, "wd": 0, "grad_clip_norm": -1, "eps": 0.1,
                  "std": 0.1, "lambda": 0.001, "num_layers": 2, "logit_smoothness": 0.5},
                 {"gamma": _per_loss(all=0.7, ssm=0.85, dsm=0.85), "milestones": _per_loss(all=20, ssm=30, dsm=30)}),
    *_real_world("mnist-cnn", "mnist", "cnn", (1, 28, 28), _MNIST_TRAIN,
                 ("residual", "real_world/ebflow/models/mnist/cnn.py:39 (SmoothLeakyRelu(alpha, residual=True))"),
                 {**_RW_SHARED, "data_aug": 0, "epochs": 1000, "milestones": 50, "eps": 0.1, "std": 0.1,
                  "lambda": 0.0, "num_layers": 6, "num_blocks": 3, "kernel_size": 7, "spec_norm": 0,
                  "logit_smoothness": 0.75},
                 {"grad_clip_norm": _per_loss(all=-1, fdssm=5.0), "wd": _per_loss(all=1e-5, ssm=0, fdssm=0),
                  "gamma": _per_loss(all=0.95, ml=0.925, sml=0.925)}),
    *_real_world("cifar-cnn", "cifar", "cnn", (3, 32, 32), _CIFAR_TRAIN,
                 ("residual", "real_world/ebflow/models/cifar/cnn.py (SmoothLeakyRelu(alpha, residual=True))"),
                 {**_RW_SHARED, "data_aug": 1, "epochs": 10000, "wd": 0, "grad_clip_norm": -1, "eps": 0.1,
                  "std": 0.1, "lambda": 0.001, "num_layers": 6, "num_blocks": 3, "kernel_size": 7,
                  "logit_smoothness": 0.75},
                 {"gamma": _per_loss(all=0.8, ssm=0.9, fdssm=0.85), "milestones": _per_loss(all=20, fdssm=50),
                  "spec_norm": _per_loss(all=1, sml=0, fdssm=0)}),
])

#: the toys: ``data -> (batch_size, n_iters, {loss: (lr, grad_clip, opt_type, t_net_act)})`` from
#: ``toy_examples/ebflow/configs/<data>/<loss>.txt``; every toy config also has std 0.375, weight_decay 0.0,
#: n_blocks 10, hidden_size 64, weight_init "ortho", use_ema 1
_TOY_VALUES = {
    "sine": (2048, 50001, {"ml": (5e-4, 1.0, "adam", "swish"), "sml": (5e-4, 0.0, "adamW", "swish"),
                           "ssm": (1e-4, 1.0, "adam", "swish"), "dsm": (1e-4, 1.0, "adam", "elu"),
                           "fdssm": (1e-4, 1.0, "adam", "swish")}),
    "swirl": (2048, 50001, {"ml": (5e-3, 1.0, "adam", "elu"), "sml": (1e-4, 10.0, "adam", "elu"),
                            "ssm": (1e-4, 10.0, "adam", "swish"), "dsm": (1e-4, 10.0, "adam", "elu"),
                            "fdssm": (1e-4, 2.5, "adam", "elu")}),
    "checkerboard": (10000, 100001, {"ml": (1e-4, 10.0, "adamW", "elu"), "sml": (1e-4, 10.0, "adamW", "elu"),
                                     "ssm": (1e-4, 10.0, "adamW", "swish"), "dsm": (1e-4, 10.0, "adamW", "elu"),
                                     "fdssm": (1e-4, 10.0, "adam", "elu")}),
}
#: the toy FDSSM step, hard-coded in the toy loop (not in the configs)
TOY_FDSSM_EPS = (0.1, f"{TOY_LOOP}:141 (eps = 0.1; v = w / sqrt(||w||^2 + 1e-8) * eps, line 144)")

OFFICIAL += tuple(
    OfficialConfig(
        f"toy-{data}", o, f"toy_examples/ebflow/configs/{data}/{o}.txt", (2,), "toy", None,
        f"{TOY_LOOP}:95 (n_iters fresh batches; no epochs)", opt.lower(),
        f"{TOY_LOOP}:51-60 (Adam / AdamW, weight_decay=config, betas (0.9, 0.999))",
        f"coupling t-net {act}", "toy_examples/ebflow/models/coupling_net.py",
        MappingProxyType({"loss_type": o, "lr": lr, "grad_clip": clip, "opt_type": opt, "batch_size": batch,
                          "n_iters": iters, "std": 0.375, "weight_decay": 0.0, "n_blocks": 10, "hidden_size": 64,
                          "t_net_act": act, "use_ema": 1}))
    for data, (batch, iters, per) in _TOY_VALUES.items() for o, (lr, clip, opt, act) in per.items())

_BY_KEY = {c.key: c for c in OFFICIAL}


def official(family: str, objective: str) -> OfficialConfig:
    """The official config of ``family`` (``mnist-fc``, ``cifar-fc``, ``mnist-cnn``, ``cifar-cnn``,
    ``toy-sine``, ``toy-swirl``, ``toy-checkerboard``) and ``objective``."""
    try:
        return _BY_KEY[(family, objective)]
    except KeyError:
        fams = sorted({c.family for c in OFFICIAL})
        raise KeyError(f"no official config {family!r}/{objective!r}; families {fams}, objectives "
                       f"{list(OBJECTIVES)}") from None


# ============================================================================ 2. conversions
def _clean(x: float) -> float:
    """``x`` rounded to 12 significant digits (``0.001 * 1024 / 0.1**2`` is 102.4, not 102.39999999999998)."""
    return float(f"{x:.12g}")


def _image(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"expected an image shape (C, H, W), got {shape}")
    return shape  # type: ignore[return-value]


def loss_scale(objective: str, shape: tuple[int, ...], code: str = "real_world", slices: int = 1) -> float:
    """``k`` with (suite loss) = k * (official loss) in every parameter gradient, on the same batch and noise.

    The suite's objectives are per sample, *summed* over the D dimensions, averaged over the batch
    (``ebflow/objectives.py``). ``Experiment.get_loss`` (``real_world``):

    - ``ml``: ``-log_prob(x).sum() / len(x)`` (line 168), the NLL per sample: ``k = 1``.
    - ``sml``: ``x`` is the data and the model samples concatenated (line 173), so ``.sum() / len(x)`` divides
      the ``B`` differences ``E(data) - E(sample)`` by ``2B`` (line 179): ``k = 2``.
    - ``dsm``, ``ssm``: ``.sum() / len(x) / dim`` (lines 195, 215): per-dimension: ``k = D``. SSM's ``x`` is the
      sliced batch of ``slices * B`` rows while its entries are averaged over the slices first (line 211), so
      the sum is divided by ``slices`` once more: ``k = slices * D``.
    - ``fdssm``: ``.sum() / len(x) / eps**2`` (line 239); the direction has norm ``eps``, so the suite's
      ``(D / eps^2)`` (``E[v v^T] = eps^2 / D I``) leaves ``k = D``.

    The toy loop (``code="toy"``) averages over the batch of per-sample sums (lines 111, 122, 127, 137) and
    multiplies FDSSM by ``dim`` (line 155): ``k = 1`` for every objective (its SML averages the ``B``
    differences, line 122).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")
    if code == "toy":
        return 1.0
    if code != "real_world":
        raise ValueError(f"code must be 'real_world' or 'toy', got {code!r}")
    d = math.prod(shape)
    return {"ml": 1.0, "sml": 2.0, "dsm": float(d), "ssm": float(slices * d), "fdssm": float(d)}[objective]


def energy_regulariser(objective: str, lam: float, shape: tuple[int, ...], eps: float | None = None) -> float:
    """The suite's ``lam`` (``+ lam * mean E``, summed scale) for the official ``lambda`` (``reg * lambda``).

    - ``dsm`` (``experiment.py:191``): ``torch.sum(square(score + noise/std) * 0.5, dim=1)`` sums the
      ``[B, C, H, W]`` tensor over the **channel axis only**, leaving ``[B, H, W]``; the scalar
      ``reg * lambda`` (``reg`` = mean energy of the noisy batch, line 190) is added to each of those
      ``B*H*W`` entries; ``.sum() / B / D`` then gives ``(DSM sum) / D + lambda * H * W / D * reg``. On the
      suite's scale (``k = D``, :func:`loss_scale`): ``lam = lambda * H * W`` (= ``lambda * D / C``).
    - ``ssm`` (line 211): the same pattern over the flattened ``[B*H*W]``: ``lam = lambda * H * W``
      (its extra ``1/slices`` applies to the regulariser and the main term alike).
    - ``fdssm`` (line 235): ``reg = mean E(x)`` is added once per sample and the sum divided by ``eps**2`` but
      not by D: ``(FD sum) / eps^2 + lambda * reg / eps^2``; times ``k = D``: ``lam = lambda * D / eps^2``.
    - ``ml``, ``sml``: no regulariser in the code (a ``lambda`` in their config is unused): 0.
    """
    if objective in ("ml", "sml"):
        return 0.0
    if objective in ("dsm", "ssm"):
        _, h, w = _image(shape)
        return _clean(lam * h * w)
    if objective == "fdssm":
        if eps is None or not eps > 0:
            raise ValueError("fdssm's regulariser needs the official eps")
        return _clean(lam * math.prod(shape) / eps**2)
    raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")


def gradient_clip(objective: str, clip: float, shape: tuple[int, ...], code: str = "real_world",
                  slices: int = 1) -> dict[str, float]:
    """The suite's clip hyperparameter for the official ``clip_grad_norm_(max_norm=clip)``: ``{}`` when the
    official value is <= 0 (off: ``if grad_clip_norm > 0``, ``experiment.py:264``; toy loop line 161).

    Clipping the gradient of ``k * loss`` (:func:`loss_scale`) at ``k * c`` is clipping ``loss`` at ``c``. The
    adapter's ``clip_per_dim`` is ``clip_per_dim * D`` on the suite's scale, so the real-world DSM/FDSSM clip is
    ``clip_per_dim = c`` (SSM with slices: ``c * slices``); everywhere else ``clip = k * c`` (ML: ``c``; SML:
    ``2c``; the toys, whose losses are on the suite's scale already: ``c``).
    """
    if not clip > 0:
        return {}
    k = loss_scale(objective, shape, code, slices)
    d = math.prod(shape)
    if code == "real_world" and objective in ("dsm", "ssm", "fdssm"):
        return {"clip_per_dim": float(clip * k / d)}
    return {"clip": float(clip * k)}


def noise_scale(value: float, official_smoothness: float = 1.0, suite_smoothness: float | None = None) -> float:
    """DSM ``std`` / FDSSM ``eps`` in the suite's logit space for the official value in its own logit space.

    Both codes apply the noise after the fixed preprocessing, to ``u = logit(p) / a`` (official
    ``LogitTransform(a)``: ``(1/a) (log p - log(1 - p))``, ``layers/transforms.py``; suite
    ``LogitTransform(smoothness=a)``). With the suite at smoothness ``a'``, ``u' = u * a / a'``, so a noise
    of std ``s`` in ``u`` is ``s * a / a'`` in ``u'``; at the official smoothness (the default) it is unchanged.
    FDSSM's direction has norm ``eps`` over all D entries in both codes (``dim=(1, 2, 3)``, line 220).
    """
    a2 = official_smoothness if suite_smoothness is None else suite_smoothness
    return float(value * official_smoothness / a2)


def logit_smoothness(official_value: float) -> float:
    """The suite's ``logit_smoothness`` for the official ``logit_smoothness``: the same number.

    Official preprocessing (``models/*/fc.py``): dequantize, ``/256``, ``(x + shift) * (1 - 2 shift)``
    (``Normalization(-shift, 1 / (1 - 2 shift))``), ``logit / a``. The suite's ``LogitTransform``:
    ``logit(shift + (1 - 2 shift) x) / a`` with ``shift = 1e-6``: the same map up to a ``2 shift^2 = 2e-12``
    offset of ``p``.
    """
    return float(official_value)


def optimizer(name: str, weight_decay: float = 0.0) -> str:
    """The suite's ``optimizer`` for the official one. RMSprop (real world) keeps torch's defaults in both.
    The toys' ``AdamW(weight_decay=0.0)`` is Adam (the decoupled decay ``lr * wd * theta`` vanishes, the
    betas are Adam's (0.9, 0.999)); the suite's ``adamw`` uses torch's default decay 0.01, so it maps to
    ``adam``. A non-zero decay (MNIST CNN's RMSprop ``wd`` 1e-5) has no suite hyperparameter: it is listed
    among the differences (:func:`differences`)."""
    name = name.lower()
    if name == "adamw" and weight_decay == 0:
        return "adam"
    if name not in ("adam", "adamw", "rmsprop"):
        raise ValueError(f"unknown official optimizer {name!r}")
    return name


def epoch_steps(train_size: int, batch_size: int) -> int:
    """Steps of one official epoch: ``len(train_loader)`` = ``ceil(train_size / batch_size)`` (``DataLoader``
    keeps the last partial batch). MNIST: 50,000 / 100 = 500 (the loader's first 50,000 of the 60,000
    images; the rest is validation); CIFAR-10: 40,000 / 100 = 400."""
    return math.ceil(train_size / batch_size)


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
    """``epochs`` official epochs in steps (the suite's budgets are steps)."""
    return int(round(epochs * steps_per_epoch))


def lr_schedule(gamma: float, milestones: int, steps_per_epoch: int) -> dict[str, Any]:
    """The suite's ``lr_decay``/``lr_decay_epochs``/``lr_decay_period`` for the official
    ``MultiStepLR(milestones=[1, ..., milestones - 1], gamma)`` stepped once per epoch (``experiment.py:279``).

    After ``e`` scheduler steps the lr is ``lr0 * gamma ** |{m <= e}| = lr0 * gamma ** min(e, milestones - 1)``,
    used during epoch ``e`` (0-based), i.e. steps ``e * P ... (e + 1) * P - 1``. ``ebflow.training.decayed_lr``
    gives step ``t`` ``lr0 * factor ** min(t // period, epochs)``: ``factor = gamma``,
    ``epochs = milestones - 1``, ``period = P`` (:func:`epoch_steps`). ``gamma == 1`` is no decay.
    """
    if gamma == 1 or milestones <= 1:
        return {"lr_decay": 1.0, "lr_decay_epochs": 0, "lr_decay_period": 0}
    return {"lr_decay": float(gamma), "lr_decay_epochs": int(milestones - 1), "lr_decay_period": int(steps_per_epoch)}


#: the suite's architecture for each official family and activation
_ARCH = {("fc", "plain"): "fc", ("fc", "residual"): "fc-residual", ("cnn", "residual"): "cnn"}


def suite_hparams(cfg: OfficialConfig, shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """The suite hyperparameters of the adapter ``ebflow-<objective>`` for ``cfg`` applied to data of ``shape``
    (default: the official data's shape; on a stand-in task, e.g. ``patches32`` (1, 32, 32) for CIFAR-10 FC, the
    shape-dependent conversions use the task's shape, as the official code run on that data would)."""
    shape = cfg.shape if shape is None else tuple(shape)
    o = cfg.objective
    if cfg.code == "toy":
        hp: dict[str, Any] = {"arch": "toy2d", "lr": cfg["lr"], "batch_size": cfg["batch_size"],
                              "optimizer": optimizer(cfg["opt_type"], cfg["weight_decay"]), "ema_decay": 0.999,
                              "hidden": cfg["hidden_size"]}
        hp.update(gradient_clip(o, cfg["grad_clip"], shape, "toy"))
        if o == "dsm":
            hp["std"] = cfg["std"]  # the smoothing noise is the DSM noise (train_twodim.py:101-103, 126)
        if o == "fdssm":
            hp["eps"] = TOY_FDSSM_EPS[0]
        if o == "ssm":
            hp["slices"] = 1
        if o in ("ssm", "dsm", "fdssm"):
            hp["lam"] = 0.0
        return hp
    model = "cnn" if "cnn" in cfg.family else "fc"
    a = logit_smoothness(cfg["logit_smoothness"])
    hp = {"arch": _ARCH[(model, cfg.activation)], "optimizer": optimizer(cfg.optimizer, cfg["wd"]), "lr": cfg["lr"],
          "batch_size": cfg["batch_size"], "ema_decay": cfg["ema_decay"], "logit_smoothness": a,
          **lr_schedule(cfg["gamma"], cfg["milestones"], epoch_steps(cfg.train_size, cfg["batch_size"]))}
    slices = int(cfg["slices"])
    hp.update(gradient_clip(o, cfg["grad_clip_norm"], shape, "real_world", slices))
    if o == "ssm":
        hp["slices"] = slices
    if o == "dsm":
        hp["std"] = noise_scale(cfg["std"], a)
    if o == "fdssm":
        hp["eps"] = noise_scale(cfg["eps"], a)
    if o in ("ssm", "dsm", "fdssm"):
        hp["lam"] = energy_regulariser(o, cfg["lambda"], shape, cfg["eps"])
    return hp


def differences(cfg: OfficialConfig) -> list[str]:
    """What of ``cfg`` the suite's hyperparameters do not carry (stated beside each block)."""
    out = []
    if cfg.code == "real_world":
        if cfg["wd"]:
            out.append(f"RMSprop weight decay {cfg['wd']:g} (no suite hyperparameter; 0 here)")
        if cfg["data_aug"]:
            out.append("data augmentation (datasets/cifar10.py:43-50): the task option augment='cifar'")
        if "cnn" in cfg.family:
            out.append(f"official CNN: {cfg['num_layers']} {cfg['kernel_size']}x{cfg['kernel_size']} convolutions in "
                       f"{cfg['num_blocks']} blocks with squeezes, spectral norm {cfg['spec_norm']}; the suite's "
                       "cnn has 3x3 convolutions and no squeeze")
        out.append(f"official budget: {cfg['epochs']} epochs with the best-validation checkpoint")
    else:
        out.append(f"coupling t-net activation {cfg['t_net_act']} (the suite's toy2d: its own)")
        out.append(f"official budget: {cfg['n_iters']} iterations")
        if cfg.objective == "dsm":
            out.append("official: the smoothing noise is the DSM noise (one draw); the suite smooths the batch "
                       "(task option smooth) and then adds DSM's own noise, so its DSM target is the data "
                       "convolved with N(0, 2 s^2) rather than N(0, s^2)")
        if cfg.objective == "fdssm":
            out.append("official direction w / sqrt(||w||^2 + 1e-8) * eps; the suite's w / ||w|| * eps")
    return out


# ============================================================================ 3. preset rows
class Row(NamedTuple):
    tasks: tuple[str, ...]  #: the preset block (identified by its tasks)
    method: str
    hparam: str
    value: Any
    source: str
    note: str = ""


_rows: list[Row] = []


def _add(tasks: tuple[str, ...], methods: tuple[str, ...], source: str, note: str = "", **hp: Any) -> None:
    for m in methods:
        for k, v in hp.items():
            _rows.append(Row(tasks, m, k, v, source, note))


def _add_official(tasks: tuple[str, ...], family: str, objectives: tuple[str, ...] = OBJECTIVES,
                  shape: tuple[int, ...] | None = None) -> None:
    for o in objectives:
        cfg = official(family, o)
        for k, v in suite_hparams(cfg, shape).items():
            _rows.append(Row(tasks, f"ebflow-{o}", k, v, cfg.path, _NOTES.get(k, "")))


_NOTES = {
    "lam": "energy_regulariser (lambda * H * W for DSM/SSM, lambda * D / eps^2 for FDSSM)",
    "clip_per_dim": "gradient_clip: official clip on the per-dimension loss (x D here)",
    "clip": "gradient_clip: official clip x loss_scale",
    "lr_decay_period": "epoch_steps: one official epoch in steps",
    "lr_decay_epochs": "lr_schedule: MultiStepLR milestones 1..M-1",
    "optimizer": "optimizer: AdamW(weight_decay=0) = Adam",
    "std": "noise_scale: in the official logit space", "eps": "noise_scale: in the official logit space",
}

MNIST = ("mnist5k",)
_add_official(MNIST, "mnist-fc")
S_CODE = "SAEF official notebook (ps789/SAEF), peers.md A1/A4"
_add(MNIST, ("energy-flow-saef",), S_CODE, beta=0.5, m=2, lr=1e-4, batch_size=200, optimizer="adam")
for _data in _TOY_VALUES:
    _add_official((_data,), f"toy-{_data}")

# --- flowMC-EBM and ULA-EBM (their paper states the values on this suite's scale) ----------------------------------
F_T1 = "flowMC-EBM App. C (8 Gaussians / Rings, extended example), peers.md B4"
F_GMM = "flowMC-EBM App. C (Gaussian mixtures in higher dimension), peers.md B4"
F_MOT = "flowMC-EBM App. C (motivating example), peers.md B4"
T1 = ("eight_gaussians", "rings", "mixture-4modes")
_add(T1, ("flowmc-ebm",), F_T1, "1 i-SIR step (64 particles) + 127 MALA steps", lr=1e-3, batch_size=256,
     n_chains=8192, n_proposals=64, mala_steps=127, repeats=1)
_add(T1, ("ula-ebm",), F_T1, "512 ULA steps of size 0.125^2 / 2", lr=1e-2, batch_size=256, n_chains=8192,
     ula_steps=512, step=0.0078125)
MOT = ("mixture-2to1",)
_add(MOT, ("flowmc-ebm",), F_MOT, "2 x (1 i-SIR step of 32 particles + 4 MALA steps)", lr=1e-2, batch_size=64,
     n_chains=1024, n_proposals=32, mala_steps=4, repeats=2, step=0.01)
_add(MOT, ("ula-ebm",), F_MOT, "10 MCMC steps per iteration, as flowMC-EBM", lr=1e-2, batch_size=64, n_chains=1024,
     ula_steps=10, step=0.01)
GMM = ("gmm",)
_add(GMM, ("flowmc-ebm",), F_GMM, "16 x (1 i-SIR step of 128 particles + 8 MALA steps)", lr=1e-3, batch_size=128,
     n_chains=8192, n_proposals=128, mala_steps=8, repeats=16)
_add(GMM, ("ula-ebm",), F_GMM, "512 ULA steps of size 1e-3", lr=1e-2, batch_size=128, n_chains=8192, ula_steps=512,
     step=1e-3)

#: the ``paper`` preset's hyperparameters, row by row
PROTOCOLS: tuple[Row, ...] = tuple(_rows)
#: task options the ``paper`` preset must set (the toys' data smoothing, ``std`` of every toy config,
#: applied to every objective: ``train_twodim.py:101-103``)
TASK_OPTIONS: dict[str, dict[str, Any]] = {t: {"smooth": 0.375} for t in _TOY_VALUES}


def block_hparams(rows: tuple[Row, ...] = PROTOCOLS) -> dict[tuple[str, ...], dict[str, dict[str, Any]]]:
    """``{block tasks: {method: {hparam: value}}}`` as the preset must set them."""
    out: dict[tuple[str, ...], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        out[r.tasks].setdefault(r.method, {})[r.hparam] = r.value
    return dict(out)


# ============================================================================ 4. the reproduce preset's EBFlow blocks
@dataclass(frozen=True)
class ReproduceBlock:
    """An EBFlow block of the ``reproduce`` preset: ``family``'s official configs for ``methods`` on ``tasks``
    (data of ``shape``), plus the block's own ``extra`` hyperparameters (e.g. ``map = false``)."""

    name: str
    tasks: tuple[str, ...]
    family: str
    methods: tuple[str, ...]
    shape: tuple[int, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def expected(self) -> dict[str, dict[str, Any]]:
        """``{method: hparams}`` every resolved cell of the block must carry."""
        return {m: {**suite_hparams(official(self.family, m.removeprefix("ebflow-")), self.shape), **self.extra}
                for m in self.methods}


_ALL = tuple(f"ebflow-{o}" for o in OBJECTIVES)
REPRODUCE: tuple[ReproduceBlock, ...] = (
    ReproduceBlock("ebflow-quality", ("mnist5k",), "mnist-fc", _ALL, (1, 28, 28)),
    ReproduceBlock("ebflow-map", ("mnist5k",), "mnist-fc", ("ebflow-ssm",), (1, 28, 28), {"map": False}),
    ReproduceBlock("ebflow-time-to-quality", ("patches32",), "cifar-fc", ("ebflow-ml", "ebflow-dsm", "ebflow-fdssm"),
                   (1, 32, 32)),
    ReproduceBlock("ebflow-cifar-fc / ebflow-time-to-quality-3072", ("patches32-rgb",), "cifar-fc", _ALL, (3, 32, 32)),
)
#: task options the ``reproduce`` preset must set for the CIFAR-10 FC blocks (``data_aug`` 1:
#: datasets/cifar10.py:43-50, the task option ``augment="cifar"``)
REPRODUCE_TASK_OPTIONS: dict[str, dict[str, Any]] = {"patches32": {"augment": "cifar"},
                                                      "patches32-rgb": {"augment": "cifar"}}


# ============================================================================ 5. the doc
_CONVERSIONS = (loss_scale, energy_regulariser, gradient_clip, noise_scale, logit_smoothness, optimizer, epoch_steps,
                epochs_to_steps, lr_schedule)
#: the official-parity test's record (tests/test_official_parity.py), filled in from its run
PARITY_RECORD = """
Command: `EBFLOW_OFFICIAL_TREE=/tmp/ebflow-official/real_world python -m pytest -m official` (official code at d59c4e5, `git archive HEAD real_world`; suite at 825b593), all ten configs in one process: 11 passed in 12 min 11 s on this 2-core CPU, shared with two claims runs. 200 steps, official epoch 100 steps (its lr schedule acts twice), 500 test rows, float32, same weights, batches and noise; test bits/dim (diff: suite - official at step 200; the test requires |diff| <= 0.01 and step 0 equal to 1e-4). The patches32 values differ from the previous record (step 0 was 22.6926) because its 500 test rows are now the seeded stratified evaluation subset (ea0eade), the same rows in both codes:

| config (task) | step 0 official | step 0 suite | step 200 official | step 200 suite | diff |
|---|---|---|---|---|---|
| mnist-fc ml (mnist5k) | 103.5858 | 103.5858 | 3.0773 | 3.0773 | +0.0000 |
| mnist-fc sml (mnist5k) | 103.5858 | 103.5858 | 3.0997 | 3.0997 | -0.0000 |
| mnist-fc ssm (mnist5k) | 103.5858 | 103.5858 | 6.2572 | 6.2572 | -0.0000 |
| mnist-fc dsm (mnist5k) | 103.5858 | 103.5858 | 6.2912 | 6.2912 | -0.0000 |
| mnist-fc fdssm (mnist5k) | 103.5858 | 103.5858 | 5.3251 | 5.3284 | +0.0033 |
| cifar-fc ml (patches32) | 14.8873 | 14.8873 | 6.6902 | 6.6902 | -0.0000 |
| cifar-fc sml (patches32) | 14.8873 | 14.8873 | 6.9278 | 6.9278 | +0.0001 |
| cifar-fc ssm (patches32) | 14.8873 | 14.8873 | 6.8110 | 6.8110 | -0.0000 |
| cifar-fc dsm (patches32) | 14.8873 | 14.8873 | 6.8693 | 6.8693 | -0.0000 |
| cifar-fc fdssm (patches32) | 14.8873 | 14.8873 | 6.7069 | 6.7069 | -0.0000 |
"""


def _fmt(v: Any) -> str:
    return repr(v) if not isinstance(v, float) else f"{v:g}"


def markdown() -> str:
    lines = ["# Published protocols", "",
             "Generated from `ebflow_bench/protocols.py` (`python -m ebflow_bench.protocols > docs/PROTOCOLS.md`); "
             "`tests/test_protocols.py` pins the `paper` and `reproduce` presets to it and checks this file is up to "
             "date. Official code: " + f"{OFFICIAL_REPO} at {OFFICIAL_COMMIT}.", "",
             "## 1. Official values, as the configs state them", "",
             "| family | loss | file | data shape | values | optimizer | activation | one epoch |",
             "|---|---|---|---|---|---|---|---|"]
    for c in OFFICIAL:
        vals = ", ".join(f"{k} {_fmt(v)}" for k, v in c.values.items() if k not in ("loss", "loss_type"))
        epoch = (f"{c.train_size} images ({c.train_size_source})" if c.train_size else c.train_size_source)
        lines.append(f"| {c.family} | {c.objective} | `{c.path}` | {c.shape} | {vals} | {c.optimizer} "
                     f"({c.optimizer_source}) | {c.activation} ({c.activation_source}) | {epoch} |")
    lines += ["", f"Toy FDSSM eps: {TOY_FDSSM_EPS[0]} ({TOY_FDSSM_EPS[1]}).", "",
              "## 2. Conversions to the suite's hyperparameters", ""]
    for fn in _CONVERSIONS:
        lines += [f"### `{fn.__name__}{inspect.signature(fn)}`", "", inspect.cleandoc(fn.__doc__ or ""), ""]
    lines += ["## 3. Converted values of every official config (on the official data's shape)", "",
              "| family | loss | suite hyperparameters | not carried over |", "|---|---|---|---|"]
    for c in OFFICIAL:
        hp = ", ".join(f"`{k}` {_fmt(v)}" for k, v in suite_hparams(c).items())
        lines.append(f"| {c.family} | {c.objective} | {hp} | {'; '.join(differences(c))} |")
    lines += ["", "## 4. The `reproduce` preset's EBFlow blocks", "",
              "| block | tasks | official family | data shape | method | suite hyperparameters |",
              "|---|---|---|---|---|---|"]
    for b in REPRODUCE:
        for m, hp in b.expected().items():
            lines.append(f"| {b.name} | {', '.join(b.tasks)} | {b.family} | {b.shape} | {m} | "
                         + ", ".join(f"`{k}` {_fmt(v)}" for k, v in hp.items()) + " |")
    lines += ["", "Task options of these blocks: " + "; ".join(f"`{t}`: {o}" for t, o in REPRODUCE_TASK_OPTIONS.items())
              + " (the official CIFAR-10 `data_aug` 1).", "", "## 5. The `paper` preset", "",
              "Toy tasks are smoothed with N(0, 0.375^2) (task option `smooth`: " + ", ".join(sorted(TASK_OPTIONS))
              + ").", "", "| block (tasks) | method | hparam | value | source | note |", "|---|---|---|---|---|---|"]
    for r in PROTOCOLS:
        lines.append(f"| {', '.join(r.tasks)} | {r.method} | `{r.hparam}` | {r.value!r} | {r.source} | {r.note} |")
    if PARITY_RECORD:
        lines += ["", "## 6. Parity with the official code (`pytest -m official`)", "", PARITY_RECORD.strip()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
