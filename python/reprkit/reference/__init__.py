"""Pure-torch implementations of reprkit's kernels.

They run on any device (this is the CUDA path) and are the oracle the tests
compare the Rust kernels against. They follow the same formulas and
conventions as the Rust path, written for clarity rather than memory.
"""

from .distances import pairwise_distances

__all__ = ["pairwise_distances"]

from .losses import (  # noqa: E402
    contrastive_loss,
    infonce_loss,
    lifted_structure_loss,
    mine_batch_all,
    mine_batch_hard,
    mine_semi_hard,
    npair_loss,
    ntxent_loss,
    triplet_margin_loss,
)

__all__ += [
    "contrastive_loss",
    "triplet_margin_loss",
    "lifted_structure_loss",
    "npair_loss",
    "ntxent_loss",
    "infonce_loss",
    "mine_batch_hard",
    "mine_batch_all",
    "mine_semi_hard",
]
