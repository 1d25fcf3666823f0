"""Metric-learning and contrastive losses, one module per family.

* :mod:`.pairs` — pair and triplet losses: contrastive, triplet margin, lifted structured, multi-similarity, circle;
* :mod:`.softmax` — softmax cross-entropy over dot products: N-pair, NT-Xent (SimCLR), InfoNCE (MoCo);
* :mod:`.margin` — margin-softmax with class weights: normalised softmax, CosFace, ArcFace, sub-center ArcFace, center loss;
* :mod:`.proxies` — learnable class proxies: Proxy-Anchor, Proxy-NCA;
* :mod:`.distillation` — SimSiam/BYOL negative cosine, DINO, :func:`ema_update` for EMA teachers;
* :mod:`.softmax` — softmax cross-entropy over dot products: N-pair, NT-Xent (SimCLR), InfoNCE (MoCo), SupCon;
* :mod:`.hypersphere` — alignment and uniformity (Wang & Isola 2020);
* :mod:`.multimodal` — image–text contrastive losses: CLIP, SigLIP;
* :mod:`.mining` — the miners (also ``reprkit.miners``); :mod:`.memory` — :class:`MemoryBank`.

Each family module holds its formulas (docstrings), its functions (also in
``reprkit.functional``), its ``torch.nn.Module`` classes (called like
pytorch-metric-learning, ``loss_fn(embeddings, labels)``) and its dispatch:
CPU tensors run Rust kernels for forward and backward, other devices the
pure-torch :mod:`reprkit.reference`. A new family is a new module here, its
reference in ``reprkit/reference/``, and its kernels in ``rust/src/losses/``.
"""

from .margin import ArcFaceLoss, CenterLoss, CosFaceLoss, NormalizedSoftmaxLoss, SubCenterArcFaceLoss, adaptive_margins
from .distillation import DINOLoss, NegativeCosineLoss, ema_update
from .memory import MemoryBank
from .multimodal import CLIPLoss, SigLIPLoss
from .pairs import CircleLoss, ContrastiveLoss, LiftedStructureLoss, MultiSimilarityLoss, TripletMarginLoss
from .proxies import ProxyAnchorLoss, ProxyNCALoss
from .redundancy import BarlowTwinsLoss, VICRegGraphLoss, VICRegLoss
from .softmax import InfoNCELoss, NPairLoss, NTXentLoss
from .hypersphere import HypersphereLoss
from .memory import MemoryBank
from .pairs import CircleLoss, ContrastiveLoss, LiftedStructureLoss, MultiSimilarityLoss, TripletMarginLoss
from .softmax import InfoNCELoss, NPairLoss, NTXentLoss, SupConLoss

__all__ = [
    "ContrastiveLoss",
    "TripletMarginLoss",
    "LiftedStructureLoss",
    "MultiSimilarityLoss",
    "CircleLoss",
    "NPairLoss",
    "NTXentLoss",
    "InfoNCELoss",
    "SupConLoss",
    "HypersphereLoss",
    "MemoryBank",
    "NormalizedSoftmaxLoss",
    "CosFaceLoss",
    "ArcFaceLoss",
    "SubCenterArcFaceLoss",
    "CenterLoss",
    "adaptive_margins",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "NegativeCosineLoss",
    "DINOLoss",
    "ema_update",
    "BarlowTwinsLoss",
    "VICRegLoss",
    "VICRegGraphLoss",
    "CLIPLoss",
    "SigLIPLoss",
]

from .neighbor_embedding import TSNELoss  # noqa: E402

__all__ += ["TSNELoss"]
