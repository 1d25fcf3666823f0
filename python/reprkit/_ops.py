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
