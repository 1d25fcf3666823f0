"""Pure-torch implementations of reprkit's kernels.

They run on any device (this is the CUDA path) and are the oracle the tests
compare the Rust kernels against. They follow the same formulas and
conventions as the Rust path, written for clarity rather than memory.
"""

from .distances import pairwise_distances

__all__ = ["pairwise_distances"]
