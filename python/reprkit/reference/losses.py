"""Every pure-torch loss and miner in one namespace (the families are :mod:`.pairs`, :mod:`.softmax`, :mod:`.mining`)."""

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
from .softmax import infonce_loss, npair_loss, ntxent_loss  # noqa: F401
