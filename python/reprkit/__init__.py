"""reprkit: fast representation learning with a Rust core.

* loss kernels for metric and contrastive learning (``reprkit.losses``,
  ``reprkit.functional``, ``reprkit.miners``) — need torch;
* classical embeddings: t-SNE, Laplacian eigenmaps, classical MDS, PCA
  (``reprkit.manifold``);
* pairwise distances for numpy arrays and differentiable torch tensors.

Importing reprkit never imports torch; torch-facing APIs raise an ImportError
naming the ``reprkit[torch]`` extra when torch is missing.
"""

from __future__ import annotations

import os as _os

from . import _core, errors
from ._threads import get_num_threads, set_num_threads
from .distances import pairwise_distances
from .manifold import PCA, SNE, TSNE, ClassicalMDS, LaplacianEigenmaps, SymmetricSNE, tsne
from .errors import (
    DTypeError,
    InvalidInputError,
    InvalidParameterError,
    MissingDependencyError,
    NonFiniteError,
    ReprkitError,
    ShapeError,
)

__version__: str = _core.__version__

__all__ = [
    "__version__",
    "pairwise_distances",
    "set_num_threads",
    "get_num_threads",
    "errors",
    "ReprkitError",
    "InvalidInputError",
    "ShapeError",
    "NonFiniteError",
    "InvalidParameterError",
    "DTypeError",
    "MissingDependencyError",
    "LaplacianEigenmaps",
    "ClassicalMDS",
    "PCA",
    "TSNE",
    "SNE",
    "SymmetricSNE",
    "tsne",
]

# torch-backed packages load on first use; the old flat module names stay importable as attributes.
_LAZY = {
    "reference": "reference",
    "functional": "functional",
    "losses": "losses",
    "miners": "miners",
    "distributed": "distributed",
    "plot": "plot",
    "testing": "testing",
    "manifold": "manifold",
    "sne": "manifold.sne",
    "spectral": "manifold.spectral",
    "mds": "manifold.mds",
    "pca": "manifold.pca",
    "memory": "losses.memory",
}
_LAZY_ATTRS = {"MemoryBank": "losses.memory", "ema_update": "losses.distillation"}
_LAZY_ATTRS["ParametricTSNE"] = "manifold.parametric"  # torch-backed


def __getattr__(name: str):  # PEP 562: torch-backed submodules load on first use
    if name in _LAZY:
        import importlib

        return importlib.import_module(f".{_LAZY[name]}", __name__)
    if name in _LAZY_ATTRS:  # torch-backed classes, imported on first use
        import importlib

        return getattr(importlib.import_module(f".{_LAZY_ATTRS[name]}", __name__), name)
    raise AttributeError(f"module 'reprkit' has no attribute {name!r}")
