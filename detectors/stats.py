"""Mergeable statistics: the building blocks of every detector's accumulator.

Everything here is associative and commutative up to floating-point rounding, so Beam
may combine partial results in any tree. Nothing here imports Beam.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

#: Rows per chunk when a batch is folded into a :class:`MeanCov`; bounds the centred
#: float64 working copy to ``_CHUNK_ROWS * d * 8`` bytes.
_CHUNK_ROWS = 8192


@dataclass
class MeanCov:
    """Count, mean and centred scatter matrix of a set of vectors.

    Updated and merged with the pairwise formulas of Chan, Golub and LeVeque (1979),
    which stay accurate where raw sums of squares cancel catastrophically (data far from
    the origin).

    Attributes
    ----------
    n : int
        Number of vectors.
    mean : ndarray of shape (d,)
        Their mean (float64).
    m2 : ndarray of shape (d, d)
        Sum of outer products of the centred vectors, ``sum((x - mean)(x - mean)^T)``.
    """

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> "MeanCov":
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    @classmethod
    def from_batch(cls, X: np.ndarray) -> "MeanCov":
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D array of vectors, got shape {X.shape}")
        out = cls.empty(X.shape[1])
        for start in range(0, X.shape[0], _CHUNK_ROWS):
            chunk = X[start : start + _CHUNK_ROWS]
            mean = chunk.mean(axis=0, dtype=np.float64)
            # float64 products, straight from the stored values: another row order
            # changes the sums in their last bits only (~1e-16), which :meth:`rounded`
            # removes. (Float32 products were twice as fast and differed by ~3e-7 of the
            # largest entry with the rows reversed: another fitted model.)
            centred = np.subtract(chunk, mean, dtype=np.float64)
            out = out.merge(cls(chunk.shape[0], mean, centred.T @ centred))
        return out

    def merge(self, other: "MeanCov") -> "MeanCov":
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        if self.mean.shape != other.mean.shape:
            raise ValueError(
                f"cannot merge statistics of {self.mean.shape[0]}-d and "
                f"{other.mean.shape[0]}-d vectors"
            )
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.n * other.n / n)
        return MeanCov(n, mean, m2)

    def covariance(self) -> np.ndarray:
        """Sample covariance (``ddof=1``); zeros for fewer than two vectors."""
        if self.n < 2:
            return np.zeros_like(self.m2)
        return self.m2 / (self.n - 1)

    def rounded(self) -> "MeanCov":
        """The same statistics with the scatter matrix rounded to float32 precision.

        Merging in a different order changes the last bits of a float64 result; rounding
        the scatter matrix to 24 significant bits makes the eigenvectors fitted from it
        identical whatever order Beam merged partial results in. The mean keeps full
        precision: far from the origin, rounding it would move every projection.
        """
        return MeanCov(self.n, self.mean, self.m2.astype(np.float32).astype(np.float64))


@dataclass
class ClassSample:
    """A bounded, uniformly drawn sample of one class's rows.

    Attributes
    ----------
    X : ndarray of shape (k, d), float32
        The sampled vectors.
    positions : ndarray of shape (k,), int64
        Each row's position in the input (deterministic, unique).
    ids : ndarray of shape (k,)
        Each row's id.
    rows : int or None
        Rows of the class in the whole input (None: unknown, taken as the sample's).
    """

    X: np.ndarray
    positions: np.ndarray
    ids: np.ndarray
    rows: int | None = None

    @property
    def weight(self) -> float:
        """Input rows each sampled row stands for."""
        return (self.rows or len(self)) / max(len(self), 1)

    def __len__(self) -> int:
        return int(self.positions.shape[0])


@dataclass
class Reservoir:
    """Bottom-k sample by a per-row random priority (a mergeable reservoir).

    Each row carries a priority drawn from a hash of its id and the scan's seed; the
    sample keeps the ``capacity`` rows of lowest priority (ties broken by position). The
    result is a uniform sample that does not depend on the order rows arrive in or on how
    they were split between workers.
    """

    capacity: int
    priority: np.ndarray
    positions: np.ndarray
    X: np.ndarray
    ids: np.ndarray

    @classmethod
    def from_batch(
        cls,
        capacity: int,
        priority: np.ndarray,
        positions: np.ndarray,
        X: np.ndarray,
        ids: np.ndarray,
    ) -> "Reservoir":
        keep = _bottom_k(priority, positions, capacity)
        # vectors are kept as float32; raw inputs (object arrays) as they are
        X = X[keep] if X.dtype == object else np.ascontiguousarray(X[keep], dtype=np.float32)
        return cls(capacity, priority[keep], positions[keep], X, ids[keep])

    def merge(self, other: "Reservoir") -> "Reservoir":
        if len(other.positions) == 0:
            return self
        if len(self.positions) == 0:
            return other
        priority = np.concatenate([self.priority, other.priority])
        positions = np.concatenate([self.positions, other.positions])
        keep = _bottom_k(priority, positions, self.capacity)
        n = len(self.positions)
        incoming = keep[keep >= n] - n
        if incoming.size == 0:
            return self  # nothing of ``other`` makes the cut (self never exceeds capacity)
        # the kept rows of ``self`` stay where they are; ``other``'s take the places of
        # the dropped ones, then extend. The rows' order thus depends on the order of the
        # merges: read them through sample() (id order) or head() (priority order)
        slots = np.ones(n, dtype=bool)
        slots[keep[keep < n]] = False
        slots = np.concatenate([np.flatnonzero(slots), np.arange(n, len(keep))])  # one per incoming row
        size = len(keep)
        return Reservoir(
            self.capacity,
            _place(self.priority, other.priority, incoming, slots, size),
            _place(self.positions, other.positions, incoming, slots, size),
            _place(self.X, other.X, incoming, slots, size),
            _place(self.ids, other.ids, incoming, slots, size),
        )

    def ordered(self) -> "Reservoir":
        """The same sample with its rows in (priority, position) order: what a saved state
        stores, so that its bytes do not depend on the order the partials were merged in."""
        return replace(self.head(len(self.positions)), capacity=self.capacity)

    def head(self, k: int) -> "Reservoir":
        """The ``k`` rows of lowest priority: itself a uniform sample."""
        keep = _bottom_k(self.priority, self.positions, k)
        return Reservoir(k, self.priority[keep], self.positions[keep], self.X[keep], self.ids[keep])

    def sample(self) -> ClassSample:
        """The sample in id order, so every fit on it (folds, k-means starts, sums) sees
        the rows in the same order whatever order they were read in, from however many
        files and workers. (For a file stored in id order, that is its own order.)"""
        order = id_order(self.ids, self.positions)
        return ClassSample(self.X[order], self.positions[order], self.ids[order])


def id_order(ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Indices sorting rows by id (then position: rows sharing an id keep read order).
    Ids of one scan are all integers or all strings."""
    ids = np.asarray(ids)
    if ids.dtype != object:
        return np.lexsort((positions, ids))
    return np.array(sorted(range(len(ids)), key=lambda i: (ids[i], positions[i])), dtype=np.int64)


class SampleBound:
    """The ``capacity`` smallest (priority, position) pairs of the rows offered so far.

    A row outside them can never be in a :class:`Reservoir` of that capacity merged from
    the rows offered: ``capacity`` rows rank before it. A reader that offers every batch's
    rows here first copies into its reservoirs only the rows that can still be kept (after
    the first few batches, a small share), and the merged sample is the same.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.priority = np.empty(0, np.uint64)
        self.positions = np.empty(0, np.int64)

    def admit(self, priority: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Indices (ascending) of the offered rows now among the smallest; the bound
        takes them in."""
        kept = len(self.positions)
        candidates = np.arange(len(positions))
        if kept >= self.capacity:  # the kept pairs are in order: the last is the largest
            top_p, top_q = self.priority[-1], self.positions[-1]
            candidates = np.flatnonzero((priority < top_p) | ((priority == top_p) & (positions < top_q)))
            if candidates.size == 0:
                return candidates
        p = np.concatenate([self.priority, priority[candidates]])
        q = np.concatenate([self.positions, positions[candidates]])
        keep = _bottom_k(p, q, self.capacity)
        self.priority, self.positions = p[keep], q[keep]
        return np.sort(candidates[keep[keep >= kept] - kept])


def _place(a: np.ndarray, b: np.ndarray, incoming: np.ndarray, slots: np.ndarray, size: int) -> np.ndarray:
    """A copy of ``a`` sized ``size`` rows with ``b[incoming]`` written into ``slots``."""
    out = np.empty((size,) + a.shape[1:], dtype=np.result_type(a.dtype, b.dtype))
    common = min(size, len(a))
    out[:common] = a[:common]
    out[slots] = b[incoming]
    return out


def _bottom_k(priority: np.ndarray, positions: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest (priority, position) pairs, in that order."""
    return np.lexsort((positions, priority))[:k]
