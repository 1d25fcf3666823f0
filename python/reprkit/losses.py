"""``torch.nn.Module`` losses with the call style of pytorch-metric-learning:
``loss_fn(embeddings, labels)``. The formulas are in :mod:`reprkit.functional`.
CPU tensors run the Rust kernels, other devices the pure-torch reference.
"""

from __future__ import annotations

from typing import Any, Optional

from . import functional as Fn
from ._torch import require_torch
from ._validation import check_choice

torch = require_torch()

__all__ = ["ContrastiveLoss", "TripletMarginLoss", "LiftedStructureLoss", "NPairLoss", "NTXentLoss", "InfoNCELoss"]


class ContrastiveLoss(torch.nn.Module):
    """Same label → D², different → max(0, margin − D)²; mean over pairs i<j.

    ``forward(embeddings, labels, ref_embeddings=None, ref_labels=None)``.
    """

    def __init__(self, margin: float = 1.0, *, n_jobs: Optional[int] = None) -> None:
        super().__init__()
        self.margin, self.n_jobs = margin, n_jobs

    def forward(self, embeddings: Any, labels: Any, ref_embeddings: Any = None, ref_labels: Any = None) -> Any:
        return Fn.contrastive_loss(
            embeddings, labels, self.margin, ref_embeddings=ref_embeddings, ref_labels=ref_labels, n_jobs=self.n_jobs
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class TripletMarginLoss(torch.nn.Module):
    """max(0, d(a,p) − d(a,n) + margin) (softplus if ``soft``), d = D² if ``squared`` else D,
    over the triplets chosen by ``mining`` ("all", "batch_all", "batch_hard", "semi_hard").

    ``forward(embeddings, labels, ref_embeddings=None, ref_labels=None)``.
    """

    def __init__(
        self, margin: float = 0.2, mining: str = "all", squared: bool = True, soft: bool = False, *, n_jobs: Optional[int] = None
    ) -> None:
        super().__init__()
        check_choice("mining", mining, Fn.MININGS)
        self.margin, self.mining, self.squared, self.soft, self.n_jobs = margin, mining, squared, soft, n_jobs

    def forward(self, embeddings: Any, labels: Any, ref_embeddings: Any = None, ref_labels: Any = None) -> Any:
        return Fn.triplet_margin_loss(
            embeddings, labels, self.margin, self.mining, self.squared, self.soft,
            ref_embeddings=ref_embeddings, ref_labels=ref_labels, n_jobs=self.n_jobs,
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, squared={self.squared}, soft={self.soft}"


class LiftedStructureLoss(torch.nn.Module):
    """1/(2|P|) Σ_{(i,j)∈P} max(0, D_ij + log(Σ_{N(i)} e^{margin−D_ik} + Σ_{N(j)} e^{margin−D_jl}))²;
    ``hard=True`` uses maxima instead of log-sum-exps. ``forward(embeddings, labels)``."""

    def __init__(self, margin: float = 1.0, hard: bool = False, *, n_jobs: Optional[int] = None) -> None:
        super().__init__()
        self.margin, self.hard, self.n_jobs = margin, hard, n_jobs

    def forward(self, embeddings: Any, labels: Any) -> Any:
        return Fn.lifted_structure_loss(embeddings, labels, self.margin, self.hard, n_jobs=self.n_jobs)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, hard={self.hard}"


class NPairLoss(torch.nn.Module):
    """1/N Σ_i log(1 + Σ_{j≠i} exp(a_i·p_j − a_i·p_i)) + l2_reg·(mean‖a‖² + mean‖p‖²).
    ``forward(anchors, positives)``, row i of both being class i."""

    def __init__(self, l2_reg: float = 0.0, *, n_jobs: Optional[int] = None) -> None:
        super().__init__()
        self.l2_reg, self.n_jobs = l2_reg, n_jobs

    def forward(self, anchors: Any, positives: Any) -> Any:
        return Fn.npair_loss(anchors, positives, self.l2_reg, n_jobs=self.n_jobs)

    def extra_repr(self) -> str:
        return f"l2_reg={self.l2_reg}"


class NTXentLoss(torch.nn.Module):
    """SimCLR's NT-Xent over the 2N normalised views of ``forward(z1, z2)``, s = cos/τ."""

    def __init__(self, temperature: float = 0.1, *, n_jobs: Optional[int] = None) -> None:
        super().__init__()
        self.temperature, self.n_jobs = temperature, n_jobs

    def forward(self, z1: Any, z2: Any) -> Any:
        return Fn.ntxent_loss(z1, z2, self.temperature, n_jobs=self.n_jobs)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class InfoNCELoss(torch.nn.Module):
    """InfoNCE on normalised vectors, logits [q·k⁺, q·k⁻…]/τ.
    ``forward(query, positive_key, negative_keys=None)``: without ``negative_keys`` the
    other rows' positive keys are the negatives; else the (K, d) queue is shared."""

    def __init__(self, temperature: float = 0.1, *, n_jobs: Optional[int] = None) -> None:
        super().__init__()
        self.temperature, self.n_jobs = temperature, n_jobs

    def forward(self, query: Any, positive_key: Any, negative_keys: Any = None) -> Any:
        return Fn.infonce_loss(query, positive_key, negative_keys, self.temperature, n_jobs=self.n_jobs)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
