"""Image–text contrastive losses: CLIP and SigLIP.

Both take n matching pairs, image features x_i and text features y_i (row i of
each is a pair), and the n×n matrix of dot products G_ij = x_i·y_j. As in
open_clip, the features are used as given: the model L2-normalises them
(``encode_image(normalize=True)``), the loss does not.

**CLIP** (Radford et al. 2021, "Learning Transferable Visual Models From Natural
Language Supervision"): symmetric InfoNCE over the logits s_ij = t·G_ij with a
learnable scale t = exp(t'), initialised at 1/0.07 and clipped at 100,

    L = 1/(2n) Σ_i [ −log softmax_j(s_ij)|_{j=i} − log softmax_j(s_ji)|_{j=i} ]
      = 1/(2n) Σ_i [ lse_j s_ij + lse_j s_ji − 2·s_ii ],

the mean of the image→text and text→image cross-entropies (open_clip's
``ClipLoss``). A logit bias b cancels in both softmaxes (accepted, gradient 0).

**SigLIP** (Zhai, Mustafa, Kolesnikov & Beyer 2023, "Sigmoid Loss for Language
Image Pre-Training"): a binary logistic loss on every pair, l_ij = t·G_ij + b,
z_ij = 1 for i = j and −1 otherwise,

    L = −1/n Σ_i Σ_j log σ(z_ij · l_ij),

with a learnable t = exp(t') (t' = log 10 at init) and bias b (−10 at init),
as open_clip's ``SigLipLoss``.

CPU tensors run Rust kernels (:mod:`reprkit._core`): CLIP's forward makes one
pass over 256×256 tiles of the logits and keeps only the row and column
log-sum-exps (O(n)); its backward recomputes the tiles. SigLIP fuses the loss
and its gradient in one pass over the tiles (every pair is independent) and
keeps the O(n·d) gradients. Both give ∂L/∂t and ∂L/∂b too. No n×n matrix is
ever stored: memory is O(n·d) plus one tile per thread. Other devices run the
torch code of :mod:`reprkit.reference.multimodal` in row chunks with the same
recomputation (O(chunk·n)). Registered as torch operators:
``torch.compile(fullgraph=True)`` and ``torch.func.grad`` work, vmap and double
backward raise. float16/bfloat16 features compute in float32 (float32 loss,
gradients back in the input dtype).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

from .. import _core, _ops
from .._ops import Tensor, torch
from .._threads import kernel_threads, op_threads
from .._torch import is_tensor
from .._validation import check_choice
from ..errors import DTypeError, InvalidParameterError, NonFiniteError, ShapeError
from . import _inputs as V
from ._chunked import BACKENDS, use_rust


def _distributed() -> bool:
    from ..distributed import is_distributed

    return is_distributed()

__all__ = ["clip_loss", "siglip_loss", "CLIPLoss", "SigLIPLoss"]


def _on_cpu(t: Any) -> bool:
    return t.device.type == "cpu"


def _scalar(v: Any, name: str, like: Any) -> Any:
    """A 0-d tensor of ``like``'s dtype and device from a number or a one-element tensor."""
    if is_tensor(v):
        if v.numel() != 1:
            raise ShapeError(f"{name} must be a number or a one-element tensor, got shape {tuple(v.shape)}")
        if not v.is_floating_point():
            raise DTypeError(f"{name} must be a floating-point tensor, got dtype {v.dtype}")
        t = v.reshape(())
        if not torch.compiler.is_compiling() and not torch._C._functorch.is_functorch_wrapped_tensor(t):
            if not bool(torch.isfinite(t.detach())):
                raise NonFiniteError(f"{name} is not finite ({float(t)})")
        return t.to(device=like.device, dtype=like.dtype)
    return torch.tensor(V.check_finite_number(name, v), dtype=like.dtype, device=like.device)


def _features(image_features: Any, text_features: Any) -> Tuple[Any, Any]:
    x = V.check_embeddings(image_features, "image_features")
    y = V.check_embeddings(text_features, "text_features")
    V.check_same_shape(x, y, "image_features", "text_features")
    x, y = V.common_dtype(x, y)
    return x, y


# ----------------------------------------------------------------- CLIP operators


def _clip_fake(x, y, scale, nt):
    n = x.shape[0]
    return x.new_empty(()), x.new_empty((n,)), x.new_empty((n,))


@_ops.op("clip", _clip_fake)
def _clip(x: Tensor, y: Tensor, scale: Tensor, nt: int) -> Tuple[Tensor, Tensor, Tensor]:
    """(loss, row log-sum-exps, column log-sum-exps) of CLIP over scale·x·yᵀ."""
    loss, lr, lc = _core.clip_loss(_ops.np_(x), _ops.np_(y), float(scale), kernel_threads(nt))
    return torch.tensor(loss, dtype=x.dtype), torch.from_numpy(lr), torch.from_numpy(lc)


def _clip_backward_fake(g, x, y, scale, lr, lc, nt):
    return torch.empty_like(x), torch.empty_like(y), scale.new_empty(())


@_ops.backward_op("clip_backward", "clip_loss", _clip_backward_fake)
def _clip_backward(g: Tensor, x: Tensor, y: Tensor, scale: Tensor, lr: Tensor, lc: Tensor, nt: int) -> Tuple[Tensor, Tensor, Tensor]:
    """(∂x, ∂y, ∂scale) times the upstream ``g``; recomputes the logit tiles."""
    gx, gy, gs = _core.clip_loss_backward(
        _ops.np_(x), _ops.np_(y), float(scale), _ops.np_(lr), _ops.np_(lc), float(g), kernel_threads(nt)
    )
    return torch.from_numpy(gx), torch.from_numpy(gy), torch.tensor(gs, dtype=scale.dtype)


class _Clip(torch.autograd.Function):
    @staticmethod
    def forward(x: Any, y: Any, scale: Any, nt: int) -> Any:  # type: ignore[override]
        return _clip(x, y, scale, nt)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        x, y, scale, nt = inputs
        ctx.nt = nt
        ctx.save_for_backward(x, y, scale, output[1], output[2])
        ctx.mark_non_differentiable(output[1], output[2])

    @staticmethod
    def backward(ctx: Any, g: Any, _lr: Any, _lc: Any) -> Any:  # type: ignore[override]
        x, y, scale, lr, lc = ctx.saved_tensors
        grads = _clip_backward(*_ops.detached(g, x, y, scale, lr, lc), ctx.nt)
        return _ops.refuse_double_backward("clip_loss", grads, (x, y, scale)) + (None,)

    vmap = _ops.no_vmap("clip_loss")


# ----------------------------------------------------------------- SigLIP operators


def _siglip_fake(x, y, scale, bias, need_grad, nt):
    gx = torch.empty_like(x) if need_grad else _ops.empty_like_rows(x)
    gy = torch.empty_like(y) if need_grad else _ops.empty_like_rows(y)
    return x.new_empty(()), gx, gy, x.new_empty(()), x.new_empty(())


@_ops.op("siglip", _siglip_fake)
def _siglip(x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, need_grad: bool, nt: int) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(loss, ∂x, ∂y, ∂scale, ∂bias) of SigLIP for a unit upstream gradient, fused in one pass
    (empty gradients and zeros without ``need_grad``)."""
    loss, gx, gy, gs, gb = _core.siglip_loss(_ops.np_(x), _ops.np_(y), float(scale), float(bias), need_grad, kernel_threads(nt))
    sc = lambda v: torch.tensor(v, dtype=x.dtype)  # noqa: E731
    return sc(loss), _ops.t_(gx, x), _ops.t_(gy, y), sc(gs), sc(gb)


def _siglip_backward_fake(g, gx, gy, gs, gb, x, y, scale, bias):
    return torch.empty_like(gx), torch.empty_like(gy), torch.empty_like(gs), torch.empty_like(gb)


@_ops.backward_op("siglip_backward", "siglip_loss", _siglip_backward_fake)
def _siglip_backward(
    g: Tensor, gx: Tensor, gy: Tensor, gs: Tensor, gb: Tensor, x: Tensor, y: Tensor, scale: Tensor, bias: Tensor
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The fused forward's gradients times the upstream scalar ``g`` (x, y, scale, bias: for the
    double-backward refusal)."""
    return gx * g, gy * g, gs * g, gb * g


class _Siglip(torch.autograd.Function):
    @staticmethod
    def forward(x: Any, y: Any, scale: Any, bias: Any, need_grad: bool, nt: int) -> Any:  # type: ignore[override]
        return _siglip(x, y, scale, bias, need_grad, nt)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        x, y, scale, bias = inputs[:4]
        ctx.save_for_backward(*output[1:], x, y, scale, bias)
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)  # else backward is handed zero tensors the size of x and y

    @staticmethod
    def backward(ctx: Any, g: Any, *_: Any) -> Any:  # type: ignore[override]
        if g is None:
            return (None,) * 6
        gx, gy, gs, gb, x, y, scale, bias = ctx.saved_tensors
        grads = _siglip_backward(*_ops.detached(g, gx, gy, gs, gb, x, y, scale, bias))
        return _ops.refuse_double_backward("siglip_loss", grads, (x, y, scale, bias)) + (None, None)

    vmap = _ops.no_vmap("siglip_loss")


# ----------------------------------------------------------------- functions


def clip_loss(
    image_features: Any, text_features: Any, logit_scale: Any = 1 / 0.07, logit_bias: Optional[Any] = None, *,
    n_jobs: Optional[int] = None, backend: str = "auto", gather_distributed: bool = False,
) -> Any:
    """CLIP's symmetric InfoNCE (Radford et al. 2021), open_clip's ``ClipLoss()(x, y, logit_scale)``.

    s_ij = logit_scale · x_i·y_j;  L = 1/(2n) Σ_i [lse_j s_ij + lse_j s_ji − 2·s_ii].

    ``logit_scale`` is the multiplier t itself (open_clip passes ``model.logit_scale.exp()``):
    a number or a one-element tensor, differentiable. ``logit_bias`` (optional, as open_clip
    accepts it) cancels in both softmaxes: the loss does not change and its gradient is 0.
    Features are used as given (normalise them first for cosine logits).

    ``backend``: ``"auto"`` (Rust on CPU, else the chunked torch path), ``"rust"``, ``"torch"``.
    ``gather_distributed=True``: open_clip's ``local_loss`` with ``gather_with_grad``: the local
    images against every rank's texts and the local texts against every rank's images
    (memory per rank O(local·global) logits in tiles), scaled by the rule of
    :mod:`reprkit.distributed` (DDP's averaging gives the global batch's gradient).
    """
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    x, y = _features(image_features, text_features)
    s = _scalar(logit_scale, "logit_scale", x)
    rust = use_rust(backend, x) and _on_cpu(x)  # (_on_cpu: the tests' hook to force the torch path)
    if gather_distributed and _distributed():
        from . import _dist

        loss = _dist.clip(x, y, s, rust, n_jobs)
    elif rust:
        loss = _Clip.apply(x, y, s, op_threads(n_jobs))[0]
    else:
        from ..reference import multimodal as ref

        loss = ref.clip_loss_chunked(x, y, s)
    if logit_bias is not None:
        loss = loss + 0.0 * _scalar(logit_bias, "logit_bias", x)
    return loss


def siglip_loss(
    image_features: Any, text_features: Any, logit_scale: Any = 10.0, logit_bias: Any = -10.0, *, n_jobs: Optional[int] = None,
    backend: str = "auto", gather_distributed: bool = False,
) -> Any:
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023), open_clip's ``SigLipLoss()(x, y, logit_scale, logit_bias)``.

    l_ij = logit_scale · x_i·y_j + logit_bias;  L = −1/n Σ_ij log σ(z_ij l_ij), z_ij = 1 if i = j else −1.

    ``logit_scale`` is the multiplier t = exp(t') and ``logit_bias`` the bias b: numbers or
    one-element tensors, both differentiable. Features are used as given. ``backend`` as
    :func:`clip_loss`. ``gather_distributed=True``: the local images against every rank's
    texts (open_clip's distributed SigLIP exchanges the texts the same way), each pair counted
    on its image's rank, scaled by the rule of :mod:`reprkit.distributed`; memory per rank
    O(local·global) logits in tiles.
    """
    gather_distributed = V.check_bool("gather_distributed", gather_distributed)
    x, y = _features(image_features, text_features)
    s = _scalar(logit_scale, "logit_scale", x)
    b = _scalar(logit_bias, "logit_bias", x)
    if gather_distributed and _distributed():
        from . import _dist

        return _dist.siglip(x, y, s, b, use_rust(backend, x) and _on_cpu(x), n_jobs)
    if use_rust(backend, x) and _on_cpu(x):
        need = _ops.needs_grad(x, y, s, b)
        return _Siglip.apply(x, y, s, b, need, op_threads(n_jobs))[0]
    from ..reference import multimodal as ref

    return ref.siglip_loss_chunked(x, y, s, b)


# ----------------------------------------------------------------- modules


def _max_scale(v: Optional[float]) -> Optional[float]:
    if v is None:
        return None
    v = V.check_positive("max_scale", v)
    if v < 1.0:
        raise InvalidParameterError(f"max_scale must be >= 1 (the scale is clamped to [1, max_scale]), got {v!r}")
    return v


def _clamped_exp(t: Any, max_scale: Optional[float]) -> Any:
    if max_scale is not None:
        t = t.clamp(0.0, math.log(max_scale))
    return t.exp()


class _LearnableScale(torch.nn.Module):
    """The logit scale t = exp(t') shared by CLIPLoss and SigLIPLoss (``logit_scale`` holds t')."""

    logit_scale: Any
    max_scale: Optional[float]

    def scale(self) -> Any:
        """The multiplier t = exp(clamp(t', 0, ln max_scale))."""
        return _clamped_exp(self.logit_scale, self.max_scale)

    @torch.no_grad()
    def clamp_(self) -> Any:
        """Clamps the parameter t' to [0, ln max_scale] in place (open_clip's step after ``optimizer.step()``);
        returns the module."""
        if self.max_scale is not None:
            self.logit_scale.clamp_(0.0, math.log(self.max_scale))
        return self


class CLIPLoss(_LearnableScale):
    """CLIP's symmetric InfoNCE with its learnable temperature (see :func:`clip_loss`).

    The scale is t = exp(t') with t' = ``logit_scale`` a parameter of this module
    (``learnable=False``: a buffer), initialised at ``logit_scale_init`` = ln(1/0.07) and
    clamped to [0, ln max_scale] as open_clip does (t ≤ 100; ``max_scale=None``: no clamp).
    The clamp is applied, differentiably, where the scale is used; open_clip instead clamps
    the parameter in place after each optimiser step, which :meth:`clamp_` does (call it
    there too if t' may leave the range, where its gradient is 0).

    ``forward(image_features, text_features, logit_scale=None, logit_bias=None, output_dict=False)``:
    called like open_clip's ``ClipLoss``; a ``logit_scale`` given (the multiplier, e.g. a
    model's ``logit_scale.exp()``) replaces this module's own.
    """

    def __init__(
        self, logit_scale_init: float = math.log(1 / 0.07), learnable: bool = True, max_scale: Optional[float] = 100.0, *,
        n_jobs: Optional[int] = None, backend: str = "auto", gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        check_choice("backend", backend, BACKENDS)
        self.backend, self.gather_distributed = backend, bool(gather_distributed)
        t = torch.tensor(V.check_finite_number("logit_scale_init", logit_scale_init), dtype=torch.float32)
        self.learnable, self.max_scale, self.n_jobs = V.check_bool("learnable", learnable), _max_scale(max_scale), n_jobs
        if self.learnable:
            self.logit_scale = torch.nn.Parameter(t)
        else:
            self.register_buffer("logit_scale", t)

    def forward(
        self, image_features: Any, text_features: Any, logit_scale: Optional[Any] = None, logit_bias: Optional[Any] = None,
        output_dict: bool = False,
    ) -> Any:
        s = self.scale() if logit_scale is None else logit_scale
        loss = clip_loss(image_features, text_features, s, logit_bias, n_jobs=self.n_jobs, backend=self.backend,
                           gather_distributed=self.gather_distributed)
        return {"contrastive_loss": loss} if output_dict else loss

    def extra_repr(self) -> str:
        return f"learnable={self.learnable}, max_scale={self.max_scale}"


class SigLIPLoss(_LearnableScale):
    """SigLIP's pairwise sigmoid loss with a learnable scale and bias (see :func:`siglip_loss`).

    Parameters (buffers with ``learnable=False``) t' = ``logit_scale`` = log(``scale_init``) and
    b = ``logit_bias`` = ``bias_init``, as in the paper and open_clip (t = exp(t') = 10,
    b = −10 at init). t' is clamped to [0, ln max_scale] where it is used, as open_clip's
    training loop clamps every model's ``logit_scale`` (``max_scale=None``: no clamp;
    :meth:`clamp_` does it in place).

    ``forward(image_features, text_features, logit_scale=None, logit_bias=None, output_dict=False)``:
    called like open_clip's ``SigLipLoss``; a ``logit_scale`` (the multiplier) or
    ``logit_bias`` given replaces this module's own.
    """

    def __init__(
        self, scale_init: float = 10.0, bias_init: float = -10.0, learnable: bool = True, max_scale: Optional[float] = 100.0, *,
        n_jobs: Optional[int] = None, backend: str = "auto", gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        check_choice("backend", backend, BACKENDS)
        self.backend, self.gather_distributed = backend, bool(gather_distributed)
        t = torch.tensor(math.log(V.check_positive("scale_init", scale_init)), dtype=torch.float32)
        b = torch.tensor(V.check_finite_number("bias_init", bias_init), dtype=torch.float32)
        self.learnable, self.max_scale, self.n_jobs = V.check_bool("learnable", learnable), _max_scale(max_scale), n_jobs
        if self.learnable:
            self.logit_scale = torch.nn.Parameter(t)
            self.logit_bias = torch.nn.Parameter(b)
        else:
            self.register_buffer("logit_scale", t)
            self.register_buffer("logit_bias", b)

    def forward(
        self, image_features: Any, text_features: Any, logit_scale: Optional[Any] = None, logit_bias: Optional[Any] = None,
        output_dict: bool = False,
    ) -> Any:
        s = self.scale() if logit_scale is None else logit_scale
        b = self.logit_bias if logit_bias is None else logit_bias
        loss = siglip_loss(image_features, text_features, s, b, n_jobs=self.n_jobs, backend=self.backend,
                           gather_distributed=self.gather_distributed)
        return {"contrastive_loss": loss} if output_dict else loss

    def extra_repr(self) -> str:
        return f"learnable={self.learnable}, max_scale={self.max_scale}"
