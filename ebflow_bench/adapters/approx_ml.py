"""Approximate maximum likelihood without determinants behind the adapter protocol (family ``approx-ml``).

Registered names (libraries in :mod:`baselines.approx_ml`):

- ``snf``: Self-Normalizing Flows (Keller et al. 2021): learned inverses ``R``, ``W^-T`` replaced by ``R^T``,
  layer-wise reconstruction penalty ``recon_weight`` (official FC/conv configs 1.0), equal mixture of the
  forward and inverse likelihoods, the official FC initialisation (``W = I``, ``R = W^T``).
- ``relative-gradient``: Relative Gradient (Gresele et al. 2020): each dense layer's direction right-multiplied
  by ``W^T W`` (bias in augmented form), log-det part ``W``; orthogonal init, zero biases.
- ``free-form-flow``: Free-form Flows (Draxler et al. 2024): encoder ``f`` and decoder ``g``, loss
  ``beta ||x - g(f(x))||^2 - log p(f(x)) - v^T f'(x) sg(g'(z) v)``, one Hutchinson vector per sample drawn from a
  generator seeded with the cell's seed.

Architecture (hparam ``arch``): ``fc`` (default for all three) is EBFlow's FC model, ``layers`` dense ``D x D``
layers with the smooth leaky ReLU (alpha 0.3) between them, the same as ``ebflow-ml`` (like for like). For
``free-form-flow`` it is the encoder, and the decoder has the same shape (its own weights, not constrained to
invert the encoder); ``free-form-flow`` also takes ``resnet``, the method's own architecture (``layers`` residual
blocks of width ``hidden`` for both nets, :class:`baselines.approx_ml.ResidualNet`). SNF's convolutional layer is
not implemented (dense layers only). On image tasks the models get EBFlow's MaP logit preprocessing
(``logit_smoothness``) and NLLs are in data (pixel) space.

Evaluation is exact: ``snf``, ``relative-gradient`` and ``free-form-flow`` with ``fc`` use EBFlow's
``log_prob`` (``slogdet`` of each dense matrix, cached per parameter version); ``free-form-flow`` with ``resnet``
builds the encoder's Jacobian per test point (:func:`baselines.approx_ml.jacobian_log_prob`, ``O(D^3)`` each).
Samples: ``snf`` and ``relative-gradient`` invert the flow exactly (the model whose NLL is reported);
``free-form-flow`` decodes ``g(z)``, the method's generative direction.

Counters read by the runner: ``nonfinite_losses`` (per-sample losses that were non-finite; zeroed, as the
official SNF and EBFlow code do, and counted here) and :meth:`reconstruction_error` (relative squared error of
the learned inverse on test points in the flow's input space: ``snf``'s ``R`` layers, ``free-form-flow``'s
decoder; ``relative-gradient`` has no learned inverse). A free-form flow's NLL is flagged ``unreliable`` above
``metrics.MAX_RECONSTRUCTION_ERROR``.

Defaults, as for ``ebflow-*``, follow the suite's short-CPU-run protocol (Adam, lr 1e-3, batch 256), so that
``ebflow-ml`` and these methods differ only in how the gradient is formed; the published values are in each
hyperparameter's doc and docs/ARCHITECTURE.md, and the reproduce preset sets them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar

from .._lazy import lazy, no_grad
from ..tasks import Task
from .base import Adapter, HParam, count, positive, register

# torch and the method's library load when a cell builds the adapter; the declarations below do not need them
# (the static checks of a matrix import no torch: ebflow_bench/_lazy.py)
torch = lazy("torch")
nn = lazy("torch.nn")
_approx = lazy("baselines.approx_ml")
_snf = lazy("baselines.approx_ml.snf")
_archs = lazy("ebflow.architectures")
_ema = lazy("ebflow.ema")
_pre = lazy("ebflow.preprocessing")

if TYPE_CHECKING:
    from torch import Tensor

    from ebflow import EBFlow
    from ebflow.preprocessing import LogitTransform

_NLL_CHUNK = 1024

_COMMON: dict[str, HParam] = {
    "lr": positive(1e-3, "learning rate (suite default; published: SNF 1e-4, RG 1e-4 for MNIST, FFF 5e-4 "
                         "in its SBI configs)"),
    "batch_size": count(256, doc="mini-batch size (published: 100 for SNF and RG on MNIST, 128 for FFF's SBI)"),
    "ema_decay": HParam(0.0, float, low=0.0, high=1.0,
                        doc="EMA decay of the evaluated weights; 0 = none (none of the three papers uses one)"),
    "clip": positive(None, "gradient-norm clip of the direction; None = off (the MNIST configs clip nothing)",
                     optional=True),
    "logit_smoothness": HParam(1.0, float, low=0.05, high=10.0,
                               doc="image tasks: MaP logit u = logit(p) / logit_smoothness (SNF's and RG's "
                                   "preprocessing is the plain logit, 1)"),
}


class ApproxMLAdapter(Adapter):
    """Shared building, training loop, evaluation and counters of the three methods (module docstring)."""

    family = "approx-ml"
    archs: ClassVar[tuple[str, ...]] = ("fc",)
    #: whether the exact NLL is a density only in so far as the learned inverse inverts the model (runner flag)
    nll_needs_inverse: ClassVar[bool] = False

    @classmethod
    def check(cls, task: Task, dim: int, layers: int, hparams: dict[str, Any] | None = None) -> str | None:
        if layers < 1:
            return f"{cls.name} needs at least one layer, got layers={layers}"
        arch = (hparams or cls.defaults).get("arch")
        if arch not in cls.archs:
            return f"{cls.name}: unknown arch {arch!r}; expected one of {list(cls.archs)}"
        return None

    def _preprocessing(self) -> LogitTransform | None:
        if self.task.image_shape is None:
            return None
        return _pre.LogitTransform(smoothness=float(self.hparams["logit_smoothness"]))

    def build(self) -> None:
        problem = self.check(self.task, self.dim, self.layers, self.hparams)
        if problem:
            raise ValueError(problem)
        self.pre = self._preprocessing()
        self.model = self.build_model()
        self.trained().to(self.device)
        self.optimizer = torch.optim.Adam(self.trained().parameters(), lr=float(self.hparams["lr"]))
        decay = float(self.hparams["ema_decay"])
        self.ema = _ema.EMA(self.trained(), decay, warmup=True) if decay else None
        clip = self.hparams["clip"]
        self.clip = None if clip is None else float(clip)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.nonfinite_losses = 0

    def build_model(self) -> EBFlow | None:
        """The evaluated flow on preprocessed data ``u`` (an EBFlow without preprocessing), or None where the
        method evaluates otherwise (a free-form encoder)."""
        raise NotImplementedError

    def preprocess(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x -> (u, log|du/dx|)``: the fixed MaP logit on image tasks, else the identity."""
        x = x.to(self.device)
        if self.pre is None:
            return x, x.new_zeros(x.shape[0])
        return self.pre(x)

    def postprocess(self, u: Tensor) -> Tensor:
        return u if self.pre is None else self.pre.inverse(u)

    def trained(self) -> nn.Module:
        """Every trained module (optimizer, EMA)."""
        return self.model

    def loss(self, u: Tensor) -> tuple[Tensor, int]:
        """``(loss whose backward leaves the method's direction in .grad, non-finite per-sample terms)``."""
        raise NotImplementedError

    def train_step(self, batch: Tensor) -> float:
        self.trained().train()
        u, _ = self.preprocess(batch)
        loss, n_bad = self.loss(u)
        self.nonfinite_losses += n_bad
        if not torch.isfinite(loss):
            return float(loss.detach())  # the runner records the divergence
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.trained().parameters(), self.clip)
        self.optimizer.step()
        if self.model is not None:  # the fused optimizer's writes bypass the parameters' version counters
            self.model.invalidate_logdet_cache()
        if self.ema is not None:
            self.ema.update()
        return float(loss.detach())

    def _evaluated(self) -> AbstractContextManager[nn.Module]:
        """Context in which the trained modules hold their evaluation (EMA) weights."""
        return self.ema.swapped() if self.ema is not None else nullcontext(self.trained())

    def log_prob_u(self, u: Tensor) -> Tensor:
        """Exact log density of preprocessed data ``u`` under the evaluated flow (no preprocessing log-det)."""
        return -self.model.flow_energy(u) + self.model.linear_logdet()

    @no_grad
    def nll(self, x: Tensor) -> Tensor:
        self.trained().eval()
        parts = []
        with self._evaluated():
            for chunk in x.split(_NLL_CHUNK):
                u, pre = self.preprocess(chunk)
                parts.append(-(self.log_prob_u(u) + pre))
        return torch.cat(parts).to("cpu")

    @no_grad
    def sample(self, n: int) -> Tensor:
        self.trained().eval()
        with self._evaluated():
            return self.postprocess(self.model.sample(n, preprocessed=True)).to("cpu", torch.float32)

    def reconstruct_u(self, u: Tensor) -> Tensor | None:
        """The learned inverse applied to the flow's output on ``u`` (None: the method has no learned inverse)."""
        return None

    @no_grad
    def reconstruction_error(self, x: Tensor) -> float | None:
        """``mean ||u - u_hat||^2 / mean ||u - mean(u)||^2`` on ``x`` in the flow's input space ``u``, where
        ``u_hat`` is the learned inverse's reconstruction; None without a learned inverse."""
        self.trained().eval()
        with self._evaluated():
            u, _ = self.preprocess(x)
            u_hat = self.reconstruct_u(u)
        if u_hat is None:
            return None
        spread = (u - u.mean(0)).pow(2).sum(1).mean()
        return float((u - u_hat).pow(2).sum(1).mean() / spread.clamp_min(torch.finfo(u.dtype).tiny))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.trained().parameters() if p.requires_grad)


def _arch_hparam(archs: tuple[str, ...]) -> dict[str, HParam]:
    return {"arch": HParam("fc", str, choices=archs, doc="fc: EBFlow's FC model (same as ebflow-ml)"
                           + ("; resnet: residual MLPs (the method's own)" if "resnet" in archs else ""))}


@register
class SNFAdapter(ApproxMLAdapter):
    """``snf``: Self-Normalizing Flows on EBFlow's FC model (dense layers only)."""

    name = "snf"
    objective = "snf"
    hparam_spec: ClassVar[dict[str, HParam]] = {
        **_COMMON, **_arch_hparam(("fc",)),
        "recon_weight": positive(1.0, "lambda of the layer-wise reconstruction penalty (official FC and conv "
                                      "configs 1.0; Glow 100-1000)"),
    }
    tune_grid: ClassVar[dict[str, tuple]] = {"lr": (3e-4, 1e-3, 3e-3), "recon_weight": (1.0, 10.0)}

    def build_model(self) -> EBFlow:
        return _approx.snf_fully_connected(self.dim, self.layers)

    def loss(self, u: Tensor) -> tuple[Tensor, int]:
        loss, _, n_bad = _approx.snf_loss(self.model, u, float(self.hparams["recon_weight"]))
        return loss, n_bad

    def reconstruct_u(self, u: Tensor) -> Tensor:
        h, _ = self.model.flow(u)
        h = h.reshape(u.shape[0], *self.model.event_shape)
        for layer in reversed(self.model.layers):
            h = layer.approx_inverse(h) if isinstance(layer, _snf.SelfNormDense) else layer.inverse(h)
        return h.reshape(u.shape)


@register
class RelativeGradientAdapter(ApproxMLAdapter):
    """``relative-gradient``: the relative gradient on EBFlow's FC model."""

    name = "relative-gradient"
    objective = "relative-gradient"
    hparam_spec: ClassVar[dict[str, HParam]] = {**_COMMON, **_arch_hparam(("fc",))}
    tune_grid: ClassVar[dict[str, tuple]] = {"lr": (1e-4, 3e-4, 1e-3), "batch_size": (128, 256)}

    def build_model(self) -> EBFlow:
        return _approx.relative_fully_connected(self.dim, self.layers)

    def loss(self, u: Tensor) -> tuple[Tensor, int]:
        loss, _, n_bad = _approx.relative_loss(self.model, u)
        return loss, n_bad


def _free_form(encoder: nn.Module, decoder: nn.Module) -> nn.Module:
    """Encoder and decoder of a free-form flow as one module (optimizer, EMA): ``.encoder``, ``.decoder``."""
    return nn.ModuleDict({"encoder": encoder, "decoder": decoder})


def _flow_map(model: EBFlow):
    return lambda u: model.flow(u)[0]


@register
class FreeFormFlowAdapter(ApproxMLAdapter):
    """``free-form-flow``: a free-form encoder and decoder trained with the FFF loss."""

    name = "free-form-flow"
    objective = "fff"
    archs = ("fc", "resnet")
    nll_needs_inverse = True
    hparam_spec: ClassVar[dict[str, HParam]] = {
        **_COMMON, **_arch_hparam(("fc", "resnet")),
        "beta": positive(25.0, "reconstruction weight beta (official configs: 25 SBI, 10 DW4 and FIF, "
                               "2000 QM9; vislearn/FFF#9: too low a beta makes the NLL unstable)"),
        "hidden": count(256, doc="arch resnet: width of each residual block's MLP (official SBI ResNet 256)"),
    }
    tune_grid: ClassVar[dict[str, tuple]] = {"lr": (3e-4, 1e-3), "beta": (10.0, 25.0, 100.0)}

    def build_model(self) -> EBFlow | None:
        if self.hparams["arch"] == "fc":
            # identity start (W = I, b = 0) for both nets; the decoder mirrors the encoder's activation, so that it
            # starts near the encoder's inverse
            encoder = _archs.fully_connected(self.dim, self.layers, neg_init=False, bias_init=0.0)
            decoder = _approx.MirroredDense(self.dim, self.layers)
            self.encode, self.decode = _flow_map(encoder), decoder
            self.nets = _free_form(encoder, decoder)
            return encoder  # an EBFlow: its exact log_prob (cached log-dets) is the encoder's change of variables
        hidden = int(self.hparams["hidden"])
        self.nets = _free_form(_approx.ResidualNet(self.dim, self.layers, hidden),
                               _approx.ResidualNet(self.dim, self.layers, hidden))
        self.encode, self.decode = self.nets.encoder, self.nets.decoder
        return None

    def trained(self) -> nn.Module:
        return self.nets

    def loss(self, u: Tensor) -> tuple[Tensor, int]:
        v = _approx.sample_v(u, self.generator)
        per_sample, _ = _approx.fff_loss(u, self.encode, self.decode, float(self.hparams["beta"]), v)
        return _approx.finite_mean(per_sample)

    def log_prob_u(self, u: Tensor) -> Tensor:
        if self.hparams["arch"] == "fc":
            return super().log_prob_u(u)
        return _approx.jacobian_log_prob(self.encode, u)

    def reconstruct_u(self, u: Tensor) -> Tensor:
        return self.decode(self.encode(u))

    @no_grad
    def sample(self, n: int) -> Tensor:
        self.trained().eval()
        with self._evaluated():
            ref = next(self.nets.parameters())
            z = torch.randn((n, self.dim), dtype=ref.dtype).to(self.device)
            return self.postprocess(self.decode(z)).to("cpu", torch.float32)
