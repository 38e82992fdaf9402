"""KnnLabel: do a row's nearest neighbours among the class samples carry its label?

See :mod:`.label_consistency` for what both label detectors read and how a class is
judged (:class:`~.excess.ExcessTest` against :class:`~._pooled.NoiseCalibration`).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Any, Mapping

import numpy as np

from ._params import NONE, Interval
from ._pooled import Pooled, PooledDetector, fmt_label, plain_labels
from .base import ALL_KINDS, DetectorState, register
from .stats import ClassSample


@dataclass
class _KnnState:
    mean: np.ndarray
    scale: np.ndarray
    basis: np.ndarray  # (d, c)
    refs: np.ndarray  # (m, c)
    ref_codes: np.ndarray
    ref_positions: np.ndarray
    labels: list


@register
class KnnLabel(PooledDetector):
    """Label disagreement with the nearest neighbours among the class samples.

    The reference set is up to ``rows_per_class`` sampled rows of every class,
    standardised and projected on their top ``components`` principal directions (of the
    encoded table, the user's vectors, or the proxy's out-of-fold probabilities: what
    the scan has that was not fitted to the labels). A row's ``k`` nearest references
    (Euclidean, the row itself excluded) give it class probabilities, the add-one
    estimate ``(n_c + 1) / (k + K)``, which are calibrated like label consistency's
    (:class:`NoiseCalibration`). A row is a strong disagreement when at least
    ``verdict_disagreement`` of its neighbours carry another label; a class's evidence is
    how many of its sampled rows are, against how many a clean class would have with
    labels drawn from the calibrated clean model. It is judged by where it falls among
    the same evidence, calibration fit included, of labels redrawn from the neighbour
    probabilities under a temperature alone (no flips), the neighbour counts held fixed
    (:class:`~.excess.ExcessTest`). The row statistic is the posterior log-odds that the
    label is a flip; in a class judged poisoned, rows whose posterior is at least
    ``min_posterior`` are flagged (None: the expected-F1 cut). Score polarity: higher =
    more suspicious.

    ``alpha``, ``class_alpha``, ``draws`` and ``min_posterior`` mean what they mean for
    :class:`LabelConsistency`.
    """

    name = "knn_label"
    # not on text: its unfitted view there is the out-of-fold probabilities of a linear
    # model of the words, which label_consistency reads as they are; neighbours in a
    # space of a few probabilities are the same evidence, smoothed, and only a veto
    default_kinds = ALL_KINDS - {"text"}
    default_rank = 5
    statistic_name = "posterior log-odds that the label is a flip (nearest neighbours)"
    _parameter_constraints = {
        "k": [Interval(int, 1, None)],
        "rows_per_class": [Interval(int, 10, None)],
        "components": [Interval(int, 1, None)],
        "alpha": [Interval(Real, 0, 1, closed="neither")],
        "class_alpha": [Interval(Real, 0, 1, closed="neither")],
        "draws": [NONE, Interval(int, 19, None)],
        "verdict_disagreement": [Interval(Real, 0, 1, closed="right")],
        "min_posterior": [Interval(Real, 0, 1, closed="neither"), NONE],
    }

    alarm_family = "labels"

    def __init__(
        self,
        *,
        k: int = 10,
        rows_per_class: int = 512,
        components: int = 32,
        alpha: float = 0.05,
        class_alpha: float = 0.05,
        draws: int | None = None,
        verdict_disagreement: float = 0.9,
        min_posterior: float | None = 0.5,
    ):
        self.verdict_disagreement = verdict_disagreement
        self.k = k
        self.rows_per_class = rows_per_class
        self.components = components
        self.alpha = alpha
        self.class_alpha = class_alpha
        self.draws = draws
        self.min_posterior = min_posterior

    input = "unfitted"

    def extract_output(self, accumulator: dict, samples: Mapping[Any, ClassSample]) -> DetectorState:
        self._validate_params()
        pooled = Pooled.of(samples, self.rows_per_class)
        state = DetectorState(self.name)
        for i, label in enumerate(pooled.labels):
            state.classes[label] = i
        if not pooled.labels:
            return state
        knn = reference_set(pooled, self.components)
        state.info["refs"] = knn
        counts = neighbour_counts(knn, knn.refs, self.k, pooled.positions)
        P = self._proba(knn, counts)
        kk = np.maximum(counts.sum(axis=1, keepdims=True), 1)
        strong = 1 - counts / kk >= self.verdict_disagreement - 1e-9
        return self._calibrated(state, pooled.labels, P, pooled.codes, strong)

    @staticmethod
    def _proba(knn: _KnnState, counts: np.ndarray) -> np.ndarray:
        """The add-one estimate of the class probabilities from neighbour counts."""
        k = counts.sum(axis=1, keepdims=True)
        return (counts + 1.0) / (k + counts.shape[1])

    def score(self, state: DetectorState, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        X, y = self._check_batch(X, y)
        self._require_fitted(state, set(plain_labels(y)))
        knn: _KnnState = state.info.get("refs")
        if knn is None or "noise" not in state.info:
            return np.zeros(len(y))
        codes = np.array([state.classes[v] for v in plain_labels(y)], dtype=np.int64)
        counts = neighbour_counts(knn, project(knn, X), self.k, own_codes=codes)
        return state.info["noise"].flip_log_odds(self._proba(knn, counts), codes)

    def judge(self, state, label, class_rows, group_test):
        return self._decide(state, label, class_rows)

    def describe(self, state, X, y, statistic, strength) -> list[str]:
        knn: _KnnState = state.info["refs"]
        codes = np.array([state.classes[v] for v in plain_labels(y)], dtype=np.int64)
        counts = neighbour_counts(knn, project(knn, X), self.k, own_codes=codes)
        out = []
        for label, code, row in zip(plain_labels(y), codes, counts):
            k = int(row.sum())  # more than k where references tie at the k-th distance
            other = row.copy()
            other[code] = -1
            m = int(other.argmax())
            out.append(
                f"label {fmt_label(label)} disagrees with {k - int(row[code])} of its {k} nearest "
                f"neighbours ({int(row[m])} of them {fmt_label(knn.labels[m])})"
            )
        return out


def reference_set(pooled: Pooled, components: int) -> _KnnState:
    """The sampled rows of every class, standardised and projected on their top
    ``components`` principal directions: the references neighbours are looked up in."""
    mean = pooled.X.mean(axis=0)
    scale = pooled.X.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    S = (pooled.X - mean) / scale
    c = min(components, S.shape[1], max(1, S.shape[0] - 1))
    _, _, Vt = np.linalg.svd(S, full_matrices=False)
    basis = Vt[:c].T.copy()
    return _KnnState(mean, scale, basis, S @ basis, pooled.codes, pooled.positions, pooled.labels)


def project(knn: _KnnState, X: np.ndarray) -> np.ndarray:
    """Rows in the references' standardised, projected space."""
    return ((np.asarray(X, dtype=np.float64) - knn.mean) / knn.scale) @ knn.basis


def neighbour_counts(knn: _KnnState, Z: np.ndarray, k: int, positions=None, own_codes=None) -> np.ndarray:
    """Per row of ``Z`` (projected rows), how many of its ``k`` nearest references carry
    each class code; references tied with the k-th nearest all count (rows of a table
    whose columns take few values repeat: which of a dozen identical rows make up "the
    10 nearest" would otherwise be decided by their order, and a row's label judged
    against an arbitrary few of them).

    ``positions``: the rows are the sampled rows at these positions, and a row is not
    its own neighbour. Without them (pass 2) a reference at distance 0 may be the row
    itself: with ``own_codes`` (each row's label code), one reference at distance 0
    carrying the row's own label is left out, which is what pass 1 did for a sampled
    row; without them, the first reference at distance 0."""
    k = min(k, len(knn.ref_codes) - (1 if positions is not None else 0))
    n_codes = len(knn.labels)
    counts = np.zeros((len(Z), n_codes), dtype=np.int64)
    if k < 1:
        return counts
    ref_sq = np.einsum("ij,ij->i", knn.refs, knn.refs)
    onehot = np.zeros((len(knn.ref_codes), n_codes))
    onehot[np.arange(len(knn.ref_codes)), knn.ref_codes] = 1.0
    for start in range(0, len(Z), 2048):
        z = Z[start : start + 2048]
        zz = np.einsum("ij,ij->i", z, z)
        d2 = ref_sq[None, :] - 2 * z @ knn.refs.T + zz[:, None]
        # distances from the expansion carry rounding of the norms' size
        tol = 1e-9 * (1.0 + zz + ref_sq.max())
        self_hit = np.zeros(len(z), dtype=bool)
        if positions is not None:  # a sampled row is not its own neighbour
            d2[positions[start : start + 2048, None] == knn.ref_positions[None, :]] = np.inf
            kth = np.partition(d2, k - 1, axis=1)[:, k - 1]
        else:
            # pass 2 meets the sampled rows again: a reference at distance 0 is the row
            # itself (or an exact copy), which cannot vouch for its label
            m = min(k + 1, d2.shape[1])
            near = np.partition(d2, m - 1, axis=1)[:, :m]
            near.sort(axis=1)
            self_hit = (near[:, 0] <= tol) & (m > k)
            kth = np.where(self_hit, near[:, m - 1], near[:, k - 1])
        block = ((d2 <= (kth + tol)[:, None]) @ onehot).astype(np.int64)
        if self_hit.any():
            zero = d2 <= tol[:, None]
            if own_codes is not None:
                own = np.asarray(own_codes[start : start + 2048], dtype=np.int64)
                has_own = (zero & (knn.ref_codes[None, :] == own[:, None])).any(axis=1)
                drop = np.where(has_own, own, -1)
            else:
                drop = knn.ref_codes[np.argmax(zero, axis=1)]
            hit = np.flatnonzero(self_hit & (drop >= 0))
            block[hit, drop[hit]] -= 1
        counts[start : start + 2048] = block
    return counts
