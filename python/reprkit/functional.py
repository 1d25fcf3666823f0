"""Every loss as a function (the ``torch.nn.Module`` classes live in :mod:`reprkit.losses`).

The formulas are in the docstrings of each family module:
:mod:`reprkit.losses.pairs` and :mod:`reprkit.losses.softmax`.
"""

from .losses.pairs import (  # noqa: F401
    DISTANCES,
    MININGS,
    REDUCTIONS,
    circle_loss,
    contrastive_loss,
    lifted_structure_loss,
    multi_similarity_loss,
    pairs_to_triplets,
    triplet_margin_loss,
)
from .losses.redundancy import barlow_twins_loss, vicreg_graph_loss, vicreg_loss  # noqa: F401
from .losses.softmax import infonce_loss, npair_loss, ntxent_loss

__all__ = [
    "contrastive_loss",
    "triplet_margin_loss",
    "lifted_structure_loss",
    "multi_similarity_loss",
    "circle_loss",
    "npair_loss",
    "ntxent_loss",
    "infonce_loss",
    "barlow_twins_loss",
    "vicreg_loss",
    "vicreg_graph_loss",
]
