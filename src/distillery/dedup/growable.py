"""An append-only numpy array that grows by doubling (amortised O(1) appends)."""

from __future__ import annotations

import numpy as np


class Growable:
    """Rows of a fixed shape and dtype, appended in blocks.

    Args:
        dtype: element type.
        row_shape: shape of one row (``()`` for a flat array, ``(k,)`` for ``k`` columns).
        capacity: initial number of rows allocated.
    """

    def __init__(self, dtype: np.dtype | type, row_shape: tuple[int, ...] = (), capacity: int = 1024) -> None:
        self._data = np.empty((max(capacity, 1), *row_shape), dtype=dtype)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def array(self) -> np.ndarray:
        """A view of the rows appended so far, shape ``(len(self), *row_shape)``; invalidated by appends."""
        return self._data[: self._size]

    @property
    def nbytes(self) -> int:
        """Bytes allocated (capacity, not just the rows in use)."""
        return int(self._data.nbytes)

    def extend(self, rows: np.ndarray) -> None:
        """Append ``rows`` (shape ``(m, *row_shape)``), converting to this dtype."""
        need = self._size + len(rows)
        if need > len(self._data):
            bigger = np.empty((max(need, 2 * len(self._data)), *self._data.shape[1:]), dtype=self._data.dtype)
            bigger[: self._size] = self._data[: self._size]
            self._data = bigger
        self._data[self._size : need] = rows
        self._size = need
