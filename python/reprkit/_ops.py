"""How the Rust kernels become torch operators.

Every kernel is a ``torch.library`` custom operator (namespace ``reprkit``) with
a fake implementation, so ``torch.compile(fullgraph=True)`` traces it as one
node with known output shapes. Its gradient is a ``torch.autograd.Function``
whose ``forward`` calls the operator and whose ``backward`` calls the backward
operator: a Function with ``setup_context`` is what ``torch.func.grad`` / ``vjp``
need (custom operators' own autograd registration does not support functorch).

Double backward is refused, never silently wrong: every backward operator
takes the differentiable inputs as arguments, and its own autograd formula
raises :class:`DoubleBackwardError`. ``torch.vmap`` raises an error naming the
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


def backward_op(name: str, loss: str, fake: Callable) -> Callable:
    """Like :func:`op` for a backward kernel; differentiating it raises :class:`DoubleBackwardError`."""

    def refuse(ctx: Any, *grads: Any) -> Any:
        raise DoubleBackwardError(
            f"reprkit: double backward of {loss} is not supported (its Rust backward kernel is not "
            f"differentiable); use reprkit.reference for higher-order derivatives"
        )

    def wrap(fn: Callable) -> Any:
        custom = op(name, fake)(fn)
        custom.register_autograd(refuse, setup_context=lambda ctx, inputs, output: None)
        return custom

    return wrap


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
