"""Metric-learning and contrastive losses, one module per family.

* :mod:`.pairs` — pair and triplet losses: contrastive, triplet margin, lifted structured, multi-similarity, circle;
* :mod:`.softmax` — softmax cross-entropy over dot products: N-pair, NT-Xent (SimCLR), InfoNCE (MoCo);
* :mod:`.multimodal` — image–text contrastive losses: CLIP, SigLIP;
* :mod:`.mining` — the miners (also ``reprkit.miners``); :mod:`.memory` — :class:`MemoryBank`.

Each family module holds its formulas (docstrings), its functions (also in
``reprkit.functional``), its ``torch.nn.Module`` classes (called like
pytorch-metric-learning, ``loss_fn(embeddings, labels)``) and its dispatch:
CPU tensors run Rust kernels for forward and backward, other devices the
pure-torch :mod:`reprkit.reference`. A new family is a new module here, its
reference in ``reprkit/reference/``, and its kernels in ``rust/src/losses/``.
"""

from .memory import MemoryBank
from .multimodal import CLIPLoss, SigLIPLoss
from .pairs import CircleLoss, ContrastiveLoss, LiftedStructureLoss, MultiSimilarityLoss, TripletMarginLoss
from .softmax import InfoNCELoss, NPairLoss, NTXentLoss

__all__ = [
    "ContrastiveLoss",
    "TripletMarginLoss",
    "LiftedStructureLoss",
    "MultiSimilarityLoss",
    "CircleLoss",
    "NPairLoss",
    "NTXentLoss",
    "InfoNCELoss",
    "MemoryBank",
    "CLIPLoss",
    "SigLIPLoss",
]
