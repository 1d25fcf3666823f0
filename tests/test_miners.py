"""Miners against brute-force loops over all triplets, the reference, and PML."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reprkit import miners
from reprkit.errors import DTypeError, ShapeError
from reprkit import reference as R


def dmat(x, r, squared):
    d = ((x[:, None, :] - r[None, :, :]) ** 2).sum(-1)
    return d if squared else np.sqrt(d)


def brute(kind, x, y, r=None, ry=None, margin=0.2, squared=False):
    """Loops over every (a, p, n): the definitions, with ties to the lowest index."""
    same = r is None
    r, ry = (x, y) if same else (r, ry)
    d = dmat(x, r, squared)
    out = []
    for a in range(len(x)):
        pos = [j for j in range(len(r)) if ry[j] == y[a] and not (same and j == a)]
        neg = [j for j in range(len(r)) if ry[j] != y[a]]
        if not neg:
            continue
        if kind == "batch_hard":
            if pos:
                p = min(pos, key=lambda j: (-d[a, j], j))
                n = min(neg, key=lambda j: (d[a, j], j))
                out.append((a, p, n))
        elif kind == "semi_hard":
            for p in pos:
                semi = [j for j in neg if d[a, j] > d[a, p]]
                n = min(semi, key=lambda j: (d[a, j], j)) if semi else min(neg, key=lambda j: (-d[a, j], j))
                out.append((a, p, n))
        else:
            for p, n in itertools.product(pos, neg):
                if d[a, p] - d[a, n] + margin > 0:
                    out.append((a, p, n))
    return out


def as_list(t):
    return list(zip(*(v.tolist() for v in t)))


@st.composite
def data(draw):
    n = draw(st.integers(2, 24))
    d = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    layout = draw(st.sampled_from(["random", "singletons", "one_class", "pairs"]))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = {
        "random": torch.randint(0, draw(st.integers(1, 5)), (n,), generator=g),
        "singletons": torch.arange(n),
        "one_class": torch.zeros(n, dtype=torch.long),
        "pairs": torch.arange(n) // 2,
    }[layout]
    m = draw(st.sampled_from([0, 0, 7, 20]))
    r = torch.randn(m, d, generator=g, dtype=torch.float64) if m else None
    ry = torch.randint(0, 4, (m,), generator=g) if m else None
    return x, y, r, ry


@given(data(), st.booleans(), st.floats(0.0, 1.0))
def test_miners_match_brute_force(dt, squared, margin):
    x, y, r, ry = dt
    args = (x.numpy(), y.numpy(), None if r is None else r.numpy(), None if ry is None else ry.numpy())
    got = miners.batch_hard(x, y, squared, r, ry)
    assert all(t.dtype == torch.long for t in got)
    assert as_list(got) == brute("batch_hard", *args, squared=squared)
    assert as_list(miners.semi_hard(x, y, None, squared, r, ry)) == brute("semi_hard", *args, squared=squared)
    assert as_list(miners.batch_all(x, y, margin, squared, r, ry)) == brute("batch_all", *args, margin=margin, squared=squared)
    # The pure-torch reference (device path) gives the same indices.
    assert as_list(R.mine_batch_hard(x, y, squared, r, ry)) == as_list(got)
    assert as_list(R.mine_semi_hard(x, y, squared, r, ry)) == as_list(miners.semi_hard(x, y, None, squared, r, ry))
    assert as_list(R.mine_batch_all(x, y, margin, squared, r, ry)) == as_list(miners.batch_all(x, y, margin, squared, r, ry))


def test_semi_hard_margin_keeps_violating_triplets_only():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(20, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (20,), generator=g)
    a, p, n = miners.semi_hard(x, y)
    d = dmat(x.numpy(), x.numpy(), False)
    keep = [(i, j, k) for i, j, k in as_list((a, p, n)) if d[i, j] - d[i, k] + 0.3 > 0]
    assert as_list(miners.semi_hard(x, y, 0.3)) == keep


def test_ties_go_to_the_lowest_index():
    # Anchor 0 at the origin, two positives at distance 1, four negatives at distance 2;
    # the rows have mean 0 and integer coordinates, so every distance is exact.
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0], [2.0, 0.0], [-2.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    a, p, n = miners.batch_hard(x, y)
    assert (p[0].item(), n[0].item()) == (1, 3)
    a, p, n = miners.semi_hard(x, y)
    assert as_list((a, p, n))[:2] == [(0, 1, 3), (0, 2, 3)]
    assert as_list(R.mine_batch_hard(x, y))[0] == (0, 1, 3)
    assert as_list(R.mine_semi_hard(x, y))[:2] == [(0, 1, 3), (0, 2, 3)]


def test_batch_hard_matches_pml_indices():
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import distances
    from pytorch_metric_learning.miners import BatchHardMiner

    g = torch.Generator().manual_seed(7)
    x = torch.randn(64, 8, generator=g)
    y = torch.randint(0, 6, (64,), generator=g)
    a, p, n = BatchHardMiner(distance=distances.LpDistance(normalize_embeddings=False))(x, y)
    order = torch.argsort(a)
    ours = miners.batch_hard(x, y)
    assert torch.equal(ours[0], a[order]) and torch.equal(ours[1], p[order]) and torch.equal(ours[2], n[order])


def test_batch_all_matches_pml_triplet_margin_miner():
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import distances
    from pytorch_metric_learning.miners import TripletMarginMiner

    g = torch.Generator().manual_seed(8)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (40,), generator=g)
    theirs = TripletMarginMiner(margin=0.4, type_of_triplets="all", distance=distances.LpDistance(normalize_embeddings=False))(x, y)
    assert sorted(as_list(theirs)) == as_list(miners.batch_all(x, y, 0.4))


def test_miner_input_errors():
    x = torch.randn(4, 2)
    with pytest.raises(ShapeError):
        miners.batch_hard(x, torch.tensor([0, 1, 0]))
    with pytest.raises(DTypeError):
        miners.batch_all(x, torch.tensor([0.0, 1.0, 0.0, 1.0]))
