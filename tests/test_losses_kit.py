"""Every loss through the public kit, reprkit.testing: the Rust path (CPU) against the pure-torch reference over the
kit's hard inputs (near and exact duplicates, collapsed batches, huge and tiny scales, one-class / all-distinct labels),
float64 gradcheck of the Rust backward, and double backward refused rather than silently wrong."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reprkit import functional as Fn
from reprkit import miners, pairwise_distances
from reprkit import reference as R
from reprkit.reference import pairs as RP
from reprkit.testing import assert_double_backward, assert_gradients_match, labelled_batches, paired_views

# Mining and hinges have kinks where ties flip the selection: exact duplicates and collapsed batches make ties
# certain, so the tie-sensitive losses draw from the smooth kinds (duplicates are covered by the edge-case tests).
SMOOTH = ("gaussian", "mixed_scale", "tiny")
ALL_KINDS = None
F64 = torch.float64


def check(fn, ref, *inputs, **kw):
    # reprkit computes half precision in float32 and returns a float32 loss: compare on float32/float64 inputs only.
    assert_gradients_match(fn, ref, *inputs, names=("x", "labels")[: len(inputs)], **kw)


@given(labelled_batches(n=(2, 20), d=(1, 6), dtype=F64, kind=ALL_KINDS), st.sampled_from(["euclidean", "sqeuclidean", "cosine"]))
def test_contrastive(batch, distance):
    x, y = batch
    check(lambda t, yy: Fn.contrastive_loss(t, yy, 1.0, distance=distance, reduction="none"),
          lambda t, yy: RP.contrastive_loss(t, yy, 1.0, distance=distance, reduction="none"), x, y,
          gradcheck=distance != "euclidean")  # D is not differentiable at 0 (duplicates): the kernel takes 0 there


@given(labelled_batches(n=(2, 20), d=(1, 6), dtype=torch.float32, kind=("near_duplicates", "collapsed", "huge", "tiny")))
def test_float32_backward_keeps_precision_on_collapsed_and_near_duplicate_rows(batch):
    # The product form Σc·x_i − Σc·r_j cancels for rows far from the origin or nearly equal: the backward
    # centres the rows and adds near-duplicate pairs directly, so float32 stays within float32 rounding.
    x, y = batch
    check(lambda t, yy: Fn.contrastive_loss(t, yy, 1.0, distance="sqeuclidean", reduction="none"),
          lambda t, yy: RP.contrastive_loss(t, yy, 1.0, distance="sqeuclidean", reduction="none"), x, y, gradcheck=False)
    check(lambda t, yy: Fn.lifted_structure_loss(t, yy, 0.5, distance="sqeuclidean", reduction="none"),
          lambda t, yy: RP.lifted_structure_loss(t, yy, 0.5, distance="sqeuclidean", reduction="none"), x, y, gradcheck=False)


@given(labelled_batches(n=(2, 16), d=(1, 5), dtype=F64, kind=SMOOTH),
       st.sampled_from(["all", "batch_all", "batch_hard", "semi_hard"]), st.sampled_from(["euclidean", "sqeuclidean", "cosine"]))
def test_triplet(batch, mining, distance):
    x, y = batch
    check(lambda t, yy: Fn.triplet_margin_loss(t, yy, 0.3, mining, distance=distance, soft=True, reduction="none"),
          lambda t, yy: RP.triplet_margin_loss(t, yy, 0.3, mining, distance=distance, soft=True, reduction="none"), x, y)


@given(labelled_batches(n=(2, 16), d=(1, 5), dtype=F64, kind=SMOOTH), st.booleans())
def test_lifted(batch, hard):
    x, y = batch
    check(lambda t, yy: Fn.lifted_structure_loss(t, yy, 0.8, hard, reduction="none"),
          lambda t, yy: RP.lifted_structure_loss(t, yy, 0.8, hard, reduction="none"), x, y, gradcheck=not hard)


@given(labelled_batches(n=(2, 20), d=(2, 6), dtype=st.sampled_from([torch.float32, F64]), kind=SMOOTH))
def test_multi_similarity_and_circle(batch):
    x, y = batch
    check(lambda t, yy: Fn.multi_similarity_loss(t, yy, 2.0, 10.0, reduction="none"),
          lambda t, yy: R.multi_similarity_loss(t, yy, 2.0, 10.0, reduction="none"), x, y)
    # Circle's α weights are constants in its gradient (the paper's code): no gradcheck of the value.
    check(lambda t, yy: Fn.circle_loss(t, yy, 0.25, 8.0, reduction="none"),
          lambda t, yy: R.circle_loss(t, yy, 0.25, 8.0, reduction="none"), x, y, gradcheck=False)


@given(paired_views(n=(2, 16), d=(2, 6), dtype=st.sampled_from([torch.float32, F64])), st.sampled_from([0.1, 0.5]))
def test_softmax_family(views, tau):
    z1, z2 = views
    # No gradcheck here: with near-identical views the softmax saturates (loss ~1e-9, the difference of two logits
    # ~1/τ) and finite differences of the value resolve nothing; test_losses.py gradchecks these kernels elsewhere.
    kw = dict(gradcheck=False)
    check(lambda a, b: Fn.ntxent_loss(a, b, tau), lambda a, b: R.ntxent_loss(a, b, tau), z1, z2, **kw)
    check(lambda a, b: Fn.infonce_loss(a, b, None, tau), lambda a, b: R.infonce_loss(a, b, None, tau), z1, z2, **kw)
    check(lambda a, b: Fn.npair_loss(a, b, 0.01), lambda a, b: R.npair_loss(a, b, 0.01), z1, z2, **kw)


@given(labelled_batches(n=(2, 20), d=(1, 6), dtype=F64))
def test_distances(batch):
    x, _ = batch
    check(lambda t: pairwise_distances(t, None, "sqeuclidean"), lambda t: R.pairwise_distances(t, None, "sqeuclidean"), x)


@settings(max_examples=10)
@given(labelled_batches(n=(6, 14), d=(2, 4), dtype=F64, kind=SMOOTH, structure="balanced", n_classes=2))
def test_losses_over_mined_tuples(batch):
    x, y = batch
    trip = miners.triplet_margin(x, y, 0.5, "all")
    pairs = miners.pair_margin(x, y, 0.3, 1.5)
    check(lambda t: Fn.triplet_margin_loss(t, None, 0.5, indices_tuple=trip, distance="euclidean", reduction="none"),
          lambda t: RP.triplet_tuple_terms(t, None, *trip, 0.5, "euclidean", False), x, gradcheck=False)
    check(lambda t: Fn.contrastive_loss(t, None, 1.0, indices_tuple=pairs, distance="sqeuclidean", reduction="none"),
          lambda t: RP.pair_tuple_terms(t, None, *pairs, 1.0, "sqeuclidean"), x)


@pytest.mark.parametrize("name", ["contrastive", "triplet", "lifted", "ms", "ntxent", "distances"])
def test_double_backward_is_refused(name):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 3, generator=g, dtype=F64)
    y = torch.arange(10) % 3
    fn = {
        "contrastive": lambda t: Fn.contrastive_loss(t, y),
        "triplet": lambda t: Fn.triplet_margin_loss(t, y, 0.2, "batch_hard"),
        "lifted": lambda t: Fn.lifted_structure_loss(t, y),
        "ms": lambda t: Fn.multi_similarity_loss(t, y),
        "ntxent": lambda t: Fn.ntxent_loss(t[:5], t[5:]),
        "distances": lambda t: pairwise_distances(t).sum(),
    }[name]
    assert assert_double_backward(fn, x) == "raises"
