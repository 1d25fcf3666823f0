"""reprkit.testing: property-test the gradients of your own losses against a PyTorch reference.

Test a loss (a custom ``autograd.Function``, a Rust-backed kernel, anything) against
a plain-torch reference over hard inputs — duplicates, collapsed batches, huge and
tiny scales, one-class and all-distinct labels — in five lines::

    from hypothesis import given
    from reprkit.testing import assert_gradients_match, labelled_batches

    @given(labelled_batches())
    def test_my_loss(batch):
        assert_gradients_match(my_loss, my_torch_reference, *batch, names=("x", "labels"))

``assert_gradients_match`` compares values, then gradients (of a random, fixed-seed
weighting of every output element), with the reference evaluated in float64, and runs
``torch.autograd.gradcheck`` on fn itself; on failure it says what differs, where, by how
much, and against which tolerance.

Strategies (need hypothesis: ``pip install reprkit[test]``):
    :func:`embeddings`, :func:`labels`, :func:`labelled_batches`, :func:`paired_views`;
    their seeded generators :func:`make_embeddings`, :func:`make_labels` work without it.
Checks:
    :func:`assert_gradients_match`, :func:`assert_double_backward`,
    :func:`default_tolerances`, :class:`GradientReport`.

Importing this module imports torch (it raises an ImportError naming the extra when
torch is missing); hypothesis is imported only when a strategy is built.
"""

from __future__ import annotations

from ..errors import MissingDependencyError

try:
    import torch as _torch  # noqa: F401
except ImportError as _e:  # pragma: no cover - exercised in an environment without torch
    raise MissingDependencyError(
        "reprkit.testing needs PyTorch; install it with `pip install reprkit[test]` (or `pip install torch`)"
    ) from _e

from .gradients import GradientReport, assert_double_backward, assert_gradients_match, default_tolerances
from .strategies import (
    EMBEDDING_KINDS,
    LABEL_STRUCTURES,
    embeddings,
    labelled_batches,
    labels,
    make_embeddings,
    make_labels,
    paired_views,
)

__all__ = [
    "assert_gradients_match",
    "assert_double_backward",
    "default_tolerances",
    "GradientReport",
    "embeddings",
    "labels",
    "labelled_batches",
    "paired_views",
    "make_embeddings",
    "make_labels",
    "EMBEDDING_KINDS",
    "LABEL_STRUCTURES",
]
