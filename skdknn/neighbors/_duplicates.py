"""Groups of identical rows, so that approximate engines index each distinct row once.

Activations hold many identical rows (a dead ReLU layer maps many inputs to the
all-zero vector). Graph and tree engines handle them badly: PyNNDescent's graph
links each copy only to other copies, and a walk that enters such a clique
cannot leave it (a query then gets k copies of one far point); Annoy cannot split
identical points. Indexing each distinct row once and expanding every answer to
all the copies of each row gives the same neighbours as exact search would among
the copies, at the same distances.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["duplicate_groups", "expand_groups", "group_of_rows"]

#: Bytes of the temporary arrays of one chunk of rows.
_CHUNK_BYTES = 64 * 2**20


def _row_hashes(X: NDArray[np.float32]) -> NDArray[np.uint64]:
    """A 64-bit hash of each row's bits (integer arithmetic: equal rows, equal
    hashes; ``-0.0`` counts as ``0.0``)."""
    n, d = X.shape
    coefficients = np.random.default_rng(0).integers(
        1, 2**63, size=d, dtype=np.uint64, endpoint=False
    ) | np.uint64(1)
    hashes = np.empty(n, dtype=np.uint64)
    step = max(1, _CHUNK_BYTES // (8 * max(1, d)))
    for start in range(0, n, step):
        bits = (X[start : start + step] + np.float32(0)).view(np.uint32)
        products = bits.astype(np.uint64) * coefficients  # wraps modulo 2**64
        hashes[start : start + step] = products.sum(axis=1, dtype=np.uint64)
    return hashes


def _rows_equal(
    X: NDArray[np.float32], a: NDArray[np.intp], b: NDArray[np.intp]
) -> NDArray[np.bool_]:
    """Whether rows ``a[i]`` and ``b[i]`` are equal, for each i (in chunks)."""
    out = np.empty(a.size, dtype=bool)
    step = max(1, _CHUNK_BYTES // (8 * max(1, X.shape[1])))
    for start in range(0, a.size, step):
        part = slice(start, start + step)
        out[part] = (X[a[part]] == X[b[part]]).all(axis=1)
    return out


def duplicate_groups(
    X: NDArray[np.float32],
) -> tuple[NDArray[np.intp], NDArray[np.intp]] | None:
    """Groups of identical rows of X, or None when every row is distinct.

    Returns ``(members, starts)``: the row ids sorted by group, then by id, and
    the offset of each group in ``members`` (``starts[-1] == n``). Groups are
    numbered in the order of their first row, so group ``g``'s first member is the
    ``g``-th distinct row of X. Rows are compared bit for bit (``0.0 == -0.0``):
    found by a hash of their bits, every candidate confirmed by comparison.
    """
    n = X.shape[0]
    if n < 2:
        return None
    hashes = _row_hashes(X)
    order = np.argsort(hashes, kind="stable")
    new = np.ones(n, dtype=bool)
    new[1:] = hashes[order[1:]] != hashes[order[:-1]]
    if new.all():  # distinct hashes: distinct rows
        return None
    label = np.empty(n, dtype=np.intp)
    label[order] = np.cumsum(new) - 1
    first = order[new][label]  # the smallest id of each row's hash group
    candidates = np.flatnonzero(first != np.arange(n))
    if not _rows_equal(X, candidates, first[candidates]).all():
        # two distinct rows share a hash (about 1 in 2**64 pairs): group exactly
        _, label = np.unique(X + np.float32(0), axis=0, return_inverse=True)
        label = label.ravel()
    _, first_row, label = np.unique(label, return_index=True, return_inverse=True)
    n_groups = first_row.size
    if n_groups == n:
        return None
    rank = np.empty(n_groups, dtype=np.intp)
    rank[np.argsort(first_row, kind="stable")] = np.arange(n_groups)
    group = rank[label.ravel()]
    members = np.argsort(group, kind="stable").astype(np.intp)
    starts = np.zeros(n_groups + 1, dtype=np.intp)
    np.cumsum(np.bincount(group, minlength=n_groups), out=starts[1:])
    return members, starts


def group_of_rows(members: NDArray[np.intp], starts: NDArray[np.intp]) -> NDArray:
    """The group of each row id (the inverse of ``duplicate_groups``)."""
    group = np.empty(members.size, dtype=np.intp)
    group[members] = np.repeat(np.arange(starts.size - 1), np.diff(starts))
    return group


def expand_groups(
    dist: NDArray[np.float32],
    ind: NDArray[np.intp],
    members: NDArray[np.intp],
    starts: NDArray[np.intp],
    k: int,
) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
    """The first k row ids of each answer when each group is listed in full.

    ``ind`` holds distinct groups per row, nearest first, with at least k members
    in all (k groups, or every group). Each group's members share its distance and
    come in id order.
    """
    n_queries, width = ind.shape
    sizes = np.diff(starts)[ind]
    ends = np.cumsum(sizes, axis=1)  # members listed up to each column, per row
    # the column holding position j of row r: searchsorted on the rows' ends,
    # offset so that all rows form one sorted array
    span = members.size + 1
    offsets = np.arange(n_queries)[:, None] * span
    positions = np.arange(k)[None, :]
    column = np.searchsorted(
        (ends + offsets).ravel(), (positions + offsets).ravel(), side="right"
    ).reshape(n_queries, k) - (np.arange(n_queries)[:, None] * width)
    rows = np.arange(n_queries)[:, None]
    within = positions - (ends - sizes)[rows, column]
    out_ind = members[starts[ind[rows, column]] + within]
    return dist[rows, column], out_ind.astype(np.intp, copy=False)
