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
from .losses.margin import (  # noqa: F401
    adaptive_margins,
    arcface_loss,
    center_loss,
    cosface_loss,
    normalized_softmax_loss,
    subcenter_arcface_loss,
)
from .losses.proxies import proxy_anchor_loss, proxy_nca_loss  # noqa: F401
from .losses.distillation import dino_loss, negative_cosine_loss, symmetric_negative_cosine_loss  # noqa: F401
from .losses.redundancy import barlow_twins_loss, vicreg_graph_loss, vicreg_loss  # noqa: F401
from .losses.multimodal import clip_loss, siglip_loss
from .losses.softmax import infonce_loss, npair_loss, ntxent_loss
from .losses.hypersphere import alignment_loss, hypersphere_loss, uniformity_loss
from .losses.softmax import infonce_loss, npair_loss, ntxent_loss, supcon_loss

__all__ = [
    "contrastive_loss",
    "triplet_margin_loss",
    "lifted_structure_loss",
    "multi_similarity_loss",
    "circle_loss",
    "npair_loss",
    "ntxent_loss",
    "infonce_loss",
    "normalized_softmax_loss",
    "cosface_loss",
    "arcface_loss",
    "subcenter_arcface_loss",
    "center_loss",
    "adaptive_margins",
    "proxy_anchor_loss",
    "proxy_nca_loss",
    "negative_cosine_loss",
    "symmetric_negative_cosine_loss",
    "dino_loss",
    "supcon_loss",
    "alignment_loss",
    "uniformity_loss",
    "hypersphere_loss",
    "barlow_twins_loss",
    "vicreg_loss",
    "vicreg_graph_loss",
    "clip_loss",
    "siglip_loss",
]

from .losses.neighbor_embedding import tsne_loss  # noqa: E402

__all__ += ["tsne_loss"]
