"""Classical embeddings as scikit-learn-style estimators.

* :mod:`.sne` — t-SNE (Barnes-Hut, exact), SNE and symmetric SNE;
* :mod:`.spectral` — Laplacian eigenmaps and the spectral initialisation of t-SNE;
* :mod:`.mds` — classical MDS; :mod:`.pca` — PCA.

numpy in → numpy out of the same float dtype (int/bool → float64), torch in → torch out on the
same device and dtype, for every ``fit_transform`` / ``transform`` and function; fitted
attributes (``embedding_``, ``components_``, ...) are always numpy. Every estimator carries
scikit-learn tags (Pipeline, clone, check_is_fitted work; sklearn is not a dependency).
The heavy work runs in Rust with the GIL released.
"""

from ._checks import ComplexInputError, DuplicateRowsWarning, ReprkitWarning
from .mds import ClassicalMDS
from .pca import PCA
from .spectral import LaplacianEigenmaps, spectral_init
from .sne import SNE, TSNE, SymmetricSNE, tsne

from .parametric import ParametricTSNE  # torch is imported inside its methods only

__all__ = ["TSNE", "SNE", "SymmetricSNE", "tsne", "LaplacianEigenmaps", "spectral_init", "ClassicalMDS", "PCA",
           "ParametricTSNE", "DuplicateRowsWarning", "ReprkitWarning", "ComplexInputError"]
