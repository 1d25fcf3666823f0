"""scikit-learn's own estimator checks over every reprkit estimator, and the sklearn glue
(Pipeline, clone, check_is_fitted, is_classifier, get_tags).

Fast settings (few iterations, small perplexity) keep the file well under a minute;
each expected failure has a one-line reason.
"""

from __future__ import annotations

import numpy as np
import pytest

import reprkit

sklearn = pytest.importorskip("sklearn", minversion="1.6")  # Tags, get_tags, expected_failed_checks
from sklearn.base import clone, is_classifier, is_regressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils import get_tags  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Estimator .* does not inherit from:UserWarning")

FAST_SNE = dict(perplexity=2.0, max_iter=30, exaggeration_iter=10, random_state=0)


def _estimators():
    return [
        reprkit.PCA(2, random_state=0),
        reprkit.PCA(2, svd_solver="randomized", random_state=0),
        reprkit.ClassicalMDS(2),
        reprkit.LaplacianEigenmaps(2, n_neighbors=3, random_state=0),
        reprkit.LaplacianEigenmaps(2, n_neighbors=3, symmetrize="mean", weights="connectivity", random_state=0),
        reprkit.TSNE(2, **FAST_SNE),
        reprkit.TSNE(2, method="exact", **FAST_SNE),
        reprkit.SymmetricSNE(2, **FAST_SNE),
        reprkit.SNE(2, **FAST_SNE),
        reprkit.ParametricTSNE(2, perplexity=2.0, n_epochs=2, batch_size=64, random_state=0, n_jobs=1),
    ]


def _expected_failed_checks(est):
    out = {}
    if isinstance(est, reprkit.TSNE):
        why = "t-SNE's transform places new points against a fixed map: fit(X).transform(X) != fit_transform(X)"
        out["check_transformer_general"] = why
        out["check_transformer_data_not_an_array"] = why  # the same fit_transform-vs-transform comparison

    return out


@parametrize_with_checks(_estimators(), expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("est", _estimators(), ids=lambda e: repr(e))
def test_pipeline_clone_tags_fitted(est):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    with pytest.raises(sklearn.exceptions.NotFittedError):
        check_is_fitted(est)
    pipe = make_pipeline(StandardScaler(), clone(est))
    Z = pipe.fit_transform(X)
    assert Z.shape == (40, 2) and np.isfinite(Z).all()
    check_is_fitted(pipe[-1])
    assert not is_classifier(est) and not is_regressor(est)
    tags = get_tags(est)
    assert tags.transformer_tags is not None and "float32" in tags.transformer_tags.preserves_dtype
    assert tags.input_tags.sparse  # PCA natively, the others via a size-guarded dense copy
    c = clone(est)
    assert c.get_params() == est.get_params() and c is not est


def test_tags_without_sklearn(monkeypatch):
    """Without scikit-learn the tags are a plain namespace with the same fields."""
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    t = reprkit.TSNE(metric="precomputed").__sklearn_tags__()
    assert t.estimator_type is None and t.input_tags.pairwise and t.transformer_tags.preserves_dtype == ["float64", "float32"]
    legacy = reprkit.PCA()._get_tags()
    assert "sparse" in legacy["X_types"] and legacy["requires_fit"]
