"""Every pure-torch loss and miner in one namespace (the families are :mod:`.pairs`, :mod:`.softmax`, :mod:`.mining`)."""

from .mining import mine_batch_all, mine_batch_hard, mine_semi_hard  # noqa: F401
from .pairs import contrastive_loss, lifted_structure_loss, triplet_margin_loss  # noqa: F401
from .softmax import infonce_loss, npair_loss, ntxent_loss  # noqa: F401
