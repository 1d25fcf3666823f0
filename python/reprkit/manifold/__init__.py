"""Classical embeddings as scikit-learn-style estimators.

* :mod:`.sne` — t-SNE (Barnes-Hut, exact), SNE and symmetric SNE;
* :mod:`.spectral` — Laplacian eigenmaps and the spectral initialisation of t-SNE;
* :mod:`.mds` — classical MDS; :mod:`.pca` — PCA.

numpy in → numpy out, torch in → torch out; the heavy work runs in Rust with the GIL released.
"""

from .mds import ClassicalMDS
from .pca import PCA
from .spectral import LaplacianEigenmaps, spectral_init
from .sne import SNE, TSNE, SymmetricSNE, tsne

__all__ = ["TSNE", "SNE", "SymmetricSNE", "tsne", "LaplacianEigenmaps", "spectral_init", "ClassicalMDS", "PCA"]
from .parametric import ParametricTSNE  # noqa: E402,F401  (torch is imported inside its methods only)
