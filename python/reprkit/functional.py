"""Every loss as a function (the ``torch.nn.Module`` classes live in :mod:`reprkit.losses`).

The formulas are in the docstrings of each family module:
:mod:`reprkit.losses.pairs`, :mod:`reprkit.losses.softmax` and :mod:`reprkit.losses.multimodal`.
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
from .losses.multimodal import clip_loss, siglip_loss
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
    "clip_loss",
    "siglip_loss",
]
