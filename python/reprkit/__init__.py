"""reprkit: fast representation learning with a Rust core.

* loss kernels for metric and contrastive learning (``reprkit.losses``,
  ``reprkit.functional``, ``reprkit.miners``) — need torch;
* classical embeddings: t-SNE, Laplacian eigenmaps, classical MDS, PCA;
* pairwise distances for numpy arrays and differentiable torch tensors.

Importing reprkit never imports torch; torch-facing APIs raise an ImportError
naming the ``reprkit[torch]`` extra when torch is missing.
"""

from __future__ import annotations

import os as _os

from . import _core, errors
from ._threads import get_num_threads, set_num_threads
from .distances import pairwise_distances
from .mds import ClassicalMDS
from .pca import PCA
from .spectral import LaplacianEigenmaps
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
]

_LAZY = {"reference", "functional", "losses", "miners", "plot"}
_LAZY_ATTRS = {"MemoryBank": "memory"}


def __getattr__(name: str):  # PEP 562: torch-backed submodules load on first use
    if name in _LAZY:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY_ATTRS:  # torch-backed classes, imported on first use
        import importlib

        return getattr(importlib.import_module(f".{_LAZY_ATTRS[name]}", __name__), name)
    raise AttributeError(f"module 'reprkit' has no attribute {name!r}")

from .sne import SNE, TSNE, SymmetricSNE, tsne  # noqa: E402

__all__ += ["TSNE", "SNE", "SymmetricSNE", "tsne"]
