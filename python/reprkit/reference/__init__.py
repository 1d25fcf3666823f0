"""Pure-torch implementations of reprkit's kernels, one module per family.

They run on any device (this is the CUDA path) and are the oracle the tests
compare the Rust kernels against. They follow the same formulas and
conventions as the Rust path, written for clarity rather than memory.
``reprkit.reference.losses`` gathers every loss and miner.
"""

from . import losses
from .distances import pairwise_distances
from .margin import arcface_loss, center_loss, cosface_loss, normalized_softmax_loss, subcenter_arcface_loss
from .mining import (
    distance_weighted_weights,
    mine_batch_all,
    mine_batch_hard,
    mine_multi_similarity,
    mine_pair_margin,
    mine_semi_hard,
    mine_triplet_margin,
)
from .multimodal import clip_loss, siglip_loss
from .pairs import circle_loss, contrastive_loss, lifted_structure_loss, multi_similarity_loss, triplet_margin_loss
from .proxies import proxy_anchor_loss, proxy_nca_loss
from .distillation import dino_loss, dino_loss_chunked, negative_cosine_loss, symmetric_negative_cosine_loss
from .redundancy import barlow_twins_loss, vicreg_graph_loss, vicreg_loss
from .softmax import infonce_loss, npair_loss, ntxent_loss
from .hypersphere import alignment_loss, hypersphere_loss, uniformity_loss
from .softmax import infonce_loss, npair_loss, ntxent_loss, supcon_loss

__all__ = [
    "pairwise_distances",
    "contrastive_loss",
    "triplet_margin_loss",
    "lifted_structure_loss",
    "npair_loss",
    "ntxent_loss",
    "infonce_loss",
    "supcon_loss",
    "alignment_loss",
    "uniformity_loss",
    "hypersphere_loss",
    "mine_batch_hard",
    "mine_batch_all",
    "mine_semi_hard",
    "mine_triplet_margin",
    "mine_pair_margin",
    "mine_multi_similarity",
    "distance_weighted_weights",
    "multi_similarity_loss",
    "circle_loss",
    "proxy_anchor_loss",
    "proxy_nca_loss",
    "negative_cosine_loss",
    "symmetric_negative_cosine_loss",
    "dino_loss",
    "dino_loss_chunked",
    "barlow_twins_loss",
    "vicreg_loss",
    "vicreg_graph_loss",
    "clip_loss",
    "siglip_loss",
    "losses",
    "normalized_softmax_loss",
    "cosface_loss",
    "arcface_loss",
    "subcenter_arcface_loss",
    "center_loss",
]

from .neighbor_embedding import neighbor_embedding_loss, neighbor_embedding_loss_chunked  # noqa: E402

__all__ += ["neighbor_embedding_loss", "neighbor_embedding_loss_chunked"]
