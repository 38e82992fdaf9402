"""Spectral signatures (Tran, Li and Madry, 2018)."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Any, Mapping

import numpy as np

from ._params import BOOL, Interval
from ._pooled import Pooled, affinity_test
from .base import (
    ALL_KINDS,
    Detector,
    DetectorState,
    group_rows_by_label,
    label_sort_key,
    register,
)
from .decision import ClassVerdict
from .stats import ClassSample, MeanCov


@dataclass(frozen=True)
class SpectralClassState:
    """Fitted spectral state of one class.

    Attributes
    ----------
    mean : ndarray of shape (d,)
        The class mean.
    direction : ndarray of shape (d,)
        Unit top eigenvector of the class covariance (top right singular vector of the
        centred representations).
    eigenvalue : float
        Variance along ``direction``.
    explained : float
        Share of the class's total variance along ``direction``.
    n : int
        Rows the state was fitted on.
    """

    mean: np.ndarray
    direction: np.ndarray
    eigenvalue: float
    explained: float
    n: int

    def projection(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.direction - float(self.mean @ self.direction)


class ClassMeanCovDetector(Detector):
    """Base of detectors whose exact statistics are each class's mean and covariance."""

    @property
    def accumulator_key(self) -> str:
        return "class_mean_cov"

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, accumulator: dict, X: np.ndarray, y: np.ndarray) -> dict:
        X, y = self._check_batch(X, y)
        for label, idx in group_rows_by_label(y):
            part = MeanCov.from_batch(X if len(idx) == len(X) else X[idx])  # one class: no copy
            prev = accumulator.get(label)
            accumulator[label] = part if prev is None else prev.merge(part)
        return accumulator

    def merge_accumulators(self, accumulators: list) -> dict:
        out: dict = {}
        for acc in accumulators:
            for label, stats in acc.items():
                prev = out.get(label)
                out[label] = stats if prev is None else prev.merge(stats)
        return out

    @staticmethod
    def _eigen(accumulator: dict):
        """(label, statistics, eigenvalues ascending, eigenvectors) per class, sorted."""
        for label in sorted(accumulator, key=label_sort_key):
            stats = accumulator[label].rounded()
            eigvals, eigvecs = np.linalg.eigh(stats.covariance())
            yield label, stats, eigvals, eigvecs

    #: Verdicts are calibrated across the scan's classes (:func:`.decision.judge_scan`).
    calibrated = True

    def group_affinity(
        self, state: DetectorState, verdict: ClassVerdict, pooled: Pooled, label: Any
    ) -> tuple[tuple, float] | None:
        """Do the rows of the class's group look more like other classes than the rest?

        Poison was taken from other classes and relabelled, so a model of the other
        classes recognises its rows more readily than the rest of the class (Chen et
        al.'s exclusionary idea, the test activation clustering applies to its clusters);
        a natural sub-population (one way of writing a 9) does not. The class's shared
        sample is split at the verdict's cut and compared with
        :func:`._pooled.affinity_test`. Returns ``((mean of the rest, mean of the
        group), p)``, or None when the class has no other class beside it or fewer than
        two of the group's rows (or of the rest) are in the shared sample.
        """
        if verdict.cut is None or len(pooled.labels) < 2 or label not in pooled.labels:
            return None
        code = pooled.labels.index(label)
        X = pooled.X[pooled.codes == code]
        stat = self.statistic(state, X, np.full(len(X), label, dtype=object))
        member = (verdict.side * (stat - verdict.cut) > 0).astype(np.int64)
        if member.sum() < 2 or member.sum() > len(member) - 2:
            return None
        return affinity_test(pooled.affinity(code), member)

    def _per_class(self, state: DetectorState, X, y, fn) -> np.ndarray:
        X, y = self._check_batch(X, y)
        groups = group_rows_by_label(y)
        self._require_fitted(state, [label for label, _ in groups])
        out = np.empty(X.shape[0], dtype=np.float64)
        for label, idx in groups:
            out[idx] = fn(state.classes[label], X[idx])
        return out


@register
class SpectralSignature(ClassMeanCovDetector):
    """Spectral signature of a backdoor: outliers along a class's top singular direction.

    For each class c with representations r, the score of a row is

        ((r - mean_c) . v_c)^2

    where v_c is the top eigenvector of the class covariance, i.e. the top right singular
    vector of the *centred* matrix of the class's representations. A backdoor that the
    representation has learned shifts the poisoned rows along one direction, which then
    dominates the class's spectrum.

    The statistics are exact and mergeable (count, mean and scatter matrix per class), so
    the detector streams; no sample is needed to fit it.

    Score polarity: higher = more suspicious. The decision statistic is the signed
    projection ``(r - mean_c) . v_c`` (the square root of the score with its sign), so the
    decision can tell which side of the class the separated group lies on.

    Notes
    -----
    Several public implementations score the *uncentred* representation, ``(r . v)^2``;
    that score changes when every row shifts by the same vector, and no longer measures
    distance from the class's mass. Scores here are invariant to such shifts.

    Memory: one d x d float64 matrix per class while accumulating.

    References
    ----------
    B. Tran, J. Li, A. Madry. Spectral Signatures in Backdoor Attacks. NeurIPS 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from poisonscan.detectors import SpectralSignature
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 8)); y = np.zeros(500, dtype=int)
    >>> X[:25] += 6.0  # a shifted group
    >>> det = SpectralSignature()
    >>> acc = det.add_input(det.create_accumulator(), X, y)
    >>> state = det.extract_output(acc, {})
    >>> scores = det.score(state, X, y)
    >>> bool(scores[:25].min() > scores[25:].max())
    True
    """

    name = "spectral"
    default_kinds = ALL_KINDS
    default_rank = 1
    two_sided = True
    statistic_name = "projection on the top singular direction"
    _parameter_constraints = {"needs_affinity": [BOOL]}

    @classmethod
    def params_for(cls, kind: str, probability_labels: tuple = ()) -> dict:
        # one-hot categories split a clean table into far-apart groups: a group must
        # also look like other classes (see group_affinity)
        return {"needs_affinity": True} if kind == "tabular" else {}

    def __init__(self, *, needs_affinity: bool = False):
        self.needs_affinity = needs_affinity

    def extract_output(
        self, accumulator: dict, samples: Mapping[Any, ClassSample]
    ) -> DetectorState:
        self._validate_params()
        state = DetectorState(self.name)
        for label, stats, eigvals, eigvecs in self._eigen(accumulator):
            self._store(state, label, stats, eigvecs[:, -1].copy(), eigvals, samples)
        return state

    @staticmethod
    def _store(state: DetectorState, label: Any, stats: MeanCov, direction: np.ndarray,
               eigvals: np.ndarray, samples: Mapping[Any, ClassSample]) -> None:
        """Keep one class's state (its direction and the spectrum it tops, ascending) and
        the class sample's statistic for the decision."""
        top = float(max(eigvals[-1], 0.0))
        total = float(max(eigvals.clip(min=0).sum(), 0.0))
        cls = SpectralClassState(
            mean=stats.mean,
            direction=direction,
            eigenvalue=top,
            explained=top / total if total > 0 else 0.0,
            n=stats.n,
        )
        state.classes[label] = cls
        sample = samples.get(label)
        if sample is not None and len(sample):
            state.calibration[label] = cls.projection(sample.X)

    def statistic(self, state: DetectorState, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._per_class(state, X, y, lambda cls, Xc: cls.projection(Xc))

    def score(self, state: DetectorState, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.statistic(state, X, y) ** 2

    def evaluate(self, state: DetectorState, X: np.ndarray, y: np.ndarray):
        stat = self.statistic(state, X, y)
        return stat * stat, stat

    def explain(self, state: DetectorState, label: Any, strength: float) -> str:
        cls = state.classes[label]
        return (
            f"lies {strength:.1f} SD from the class's main mass along its top singular "
            f"direction ({cls.explained:.0%} of the class's variance)"
        )


@register
class RelativeSpectral(SpectralSignature):
    """Spectral signature relative to the other classes: outliers along the direction in
    which a class varies most *compared with the scan's other classes*.

    The spectral signature reads each class's top singular direction. Where the
    representation has a few strong directions of variation that every class shares (a
    network's features usually do), those directions dominate every class's spectrum and a
    shift along a weak direction stays under them. Following SCAn's premise (Tang et al.,
    2021) that clean classes share one within-class covariance, this detector whitens
    each class with the pooled within-class covariance of the *other* classes, S, and takes
    the top generalised eigenvector a of (C, S), where C is the class's covariance: the
    direction of largest variance in the class relative to S. A row's score is

        ((r - mean_c) . a)^2

    and the decision statistic the signed projection, judged as the spectral signature's
    is (:class:`.decision.GroupTest`, against the class's own null and its peers). With a
    single class there is no other class: S is the identity and the detector is the
    spectral signature.

    S is taken from the same exact, mergeable per-class means and scatter matrices as the
    spectral signature's (no extra pass over the data); the class is left out of its own S,
    so a poisoned class does not whiten its own poison away. Directions in which the
    other classes hardly vary are given the variance ``floor`` times S's largest
    eigenvalue: a numerical guard, so that a direction no other class uses (a pixel that is
    always blank elsewhere) counts as at most 1 / ``floor`` times more variable than S.

    Score polarity: higher = more suspicious.

    Memory: one d x d float64 matrix per class while accumulating (shared with the
    spectral signature and SPECTRE), and two d x d eigendecompositions per class to fit.

    References
    ----------
    D. Tang, X. Wang, H. Tang, K. Zhang. Demon in the Variant: Statistical Analysis of DNNs
    for Robust Backdoor Contamination Detection (SCAn). USENIX Security 2021.
    B. Tran, J. Li, A. Madry. Spectral Signatures in Backdoor Attacks. NeurIPS 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from poisonscan.detectors import RelativeSpectral
    >>> rng = np.random.default_rng(0)
    >>> scale = np.r_[np.full(4, 5.0), np.ones(12)]  # four strong directions, shared
    >>> X = rng.normal(size=(1500, 16)) * scale; y = np.repeat([0, 1, 2], 500)
    >>> X[:50] += 5.0 * np.eye(16)[10]  # a group shifted along a weak direction
    >>> det = RelativeSpectral()
    >>> acc = det.add_input(det.create_accumulator(), X, y)
    >>> state = det.extract_output(acc, {})
    >>> scores = det.score(state, X[y == 0], y[y == 0])
    >>> bool(np.median(scores[:50]) > 10 * np.median(scores[50:]))
    True
    """

    name = "relative_spectral"
    per_class = False
    # runs when named: by default it judged clean classes of held-out controls (a
    # four-speaker text corpus, 11.69 % of its rows quarantined), where development had
    # no clean control of that kind (docs/detectors.md)
    default_kinds = frozenset()
    default_rank = 10
    statistic_name = "projection on the direction of largest variance relative to the other classes"
    _parameter_constraints = {
        "needs_affinity": [BOOL],
        "floor": [Interval(Real, 0, 1, closed="neither")],
    }

    def __init__(self, *, needs_affinity: bool = False, floor: float = 1e-3):
        self.needs_affinity = needs_affinity
        self.floor = floor

    def extract_output(
        self, accumulator: dict, samples: Mapping[Any, ClassSample]
    ) -> DetectorState:
        self._validate_params()
        state = DetectorState(self.name)
        for label, s, whitener in others_whiteners(accumulator, self.floor):
            cov = s.covariance()
            relative = whitener.T @ cov @ whitener
            eigvals, eigvecs = np.linalg.eigh(0.5 * (relative + relative.T))
            self._store(state, label, s, whitener @ eigvecs[:, -1], eigvals, samples)
        return state

    def explain(self, state: DetectorState, label: Any, strength: float) -> str:
        cls = state.classes[label]
        return (
            f"lies {strength:.1f} SD from the class's main mass along the direction in which "
            f"it varies most relative to the other classes ({cls.explained:.0%} of that relative variance)"
        )


def others_whiteners(accumulator: dict, floor: float):
    """``(label, statistics, W)`` per class, sorted: W whitens the pooled within-class
    covariance S of the *other* classes (``W^T S W = I``), so a class's poison does not
    whiten itself away; the identity when there is no other class.

    Directions in which S's variance is below ``floor`` times its largest are whitened as
    if they had that variance (a numerical guard: such a direction counts as at most
    ``1 / floor`` times more variable than S makes it). One d x d sum over the classes;
    each class's covariance is formed again when it is reached, so at most two such
    matrices are held at a time, not one per class.
    """
    stats = {label: accumulator[label].rounded() for label in sorted(accumulator, key=label_sort_key)}
    total_n = sum(s.n for s in stats.values())
    scatter = sum(s.n * s.covariance() for s in stats.values())
    for label, s in stats.items():
        others = total_n - s.n
        if others > 0:
            yield label, s, floored_whitener((scatter - s.n * s.covariance()) / others, floor)
        else:
            yield label, s, np.eye(s.mean.shape[0])


def floored_whitener(cov: np.ndarray, floor: float) -> np.ndarray:
    """W with W^T cov W = I on cov's range; directions below ``floor`` times the largest
    variance are whitened as if they had that variance."""
    w, V = np.linalg.eigh(0.5 * (cov + cov.T))
    top = float(w.max()) if w.size else 0.0
    if top <= 0:
        return np.eye(cov.shape[0])
    return V / np.sqrt(np.maximum(w, floor * top))
