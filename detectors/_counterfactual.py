"""Would these rows belong to another class without the token? The check that tells a
trigger from a word (or value) that genuinely decides the label.

A trigger is stamped on rows taken from other classes and relabelled: with the trigger
removed, the rest of each row still looks like the class it came from. A word that
decides the label (a user's handle, a source's hashtag, a speaker's name) marks rows that
were always of that label: the rest of each row looks like the label's other rows. So,
per candidate token of label L, the rows of L holding it are predicted from their other
tokens, and the share predicted as another class is compared with the share among L's
other rows.

Three pieces, all Beam-free and deterministic:

* :class:`TokenSample`: a bounded, mergeable sample of one class's rows (their hashed
  tokens), the ``capacity`` rows of lowest content hash. It does not depend on batch
  order or on how rows were split between workers.
* :func:`other_class_predictions`: a multinomial naive Bayes model over the sampled rows'
  tokens (presence, Laplace smoothing, equal class priors), each class's rows read
  without that class's candidate tokens. L's other rows are predicted leave-one-out
  (each by a model fitted on all the other sampled rows), a candidate's rows by a model
  fitted without all of them (:meth:`Predictions.group_out`), so the rest of a trigger
  phrase cannot vouch for L; under "these rows are ordinary rows of L" the two shares
  predicted as another class differ by chance only.
* :func:`fisher_greater`, :func:`candidate_p` and :func:`tarone_count`: a one-sided
  Fisher exact test of the 2x2 table (candidate's rows / L's other rows x predicted
  another class / predicted L), its random-effects form when other candidates' groups
  give a yardstick, and Tarone's (1990) count of the candidates that could reach
  significance at all, the Bonferroni factor for discrete tests.

References
----------
Tarone, R. E. (1990). A modified Bonferroni method for discrete data. *Biometrics* 46(2).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

_EMPTY = np.empty(0, dtype=np.int64)
_EMPTY_BUCKETS = np.empty(0, dtype=np.uint32)


def row_priority(buckets: np.ndarray) -> int:
    """A 64-bit hash of a row's sorted unique token buckets (the sample's order)."""
    data = np.ascontiguousarray(buckets, dtype=np.int64).tobytes()
    return (zlib.crc32(data) << 32) | zlib.adler32(data)


@dataclass
class TokenSample:
    """The ``capacity`` rows of lowest content hash among one class's rows.

    Rows are stored as sorted unique token buckets, concatenated (``flat``) with their
    boundaries (``offsets``). Identical rows hash alike, so a uniform sample of distinct
    contents; the result is the same whatever the order and grouping of the input.
    """

    capacity: int
    priority: np.ndarray  # (k,) uint64, ascending
    offsets: np.ndarray  # (k + 1,) int64
    flat: np.ndarray  # uint32 (token buckets are CRC-32 values)

    @classmethod
    def of(cls, capacity: int, rows: Sequence[np.ndarray], keys: Sequence[np.ndarray] | None = None) -> "TokenSample":
        """The sample of ``rows``, ordered by the hash of each row's ``keys`` (default:
        the row itself; a subset of its tokens that decides which rows are drawn)."""
        prio = np.array([row_priority(r) for r in (rows if keys is None else keys)], dtype=np.uint64)
        return cls._build(capacity, prio, list(rows))

    @classmethod
    def _build(cls, capacity: int, prio: np.ndarray, rows: list) -> "TokenSample":
        keep = np.argsort(prio, kind="stable")[:capacity]
        kept = [rows[i] for i in keep]
        sizes = np.array([len(r) for r in kept], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        flat = np.concatenate(kept) if kept else _EMPTY_BUCKETS
        if flat.size and (flat.min() < 0 or flat.max() > np.iinfo(np.uint32).max):
            raise ValueError("token buckets are CRC-32 values: 0 to 2**32 - 1")
        # uint32, not int64: the samples travel between the scan's stages and dominated the
        # peak memory of a 50,000-image scan (4,096 rows a class, ~400 pixel tokens a row)
        return cls(capacity, prio[keep], offsets, flat.astype(np.uint32))

    def rows(self) -> list[np.ndarray]:
        return [self.flat[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def merge(self, other: "TokenSample") -> "TokenSample":
        capacity = max(self.capacity, other.capacity)
        prio = np.concatenate([self.priority, other.priority])
        return TokenSample._build(capacity, prio, self.rows() + other.rows())

    def __len__(self) -> int:
        return int(self.priority.shape[0])


@dataclass
class Predictions:
    """A naive Bayes model of every class's sampled rows, and its leave-one-out
    predictions of them (see :func:`other_class_predictions`)."""

    labels: list  # class of each block below, in order
    rows: list[list[np.ndarray]]  # per class: each sampled row's token buckets
    other: list[np.ndarray]  # per class: bool, predicted as another class (leave-one-out)
    usable: list[np.ndarray]  # per class: bool, the row kept a token to predict from
    starts: np.ndarray  # first global row of each class
    X: Any = None  # (rows, features) presence, every token
    y: np.ndarray | None = None
    counts: np.ndarray | None = None  # (classes, features)
    keep: list[np.ndarray] | None = None  # per class: bool over features, its rows' tokens read
    smoothing: float = 1.0
    #: per class: every class's count total over the features that class's rows are read by
    totals: list[np.ndarray] | None = None

    def group_out(self, rows: np.ndarray, code: int) -> np.ndarray:
        """Predicted as another class, for global ``rows``, by a model fitted on every
        sampled row but these (the candidate's rows out of the fit), reading the tokens
        that class ``code``'s rows are read by."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.zeros(0, bool)
        keep = self.keep[code]
        Xg, yg = self.X[rows], self.y[rows]
        cols = np.flatnonzero(np.bincount(Xg.indices, minlength=Xg.shape[1]))  # sorted, each once
        cols = cols[keep[cols]]  # only the group's own tokens enter its scores, as read
        V = max(int(keep.sum()), 1)
        Xg = Xg[:, cols]
        counts = self.counts[:, cols].copy()
        totals = self.totals[code].copy()
        for c in np.unique(yg):
            part = np.asarray(Xg[yg == c].sum(axis=0)).ravel()
            counts[c] -= part
            totals[c] -= part.sum()
        denom = np.log(totals + self.smoothing * V)
        sizes = np.asarray(Xg.sum(axis=1)).ravel()
        S = np.asarray(Xg @ np.log(counts + self.smoothing).T) - sizes[:, None] * denom[None, :]
        own = S[np.arange(len(rows)), yg].copy()
        S[np.arange(len(rows)), yg] = -np.inf
        return S.max(axis=1) > own if S.shape[1] > 1 else np.zeros(len(rows), bool)


def other_class_predictions(
    samples: Mapping[Any, TokenSample], leave_out: Mapping[Any, np.ndarray], smoothing: float = 1.0
) -> Predictions:
    """Predict every sampled row's class from its tokens, its own class's ``leave_out``
    tokens (that class's candidates) excepted.

    Multinomial naive Bayes over token presence, Laplace ``smoothing``, equal priors (the
    larger class is not favoured), leave-one-out: each row's own tokens are taken out of
    its class's counts before it is predicted. A row is "predicted as another class" when
    some other class scores strictly higher than its own. The rows of class L are read
    without L's candidates, all of them: a candidate's rows and L's other rows lose the
    same tokens, so under "these are ordinary rows of L" the two compare fairly. The
    tokens that decide *other* labels stay: a row taken from another class keeps what
    marks its origin (its author's handle, its source's tag). Rows with no token left are
    marked unusable.
    """
    # SciPy / scikit-learn: imported on first use, by the detectors that run
    from scipy import sparse

    labels = list(samples)
    per_class = [samples[label].rows() for label in labels]
    all_rows = [r for rows in per_class for r in rows]
    y = np.repeat(np.arange(len(labels)), [len(rows) for rows in per_class])
    sizes_all = np.array([len(r) for r in all_rows], dtype=np.int64)
    flat = np.concatenate(all_rows) if all_rows else _EMPTY
    vocab, cols = np.unique(flat, return_inverse=True)
    cols = cols.reshape(-1)
    n, C = len(all_rows), len(labels)
    indptr = np.concatenate([[0], np.cumsum(sizes_all)])
    X = sparse.csr_matrix((np.ones(len(flat)), cols, indptr), shape=(n, max(len(vocab), 1)))
    counts_all = np.zeros((C, X.shape[1]))
    for c in range(C):
        counts_all[c] = np.asarray(X[y == c].sum(axis=0)).ravel()
    log_counts = np.log(counts_all + smoothing)  # (C, V), once: each class subtracts its left-out columns
    totals_all = counts_all.sum(axis=1)
    bounds = np.concatenate([[0], np.cumsum([len(rows) for rows in per_class])]).astype(np.int64)
    keeps, others, usables, totals_by = [], [], [], []
    for c, label in enumerate(labels):
        out = np.unique(np.asarray(leave_out.get(label, _EMPTY), dtype=np.int64))
        gone = np.flatnonzero(np.isin(vocab, out, assume_unique=True)) if len(vocab) else _EMPTY
        keep = np.ones(X.shape[1], bool)
        keep[gone] = False
        keeps.append(keep)
        V = max(int(keep.sum()), 1)
        totals = totals_all - counts_all[:, gone].sum(axis=1)
        totals_by.append(totals)
        a, b = bounds[c], bounds[c + 1]
        Xc = X[a:b]
        if len(gone):
            Xc = Xc.multiply(keep[None, :].astype(np.float64)).tocsr()
            Xc.eliminate_zeros()
        sizes = np.asarray(Xc.sum(axis=1)).ravel()
        denom = np.log(totals + smoothing * V)
        S = np.asarray(Xc @ log_counts.T) - sizes[:, None] * denom[None, :]
        # leave-one-out: the row's own tokens out of its own class's counts
        row_of = np.repeat(np.arange(b - a), np.diff(Xc.indptr))
        own = counts_all[c, Xc.indices]
        delta = np.log(own - 1 + smoothing) - np.log(own + smoothing)
        fix = np.bincount(row_of, weights=delta, minlength=b - a).astype(np.float64)
        fix -= sizes * (np.log(totals[c] - sizes + smoothing * V) - denom[c])
        S[:, c] += fix
        own_score = S[:, c].copy()
        S[:, c] = -np.inf
        others.append(S.max(axis=1) > own_score if C > 1 else np.zeros(b - a, bool))
        usables.append(sizes > 0)
    return Predictions(labels, per_class, others, usables, bounds[:-1], X, y, counts_all, keeps, smoothing, totals_by)


def log_odds_ratio(k: int, n: int, m: int, M: int) -> tuple[float, float]:
    """Log odds ratio of "predicted as another class", candidate's rows (``k`` of ``n``)
    against the class's other rows (``m`` of ``M``), with its variance (Haldane's 1/2)."""
    d = np.log((k + 0.5) / (n - k + 0.5)) - np.log((m + 0.5) / (M - m + 0.5))
    v = 1 / (k + 0.5) + 1 / (n - k + 0.5) + 1 / (m + 0.5) + 1 / (M - m + 0.5)
    return float(d), float(v)


def overlap_clusters(rows: Sequence[Sequence[int]], of_larger: bool = False) -> list[int]:
    """Cluster candidates whose sampled rows overlap by at least half the smaller set
    (the words and word pairs of one phrase, a handle and its word pairs), or, with
    ``of_larger``, half the larger (the values of one stamp, held by nearly the same
    rows: a rare value held by a few of those rows does not join it)."""
    parent = list(range(len(rows)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # SciPy: imported on first use, by the detectors that run
    from scipy import sparse

    sets = [np.unique(np.asarray(r, dtype=np.int64)) for r in rows]
    sizes = np.array([len(r) for r in sets], dtype=np.int64)
    if len(sets) > 1 and sizes.sum():
        M = sparse.csr_matrix(
            (np.ones(int(sizes.sum()), np.int32), np.concatenate(sets), np.concatenate([[0], np.cumsum(sizes)])),
            shape=(len(sets), int(max(r.max() for r in sets if len(r))) + 1),
        )
        shared = (M @ M.T).tocoo()  # rows each pair of candidates shares
        i, j, k = shared.row, shared.col, shared.data
        hit = (i < j) & (k >= 0.5 * (np.maximum if of_larger else np.minimum)(sizes[i], sizes[j]))
        for a, b in sorted(zip(i[hit].tolist(), j[hit].tolist())):
            parent[find(a)] = find(b)
    return [find(i) for i in range(len(rows))]


#: Fewest peer groups from which :func:`peer_null` estimates how much natural groups vary.
#: The spread is a moment estimate between groups, and from three of them it is noise (a
#: chi-square on two degrees of freedom: on the development Rotten Tomatoes with the 3D
#: phrase on 3 %, three groups of 11-13 rows gave a between-group variance of 0.46 in one
#: seed and 0 in the next, and the 205-row phrase, 171 of its rows predicted as another
#: class against 23 % of the class's other rows, was missed in the first). With fewer, the
#: rows are taken as a random subset of their class. Chosen on the development part
#: (`benchmarks/dev_triggers.py`, `clean_real.py`, the digits' pixel subsets): 3 -> 5
#: found that seed and moved nothing else.
MIN_PEER_GROUPS = 5


def peer_null(stats: Sequence[tuple[float, float]], clusters: Sequence[int], sizes: Sequence[int],
              min_peers: int = MIN_PEER_GROUPS) -> tuple[float, float, int]:
    """What a natural group's log odds ratio looks like in this scan: the centre and the
    spread between groups of the other candidates (one per cluster, the largest), a
    random-effects null: centre the median, between-group variance the peers' mean
    squared distance from it less their median sampling variance (a moment estimate in
    the manner of DerSimonian and Laird). With fewer than
    ``min_peers`` peer clusters: centre 0, no spread (the rows are taken as a random
    subset of their class). Returns (centre, between-group variance, peers)."""
    best: dict = {}
    for (d, v), c, n in zip(stats, clusters, sizes):
        if c not in best or n > best[c][2]:
            best[c] = (d, v, n)
    if len(best) < min_peers:
        return 0.0, 0.0, len(best)
    d = np.array([b[0] for b in best.values()])
    v = np.array([b[1] for b in best.values()])
    centre = float(np.median(d))
    spread = float(np.mean((d - centre) ** 2))  # not robust on purpose: a heavy tail widens it
    return max(centre, 0.0), max(spread - float(np.median(v)), 0.0), len(best)


def candidate_p(k: int, n: int, m: int, M: int, null: tuple[float, float, int]) -> float:
    """One-sided p of ``k`` of ``n`` candidate rows predicted as another class: against
    the class's other rows (Fisher exact) when there are no peers, else under the peers'
    random-effects null.

    Under that null the candidate's rows are a natural group: their log odds of
    "predicted as another class" sit ``delta`` above the class's other rows' (``m`` of
    ``M``), ``delta`` drawn from a normal with the peers' centre and between-group
    variance, and ``k`` is binomial given it. The p-value is the binomial tail averaged
    over ``delta`` (a grid of 801 points over +-8 SD), exact in the candidate's counts: a
    group all of whose rows are predicted as another class is judged by how rarely a
    natural group of its size would be, not by a normal approximation to its log odds.
    The class's other rows' rate is taken as known (a plug-in; they are the class's whole
    sample, hundreds to thousands of rows)."""
    # SciPy / scikit-learn: imported on first use, by the detectors that run
    from scipy.stats import binom, norm

    if not n:
        return 1.0
    centre, tau2, peers = null
    if not peers or (centre == 0.0 and tau2 == 0.0):
        return fisher_greater(k, n, m, M)
    base = np.log((m + 0.5) / (M - m + 0.5))
    if tau2 > 0:
        z = np.linspace(-8.0, 8.0, 801)
        w = norm.pdf(z)
        w /= w.sum()
        delta = centre + np.sqrt(tau2) * z
    else:
        delta, w = np.array([centre]), np.array([1.0])
    rate = 1.0 / (1.0 + np.exp(-(base + delta)))
    return float(min(1.0, (w * binom.sf(k - 1, n, rate)).sum()))


def fisher_greater(k: int, n: int, m: int, M: int) -> float:
    """One-sided Fisher exact test: P(at least ``k`` of ``n`` candidate rows predicted as
    another class) when ``k + m`` such rows fall at random among ``n + M`` rows."""
    # SciPy / scikit-learn: imported on first use, by the detectors that run
    from scipy.stats import hypergeom

    if n == 0:
        return 1.0
    return float(min(1.0, hypergeom.sf(k - 1, n + M, k + m, n)))


def best_case(n: int, m: int, M: int, null: tuple[float, float, int] = (0.0, 0.0, 0)) -> float:
    """The smallest p :func:`candidate_p` can give these margins under ``null``: every one
    of the ``n`` candidate rows predicted as another class."""
    return candidate_p(n, n, m, M, null) if n else 1.0


def tarone_count(best: Sequence[float], alpha: float) -> int:
    """Tarone's Bonferroni factor: the smallest K such that at most K hypotheses could
    reach p < alpha / K (their best-case p-values ``best``)."""
    best = np.sort(np.asarray(best, dtype=np.float64))
    for K in range(1, len(best) + 1):
        if int((best < alpha / K).sum()) <= K:
            return K
    return max(len(best), 1)
