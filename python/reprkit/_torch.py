"""Optional torch support: detection without importing torch, and a clear error when it is missing."""

from __future__ import annotations

import sys
from typing import Any

from .errors import MissingDependencyError


def require_torch() -> Any:
    """Import torch or raise an ImportError that names the extra to install."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised in an environment without torch
        raise MissingDependencyError(
            "this reprkit feature needs PyTorch; install it with `pip install reprkit[torch]` "
            "(or `pip install torch`)"
        ) from e
    return torch


def is_tensor(x: Any) -> bool:
    """True when ``x`` is a torch.Tensor (never imports torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)
