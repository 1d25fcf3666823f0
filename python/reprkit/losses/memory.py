"""A FIFO memory of past embeddings (cross-batch memory, MoCo's queue)."""

from __future__ import annotations

from typing import Any, Optional, Tuple

from .._torch import require_torch
from ..errors import InvalidParameterError, ShapeError
from . import _inputs as V

torch = require_torch()


class MemoryBank:
    """FIFO queue of the last ``size`` embeddings (and labels), stored detached.

    ``add(embeddings, labels=None)`` appends a batch and drops the oldest rows
    beyond ``size``; ``embeddings`` / ``labels`` return the stored rows oldest
    first. Use them as ``ref_embeddings, ref_labels`` of the contrastive and
    triplet losses and the miners, or as ``negative_keys`` of InfoNCE::

        bank = MemoryBank(4096, 128)
        loss = loss_fn(emb, y, bank.embeddings, bank.labels) if len(bank) else loss_fn(emb, y)
        bank.add(emb, y)    # after the loss: references are not de-duplicated against the batch

    ``gather_distributed=True``: :meth:`add` enqueues the global batch (every rank's rows in
    rank order, :func:`reprkit.distributed.all_gather`, detached), so every rank holds the
    same memory; without an initialised process group it enqueues the local batch.
    """

    def __init__(self, size: int, dim: int, *, dtype: Any = None, device: Any = None, gather_distributed: bool = False) -> None:
        for name, v in (("size", size), ("dim", dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidParameterError(f"{name} must be a positive integer, got {v!r}")
        self.size, self.dim = size, dim
        self.gather_distributed = V.check_bool("gather_distributed", gather_distributed)
        self._x = torch.zeros((size, dim), dtype=dtype or torch.float32, device=device)
        self._y = torch.zeros(size, dtype=torch.long, device=device)
        self._has_labels: Optional[bool] = None
        self._head = 0  # next row to write
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def reset(self) -> None:
        """Empties the memory."""
        self._head = self._count = 0
        self._has_labels = None

    def add(self, embeddings: Any, labels: Any = None) -> None:
        """Enqueues a detached copy of ``embeddings`` (B, dim) and its labels."""
        x = V.check_embeddings(embeddings, "embeddings")
        if x.shape[1] != self.dim:
            raise ShapeError(f"embeddings have {x.shape[1]} features, the memory holds {self.dim}")
        has = labels is not None
        if self._has_labels is not None and has != self._has_labels and self._count:
            raise InvalidParameterError("add labels with every batch or with none")
        self._has_labels = has
        y = V.check_labels(labels, x.shape[0], self._x.device) if has else None
        if self.gather_distributed:
            from ..distributed import gather_inputs

            x, y = gather_inputs(x.detach(), y)
        x = x.detach().to(device=self._x.device, dtype=self._x.dtype)
        if x.shape[0] > self.size:  # only the newest rows survive
            x = x[-self.size :]
            y = None if y is None else y[-self.size :]
        b = x.shape[0]
        idx = (self._head + torch.arange(b, device=self._x.device)) % self.size
        self._x[idx] = x
        if y is not None:
            self._y[idx] = y
        self._head = (self._head + b) % self.size
        self._count = min(self.size, self._count + b)

    def _order(self) -> Any:
        start = (self._head - self._count) % self.size
        return (start + torch.arange(self._count, device=self._x.device)) % self.size

    @property
    def embeddings(self) -> Any:
        """Stored embeddings (len, dim), oldest first."""
        return self._x[self._order()]

    @property
    def labels(self) -> Optional[Any]:
        """Stored labels (len,), oldest first; None if batches were added without labels."""
        return self._y[self._order()] if self._has_labels else None

    def get(self) -> Tuple[Any, Optional[Any]]:
        """``(embeddings, labels)``."""
        return self.embeddings, self.labels

    def __repr__(self) -> str:
        return f"MemoryBank(size={self.size}, dim={self.dim}, len={self._count})"
