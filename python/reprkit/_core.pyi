"""Type stubs of the compiled module reprkit._core (thin bindings over the Rust kernels)."""

from typing import Optional, Tuple

import numpy as np
import numpy.typing as npt

__version__: str

def _pool_threads(n_threads: int) -> int: ...
def pairwise_distances(
    x: npt.NDArray[np.floating], y: Optional[npt.NDArray[np.floating]], metric: str, n_threads: int
) -> npt.NDArray[np.floating]: ...
def pairwise_distances_backward(
    x: npt.NDArray[np.floating],
    y: Optional[npt.NDArray[np.floating]],
    dist: npt.NDArray[np.floating],
    grad: npt.NDArray[np.floating],
    metric: str,
    n_threads: int,
) -> Tuple[npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]: ...
