"""Pure-torch softmax-type losses: the any-device (CUDA) path and the test oracle.

Written for clarity: they build the full distance or similarity matrix and let
autograd differentiate it. They follow exactly the formulas and conventions of
the Rust kernels (see :mod:`reprkit.losses` for the documented formulas).
Inputs are assumed validated: float tensors, int64 labels on the same device.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from .._torch import require_torch

torch = require_torch()
F = torch.nn.functional


def npair_loss(anchors: Any, positives: Any, l2_reg: float = 0.0) -> Any:
    """1/N Σ_i log(1 + Σ_{j≠i} exp(a_i·p_j − a_i·p_i)) + l2_reg·(mean‖a_i‖² + mean‖p_i‖²)."""
    s = anchors @ positives.T
    loss = F.cross_entropy(s, torch.arange(s.shape[0], device=s.device))
    if l2_reg:
        loss = loss + l2_reg * ((anchors**2).sum(1).mean() + (positives**2).sum(1).mean())
    return loss


def ntxent_loss(z1: Any, z2: Any, temperature: float = 0.1) -> Any:
    """SimCLR: −log softmax of each view's partner over the other 2N−1 views, s = cos/τ; mean over 2N."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    s = (z @ z.T) / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    s = s.masked_fill(eye, float("-inf"))
    idx = torch.arange(n, device=z.device)
    return F.cross_entropy(s, torch.cat([idx + n, idx]))


def infonce_loss(query: Any, positive_key: Any, negative_keys: Optional[Any] = None, temperature: float = 0.1) -> Any:
    """−log softmax of q·k⁺ against the negatives (other rows' keys, or the queue), unit vectors, /τ."""
    q = F.normalize(query, dim=1)
    k = F.normalize(positive_key, dim=1)
    if negative_keys is None:
        logits = q @ k.T
        target = torch.arange(q.shape[0], device=q.device)
    else:
        nk = F.normalize(negative_keys, dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ nk.T], 1)
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits / temperature, target)

