"""Torch modules of ParametricTSNE's default encoder (a module of their own so that a fitted
encoder pickles by reference while reprkit.manifold imports without torch)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class Standardize(torch.nn.Module):
    """x ↦ (x − mean) / scale with fixed buffers. One scalar scale (not per feature) keeps the
    features' relative scales, which the input distances — hence P — depend on."""

    def __init__(self, mean: np.ndarray, scale: float, dtype: Any = None) -> None:
        super().__init__()
        dt = dtype or torch.float32
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean), dtype=dt))
        self.register_buffer("inv_scale", torch.tensor(1.0 / float(scale), dtype=dt))

    def forward(self, x: Any) -> Any:
        return (x - self.mean) * self.inv_scale
