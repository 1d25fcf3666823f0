"""Small data sets shipped with reprkit (see README.md in this folder for credits)."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np

_HERE = Path(__file__).resolve().parent


def load_digits() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits: (1797, 64) float32 pixel values 0–16 and (1797,) int labels."""
    with np.load(_HERE / "digits.npz") as f:
        return f["data"].astype(np.float32), f["target"].astype(np.int64)
