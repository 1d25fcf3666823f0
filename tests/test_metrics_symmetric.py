"""The symmetric scan of a set against itself (reference=None): retrieval
metrics and kNN over several 1024-row blocks, where distance blocks reach a
row in an order set by the thread schedule, against plain numpy loops with
the documented tie rule (distance, then lower index), and invariant to the
thread count."""

import numpy as np
import pytest

import reprkit.metrics as M
from test_metrics import KEYS, _close, _loop_knn_acc, _loop_retrieval


def _grid(n=2600, d=3, seed=0, dtype=np.float64):
    """Small integers in ±2 and their negatives: the column mean is exactly 0,
    so the centred GEMM distances are exact and every tie in the data (there
    are many: 125 distinct points, duplicates of each) is an exact tie."""
    rng = np.random.default_rng(seed)
    h = rng.integers(-2, 3, size=(n // 2, d))
    x = np.concatenate([h, -h])[rng.permutation(2 * (n // 2))]
    return x.astype(dtype)


def _labels(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 8, n)
    y[5] = 100  # a label present once: the query is left out
    y[700:] = np.where(rng.random(n - 700) < 0.02, 102, y[700:])  # a small class spread over the blocks
    y[[40, 1900]] = 101  # a class of two: R = 1, rarely its own nearest, reciprocal rank from the second pass
    return y


@pytest.mark.parametrize("k", [None, 9])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_symmetric_retrieval_matches_loop_with_exact_ties(k, dtype):
    x = _grid(dtype=dtype)
    y = _labels(x.shape[0])
    got = M.retrieval_metrics(x, y, k=k)
    want = _loop_retrieval(x.astype(np.float64), y, x.astype(np.float64), y, True, k)
    _close(got, want, KEYS + ("n_excluded",), 1e-12)
    assert got["n_excluded"] == 1


def test_symmetric_retrieval_thread_count_invariant():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 12, 3200)
    x = (rng.normal(size=(12, 16))[y] + rng.normal(size=(3200, 16))).astype(np.float32)
    x[2000] = x[3]  # duplicates across blocks
    x[3000] = x[3]
    base = M.retrieval_metrics(x, y, n_jobs=1)
    for nj in (2, 3, 5):
        assert M.retrieval_metrics(x, y, n_jobs=nj) == base
    i1, d1 = M.knn(x, k=7, n_jobs=1)
    for nj in (2, 5):
        i2, d2 = M.knn(x, k=7, n_jobs=nj)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(d1, d2)


def test_symmetric_cosine_matches_loop_on_unit_rows():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 6, 2400)
    x = rng.normal(size=(6, 5))[y] + rng.normal(size=(2400, 5))
    x *= rng.uniform(0.5, 3.0, size=(2400, 1))  # cosine ignores the scale
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    _close(M.retrieval_metrics(x, y, metric="cosine"), _loop_retrieval(u, y, u, y, True), KEYS, 1e-12)


def test_symmetric_knn_matches_loop_with_exact_ties():
    x = _grid(2200, 3, seed=3)
    y = _labels(2200, seed=3)
    idx, dist = M.knn(x, k=6)
    for i in range(0, 2200, 7):
        dd = ((x - x[i]) ** 2).sum(1)
        order = np.lexsort((np.arange(2200), dd))
        order = order[order != i][:6]
        np.testing.assert_array_equal(idx[i], order)
        np.testing.assert_allclose(dist[i], np.sqrt(dd[order]), rtol=0, atol=1e-12)
    for k in (1, 4):
        assert M.knn_accuracy(x, y, k=k) == pytest.approx(_loop_knn_acc(x, y, x, y, True, k), abs=1e-12)
