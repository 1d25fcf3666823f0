"""Agreement of k-means clusters of the embeddings with the labels: NMI and AMI.

With the contingency table n_ij of labels U (a_i = Σ_j n_ij) against clusters
V (b_j), N rows, entropies H(U) = −Σ (a_i/N) log(a_i/N) and H(V):

* MI(U, V) = Σ_ij (n_ij/N) log(N n_ij / (a_i b_j))
* NMI = MI / mean(H(U), H(V))                              (arithmetic mean)
* AMI = (MI − E[MI]) / (mean(H(U), H(V)) − E[MI])          (Vinh, Epps & Bailey 2010)

where E[MI] is the expected mutual information under the hypergeometric
model of random labellings with the same marginals. These are scikit-learn's
``normalized_mutual_info_score`` and ``adjusted_mutual_info_score`` with
``average_method="arithmetic"`` (their default), including the conventions
for single-cluster labellings.

The clusters come from reprkit's own k-means (:func:`kmeans`): k-means++
seeding (Arthur & Vassilvitskii 2007) from ``random_state`` and Lloyd
iterations whose assignment step is the exact Rust nearest-centre search;
its result does not depend on the thread count. ``n_clusters`` defaults to
the number of distinct labels, as PML's AccuracyCalculator does.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
from scipy.special import gammaln

from .. import _core
from .._threads import resolve_n_jobs
from . import _inputs as I


def _codes(a: Any, name: str, n: Optional[int] = None, n_name: str = "") -> np.ndarray:
    lab = I.labels_1d(a, name, n, n_name)
    return I.encode(lab)[1][0]


def _contingency(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    nu, nv = int(u.max()) + 1, int(v.max()) + 1
    return np.bincount(u * nv + v, minlength=nu * nv).reshape(nu, nv).astype(np.float64)


def _entropy(counts: np.ndarray) -> float:
    c = counts[counts > 0]
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def _mi(c: np.ndarray) -> float:
    n = c.sum()
    a, b = c.sum(1), c.sum(0)
    i, j = np.nonzero(c)
    nij = c[i, j]
    return float(max(0.0, (nij / n * (np.log(nij * n) - np.log(a[i] * b[j]))).sum()))


def _expected_mi(a: np.ndarray, b: np.ndarray, n: int) -> float:
    """E[MI] under the hypergeometric model (Vinh et al. 2010, eq. 24a), in log space."""
    a = a[a > 0].astype(np.float64)
    b = b[b > 0].astype(np.float64)
    gn = gammaln(n + 1)
    emi = 0.0
    for ai in a:
        lo = np.maximum(1.0, ai + b - n)
        hi = np.minimum(ai, b)
        cnt = (hi - lo + 1).clip(min=0).astype(np.int64)
        if cnt.sum() == 0:
            continue
        bj = np.repeat(b, cnt)
        start = np.repeat(lo, cnt)
        # nij runs lo..hi within each b_j's segment.
        seg = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        nij = start + seg
        term1 = nij / n * (np.log(n * nij) - np.log(ai * bj))
        logp = (
            gammaln(ai + 1) + gammaln(bj + 1) + gammaln(n - ai + 1) + gammaln(n - bj + 1)
            - gn - gammaln(nij + 1) - gammaln(ai - nij + 1) - gammaln(bj - nij + 1) - gammaln(n - ai - bj + nij + 1)
        )
        emi += float((term1 * np.exp(logp)).sum())
    return emi


def normalized_mutual_info(labels_true: Any, labels_pred: Any) -> float:
    """NMI with the arithmetic-mean normaliser (= sklearn's ``normalized_mutual_info_score``)."""
    u = _codes(labels_true, "labels_true")
    v = _codes(labels_pred, "labels_pred", u.shape[0], "labels_true")
    nu, nv = int(u.max()) + 1, int(v.max()) + 1
    if nu == nv == 1:
        return 1.0
    c = _contingency(u, v)
    mi = _mi(c)
    if mi <= 0.0:
        return 0.0
    norm = 0.5 * (_entropy(c.sum(1)) + _entropy(c.sum(0)))
    return float(mi / norm)


def adjusted_mutual_info(labels_true: Any, labels_pred: Any) -> float:
    """AMI with the arithmetic-mean normaliser (= sklearn's ``adjusted_mutual_info_score``)."""
    u = _codes(labels_true, "labels_true")
    v = _codes(labels_pred, "labels_pred", u.shape[0], "labels_true")
    nu, nv = int(u.max()) + 1, int(v.max()) + 1
    if nu == nv == 1:
        return 1.0
    c = _contingency(u, v)
    mi = _mi(c)
    emi = _expected_mi(c.sum(1), c.sum(0), u.shape[0])
    norm = 0.5 * (_entropy(c.sum(1)) + _entropy(c.sum(0)))
    den = norm - emi
    eps = np.finfo(np.float64).eps
    den = min(den, -eps) if den < 0 else max(den, eps)
    return float((mi - emi) / den)


def kmeans(
    x: Any, n_clusters: int, *, random_state: Optional[int] = 0, max_iter: int = 300, tol: float = 1e-4,
    n_jobs: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray, float]:
    """k-means (Lloyd) with k-means++ seeding: (labels (n,) int64, centres (k, d), inertia).

    Stops when the squared centre shift falls below ``tol`` × the mean per-feature
    variance (scikit-learn's rule) or after ``max_iter`` rounds. An emptied
    cluster takes the point farthest from its centre. Deterministic for a given
    ``random_state`` and any thread count."""
    a = I.embeddings(x, "x")
    n = a.shape[0]
    kc = I.check_int("n_clusters", n_clusters, 1, n, f" (at most the {n} rows)")
    max_iter = I.check_int("max_iter", max_iter, 1)
    nt = resolve_n_jobs(n_jobs)
    data = a.astype(np.float64)
    rng = np.random.default_rng(random_state)
    # k-means++: each new centre drawn with probability ∝ squared distance to the nearest chosen one
    # (2 + log k candidates per step, the greedy variant scikit-learn uses).
    n_trials = 2 + int(np.log(kc))
    sq = np.einsum("ij,ij->i", data, data)
    centres = np.empty((kc, a.shape[1]), dtype=np.float64)
    first = int(rng.integers(n))
    centres[0] = data[first]
    closest = np.maximum(sq - 2 * data @ data[first] + sq[first], 0.0)
    for c in range(1, kc):
        pot = closest.sum()
        if pot <= 0:
            cand = rng.integers(n, size=n_trials)
        else:
            cand = np.searchsorted(np.cumsum(closest), rng.random(n_trials) * pot).clip(max=n - 1)
        d_c = np.maximum(sq[None, :] - 2 * data[cand] @ data.T + sq[cand, None], 0.0)
        d_c = np.minimum(closest[None, :], d_c)
        best = int(np.argmin(d_c.sum(axis=1)))
        centres[c] = data[cand[best]]
        closest = d_c[best]
    tol_abs = tol * float(data.var(axis=0).mean())
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(max_iter):
        idx, dist = _core.knn_query(a, centres.astype(a.dtype), 1, "euclidean", None, nt)
        labels = idx[:, 0]
        counts = np.bincount(labels, minlength=kc)
        new = np.zeros_like(centres)
        np.add.at(new, labels, data)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            far = np.argsort(-dist[:, 0], kind="stable")[: empty.size]
            new[empty] = data[far]
            counts[empty] = 1
        new /= counts[:, None]
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if shift <= tol_abs:
            break
    idx, dist = _core.knn_query(a, centres.astype(a.dtype), 1, "euclidean", None, nt)
    labels = idx[:, 0]
    inertia = float((dist[:, 0].astype(np.float64) ** 2).sum())
    return labels, centres, inertia


def _cluster_scores(x, labels, n_clusters, random_state, n_jobs):
    a = I.embeddings(x, "x")
    codes = _codes(labels, "labels", a.shape[0], "x")
    kc = int(codes.max()) + 1 if n_clusters is None else n_clusters
    pred, _, _ = kmeans(a, kc, random_state=random_state, n_jobs=n_jobs)
    return codes, pred


def cluster_scores(x: Any, labels: Any, *, n_clusters: Optional[int] = None, random_state: Optional[int] = 0,
                   n_jobs: Optional[int] = None) -> dict:
    """``{"nmi": ..., "ami": ...}`` of one k-means clustering of ``x`` against the labels."""
    codes, pred = _cluster_scores(x, labels, n_clusters, random_state, n_jobs)
    return {"nmi": normalized_mutual_info(codes, pred), "ami": adjusted_mutual_info(codes, pred)}


def nmi(x: Any, labels: Any, *, n_clusters: Optional[int] = None, random_state: Optional[int] = 0,
        n_jobs: Optional[int] = None) -> float:
    """NMI between the labels and k-means clusters of ``x`` (``n_clusters`` = number of labels by default)."""
    return normalized_mutual_info(*_cluster_scores(x, labels, n_clusters, random_state, n_jobs))


def ami(x: Any, labels: Any, *, n_clusters: Optional[int] = None, random_state: Optional[int] = 0,
        n_jobs: Optional[int] = None) -> float:
    """AMI between the labels and k-means clusters of ``x`` (``n_clusters`` = number of labels by default)."""
    return adjusted_mutual_info(*_cluster_scores(x, labels, n_clusters, random_state, n_jobs))
