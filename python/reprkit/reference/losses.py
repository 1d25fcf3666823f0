"""Every pure-torch loss and miner in one namespace (the families are :mod:`.pairs`, :mod:`.softmax`, :mod:`.proxies`, :mod:`.mining`)."""

from .margin import (  # noqa: F401
    arcface_loss,
    center_loss,
    cosface_loss,
    normalized_softmax_loss,
    subcenter_arcface_loss,
)
from .mining import (  # noqa: F401
    distance_weighted_weights,
    mine_batch_all,
    mine_batch_hard,
    mine_multi_similarity,
    mine_pair_margin,
    mine_semi_hard,
    mine_triplet_margin,
)
from .multimodal import clip_loss, siglip_loss  # noqa: F401
from .pairs import (  # noqa: F401
    circle_loss,
    contrastive_loss,
    lifted_structure_loss,
    multi_similarity_loss,
    triplet_margin_loss,
)
from .proxies import proxy_anchor_loss, proxy_nca_loss  # noqa: F401
from .distillation import dino_loss, dino_loss_chunked, negative_cosine_loss, symmetric_negative_cosine_loss  # noqa: F401
from .redundancy import barlow_twins_loss, vicreg_graph_loss, vicreg_loss  # noqa: F401
from .softmax import infonce_loss, npair_loss, ntxent_loss  # noqa: F401
from .hypersphere import alignment_loss, hypersphere_loss, uniformity_loss  # noqa: F401
from .softmax import infonce_loss, npair_loss, ntxent_loss, supcon_loss  # noqa: F401
from .neighbor_embedding import neighbor_embedding_loss, neighbor_embedding_loss_chunked  # noqa: F401
