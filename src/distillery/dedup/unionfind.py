"""Disjoint sets (union-find) whose representative is the smallest member.

Tarjan, "Efficiency of a good but not linear set union algorithm", JACM 1975: union plus
path halving. Keeping the smallest index as the root makes the result independent of the
order of unions: a cluster is always named after its first document in input order.
"""

from __future__ import annotations

import numpy as np


class UnionFind:
    """Disjoint sets over ``0 .. n - 1``.

    Args:
        n: number of elements.
    """

    def __init__(self, n: int) -> None:
        self._parent = list(range(n))

    def find(self, x: int) -> int:
        """The smallest member of ``x``'s set."""
        parent = self._parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> int:
        """Merge the sets of ``a`` and ``b``; returns the new root (the smaller of the two roots)."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if rb < ra:
            ra, rb = rb, ra
        self._parent[rb] = ra
        return ra

    def labels(self) -> np.ndarray:
        """``int64`` array ``(n,)``: each element's root (its set's smallest member)."""
        parent = np.asarray(self._parent, dtype=np.int64)
        while True:  # pointer jumping: the depth halves every pass
            grand = parent[parent]
            if np.array_equal(grand, parent):
                return parent
            parent = grand
