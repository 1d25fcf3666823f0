"""How the Rust kernels become torch operators.

Every kernel is a ``torch.library`` custom operator (namespace ``reprkit``) with
a fake implementation, so ``torch.compile(fullgraph=True)`` traces it as one
node with known output shapes. Its gradient is a ``torch.autograd.Function``
whose ``forward`` calls the operator and whose ``backward`` calls the backward
operator: a Function with ``setup_context`` is what ``torch.func.grad`` / ``vjp``
need (custom operators' own autograd registration does not support functorch).

Double backward is refused, never silently wrong: the gradients a backward
returns pass through :func:`refuse_double_backward`, whose derivative raises
:class:`DoubleBackwardError`. ``torch.vmap`` raises an error naming the
loss (:func:`no_vmap`).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np

from ._torch import require_torch

torch = require_torch()
Tensor = torch.Tensor


class DoubleBackwardError(RuntimeError):
    """Raised when a second derivative through a Rust kernel is requested."""


def np_(t: Optional[Any]) -> Optional[np.ndarray]:
    """A C-contiguous numpy view of a CPU tensor (copy only when needed); None stays None."""
    if t is None:
        return None
    return t.detach().contiguous().numpy()


def t_(a: Optional[np.ndarray], like: Any = None) -> Any:
    """A tensor over a kernel's numpy result; None becomes an empty (0, d) tensor like ``like``."""
    if a is None:
        return like.new_empty((0,) + tuple(like.shape[1:]))
    return torch.from_numpy(np.ascontiguousarray(a))


def op(name: str, fake: Callable) -> Callable:
    """Decorator: registers ``fn`` as ``torch.ops.reprkit.<name>`` with the fake implementation ``fake``."""

    def wrap(fn: Callable) -> Any:
        custom = torch.library.custom_op(f"reprkit::{name}", mutates_args=())(fn)
        custom.register_fake(fake)
        custom._reprkit_impl = fn  # for eager calls that need not go through the dispatcher (see fused_function)
        return custom

    return wrap


class _Refuse(torch.autograd.Function):
    """Identity on a gradient whose own derivative would be wrong: differentiating it raises."""

    @staticmethod
    def forward(grad: Any, loss: str, *inputs: Any) -> Any:  # type: ignore[override]
        return grad.view_as(grad)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        ctx.loss = inputs[1]

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:  # type: ignore[override]
        raise DoubleBackwardError(
            f"reprkit: double backward of {ctx.loss} is not supported (its Rust backward kernel is not "
            f"differentiable); use reprkit.reference for higher-order derivatives"
        )


def refuse_double_backward(loss: str, grads: Sequence[Any], inputs: Sequence[Any]) -> tuple:
    """The gradients a backward returns, tied to ``inputs`` so that a second derivative raises
    :class:`DoubleBackwardError` (only when a graph is being built: ``create_graph=True``, torch.func)."""
    if not torch.is_grad_enabled():
        return tuple(grads)
    ins = [t for t in inputs if isinstance(t, torch.Tensor) and t.is_floating_point()]
    return tuple(None if g is None else _Refuse.apply(g, loss, *ins) for g in grads)


def detached(*ts: Any) -> tuple:
    """Inputs for a backward operator: plain tensors, outside any autograd or functorch graph."""
    return tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in ts)


def backward_op(name: str, loss: str, fake: Callable) -> Callable:
    """:func:`op` for a backward kernel (called with :func:`detached` inputs; see :func:`refuse_double_backward`)."""
    return op(name, fake)


def no_vmap(loss: str) -> Any:
    """A ``vmap`` staticmethod for an autograd Function that says the loss does not batch."""

    def vmap(info: Any, in_dims: Any, *args: Any) -> Any:
        raise RuntimeError(
            f"reprkit: torch.vmap over {loss} is not supported (its Rust kernel takes one batch); "
            f"loop over the batch dimension, or vmap reprkit.reference's version"
        )

    return staticmethod(vmap)


def needs_grad(*ts: Optional[Any]) -> bool:
    """Whether autograd will ask for a gradient of any of ``ts`` (works under torch.func and compile)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def scaled(g: Any, grad: Any) -> Any:
    """``g · grad`` for a scalar upstream ``g``, without a copy for ``loss.backward()``'s g = 1."""
    return grad * g


def empty_like_rows(x: Any, rows: int = 0) -> Any:
    return x.new_empty((rows,) + tuple(x.shape[1:]))


def as_list(v: Any) -> Sequence[Any]:
    return v if isinstance(v, (tuple, list)) else (v,)


def _trace_probes() -> Any:
    """(tensor types of a trace, functorch-wrapper test), or None where this torch lacks them."""
    global _PROBES
    if _PROBES is False:
        try:
            from torch._subclasses.fake_tensor import FakeTensor
            from torch._subclasses.functional_tensor import FunctionalTensor

            _PROBES = ((FakeTensor, FunctionalTensor), torch._C._functorch.is_functorch_wrapped_tensor)
        except (ImportError, AttributeError):
            _PROBES = None
    return _PROBES


_PROBES: Any = False


def traced(*ts: Any) -> bool:
    """Whether these tensors belong to a compile trace or a torch.func transform. These are torch
    internals: a torch without them gets True, the dispatcher path, which is right in every mode
    (only slower in eager)."""
    probes = _trace_probes()
    if probes is None:
        return True
    types, wrapped = probes
    return torch.compiler.is_compiling() or any(isinstance(t, types) or wrapped(t) for t in ts)


def fused_function(fused: Any, loss: str) -> Any:
    """The autograd Function of a fused loss operator ``fused(x, w, *args, need_x, need_w, n_threads)
    -> (loss, ∂loss/∂x, ∂loss/∂w)`` (a gradient not needed is a (0, d) tensor), for calls that need a
    gradient: forward computes the gradients too (they are what every implementation holds after
    backward) and backward scales them by the upstream value.

    In eager mode the gradients are handed over once, not kept as saved tensors: a saved tensor
    still referenced when autograd accumulates W.grad makes it copy the C×d gradient. Under a
    trace (torch.compile, torch.func) they are saved outputs. A second backward through a
    retained graph recomputes them (the same fused call: the same bits)."""

    name = fused._opoverload.__name__.split(".")[0]  # reached through torch.ops (a closure over the op breaks dynamo)
    impl = fused._reprkit_impl  # eager: the implementation itself, ~0.1 ms less per call than the dispatcher

    class Fused(torch.autograd.Function):
        @staticmethod
        def forward(*inputs: Any) -> Any:  # type: ignore[override]
            if traced(inputs[0], inputs[1]):
                return getattr(torch.ops.reprkit, name).default(*inputs)
            return impl(*inputs)

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            ctx.n_in = len(inputs)
            ctx.need = inputs[-3], inputs[-2]
            ctx.is_t = [isinstance(v, torch.Tensor) for v in inputs]
            ctx.cfg = [None if t else v for v, t in zip(inputs, ctx.is_t)]
            tensors = [v for v, t in zip(inputs, ctx.is_t) if t]
            ctx.mark_non_differentiable(output[1], output[2])
            ctx.set_materialize_grads(False)  # else autograd hands backward a C×d zero tensor for the ∂w output
            ctx.traced = traced(inputs[0], inputs[1], output[1], output[2])
            if ctx.traced:
                ctx.save_for_backward(output[1], output[2], *tensors)
                ctx.held = None
            else:
                ctx.save_for_backward(*tensors)
                ctx.held = [output[1], output[2]]

        @staticmethod
        def backward(ctx: Any, g: Any, _gx: Any, _gw: Any) -> Any:  # type: ignore[override]
            nx, nw = ctx.need
            if g is None:  # the loss itself took no part in what is differentiated
                return (None,) * ctx.n_in
            g = g.detach()
            saved = ctx.saved_tensors
            if ctx.traced:
                gx, gw = saved[0] * g, saved[1] * g
                saved = saved[2:]
            elif ctx.held is not None:
                gx, gw = ctx.held
                ctx.held = None
                if g.requires_grad or float(g) != 1.0:
                    gx, gw = gx * g, gw * g
            else:  # a retained graph's second backward: the same fused call again (same bits)
                it = iter(detached(*saved))
                _, gx, gw = impl(*[next(it) if t else v for v, t in zip(ctx.cfg, ctx.is_t)])
                gx, gw = gx * g, gw * g
            grads = (gx if nx else None, gw if nw else None)
            return refuse_double_backward(loss, grads, (saved[0], saved[1])) + (None,) * (ctx.n_in - 2)

        vmap = no_vmap(loss)

    return Fused
