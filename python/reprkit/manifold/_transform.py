"""Neighbours of new points among the training points for ``TSNE.transform``.

A new point's result must not depend on which other rows share its batch. The
fitted data's own pairwise kernel centres on the joint mean of both sets (so a
batch moves every distance by a few ulps and flips near-ties at the k-th
neighbour), so here every distance is computed from quantities fixed at fit
time: both sets are centred on the training mean μ and

    d²(x, r) = ‖x − μ‖² + ‖r − μ‖² − 2 (x − μ)·(r − μ)       (float64),

entries small against the norms (cancellation) are recomputed as Σ(x − r)², and
every product is one fixed-shape GEMM (zero-padded blocks: BLAS would round
a single row's gemv differently), and the k nearest are chosen by (distance,
training index), so ties (duplicate
training rows, points on a grid) are broken the same way in every batch.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

#: Rows per block: a block of ROWS × n_train float64 distances is formed at a time.
ROWS = 256


def _select(D: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The k smallest entries of each row of D, ordered by (value, column index)."""
    m, n = D.shape
    if k >= n:
        cols = np.tile(np.arange(n), (m, 1))
    else:
        kth = np.partition(D, k - 1, axis=1)[:, k - 1 : k]
        less = D < kth
        need = k - less.sum(axis=1, keepdims=True)
        eq = D == kth
        take = less | (eq & (np.cumsum(eq, axis=1) <= need))
        cols = np.nonzero(take)[1].reshape(m, k)  # row-major: columns ascending within a row
    d = np.take_along_axis(D, cols, axis=1)
    order = np.argsort(d, axis=1, kind="stable")  # stable: equal distances stay in index order
    return np.take_along_axis(cols, order, axis=1), np.take_along_axis(d, order, axis=1)


def reference_neighbors(xn: np.ndarray, ref: np.ndarray, k: int, metric: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(idx (m, k) int32, d (m, k) float64)``: the k nearest training rows of each new row and
    the value t-SNE calibrates on (squared Euclidean; 1 − cos for "cosine"; the given distance
    squared for "precomputed", where ``xn`` holds distances to the training points)."""
    m = xn.shape[0]
    idx = np.empty((m, k), dtype=np.int32)
    dist = np.empty((m, k), dtype=np.float64)
    if metric == "precomputed":
        for s in range(0, m, ROWS):
            D = np.asarray(xn[s : s + ROWS], dtype=np.float64) ** 2
            idx[s : s + ROWS], dist[s : s + ROWS] = _select(D, k)
        return idx, dist
    r = np.asarray(ref, dtype=np.float64)
    cosine = metric == "cosine"
    if cosine:
        r = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    mu = r.mean(axis=0)
    rc = r - mu
    rn = np.einsum("ij,ij->i", rc, rc)
    for s in range(0, m, ROWS):
        q = np.asarray(xn[s : s + ROWS], dtype=np.float64)
        if cosine:
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), np.finfo(np.float64).tiny)
        qc = q - mu
        qn = np.einsum("ij,ij->i", qc, qc)
        # BLAS picks gemv for one row and gemm for several (different rounding): always
        # multiply a full ROWS-row block (zero padded) so every row takes the same path.
        block = np.zeros((ROWS, qc.shape[1]))
        block[: qc.shape[0]] = qc
        D = qn[:, None] + rn[None, :] - 2.0 * (block @ rc.T)[: qc.shape[0]]
        # Cancellation: where d² is tiny against the norms, recompute exactly.
        bad = D <= 1e-6 * (qn[:, None] + rn[None, :])
        if bad.any():
            bi, bj = np.nonzero(bad)
            diff = q[bi] - r[bj]
            D[bi, bj] = np.einsum("ij,ij->i", diff, diff)
        np.maximum(D, 0.0, out=D)
        if cosine:
            D *= 0.5  # ‖â − b̂‖² / 2 = 1 − cos
        idx[s : s + ROWS], dist[s : s + ROWS] = _select(D, k)
    return idx, dist
