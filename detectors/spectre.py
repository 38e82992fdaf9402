"""Robust spectral detection with QUantum Entropy scores (SPECTRE; Hayase et al., 2021)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from numbers import Real
from typing import Any, Mapping

import numpy as np

from ._params import BOOL, Interval
from ._pooled import fmt_label
from .base import ALL_KINDS, DetectorState, register
from .decision import ClassVerdict
from .mixture import fit_two_groups
from .spectral import ClassMeanCovDetector
from .stats import ClassSample


@dataclass(frozen=True)
class SpectreClassState:
    """Fitted SPECTRE state of one class.

    A row x is scored as ``y^T Q y / tr(Q)`` with ``y = W (B^T (x - mean) - loc)``:
    B holds the class's top-k principal directions, (loc, W) the robust centre and
    whitening of the projected rows, Q the QUE matrix.
    """

    mean: np.ndarray  # (d,)
    basis: np.ndarray  # (d, k)
    loc: np.ndarray  # (k,)
    whitener: np.ndarray  # (k, k)
    que: np.ndarray  # (k, k), trace 1
    k: int
    trimmed: float  # share of the sample left out of the robust estimate

    def whitened(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, dtype=np.float64) - self.mean) @ self.basis
        return (Z - self.loc) @ self.whitener

    def scores(self, X: np.ndarray) -> np.ndarray:
        Y = self.whitened(X)
        return np.einsum("ij,jk,ik->i", Y, self.que, Y)


#: ``DetectorState.info`` key: per class, the sample's statistic under the estimate every
#: row is scored with (kept only until the class is judged, and only where it differs from
#: the cross-fitted one).
_SCORED = "scored_sample"


@register
class Spectre(ClassMeanCovDetector):
    """SPECTRE: robust whitening, then QUantum Entropy (QUE) outlier scores.

    Per class:

    1. project the representations onto the top k principal directions of the class
       (exact, from the streamed covariance); k is the number of directions that explain
       ``explained`` of the class's variance, at most ``max_components`` and at most a
       tenth of the sampled rows;
    2. estimate the centre and covariance of the class's *clean* part robustly on the
       sample: concentration steps from a median start (the C-steps of FAST-MCD, keeping
       the half of the rows closest to the current estimate), then ``refinements`` rounds
       that re-estimate from the main mass left after splitting off a separated group of
       large Mahalanobis distances;
    3. whiten with that estimate, so a poisoned direction, small in the clean covariance,
       stands out;
    4. score with QUE: with M the second moment of the whitened sample,
       ``Q = exp(alpha (M - I) / (||M|| - 1))`` (normalised to trace 1) and
       ``tau(y) = y^T Q y``; alpha = 0 gives the Mahalanobis distance, larger alpha weighs
       the directions of greatest excess variance (the paper's alpha = 4).

    Score polarity: higher = more suspicious. The decision statistic is ``log tau``
    (one-sided: only a group of *large* scores is suspicious).

    References
    ----------
    J. Hayase, W. Kong, R. Somani, S. Oh. SPECTRE: Defending Against Backdoor Attacks
    Using Robust Statistics. ICML 2021.
    """

    name = "spectre"
    default_kinds = ALL_KINDS
    default_rank = 2
    two_sided = False
    #: The group's separation is a second peer statistic (:func:`.decision.judge_scan`):
    #: scores in units of the class's robust main mass put a trigger's group far out where
    #: natural groups lie near (chosen on the development part: docs/detectors.md).
    separation_floor = 0.5
    statistic_name = "robust outlier score (log) over the class's main directions of variation"
    _parameter_constraints = {
        "alpha": [Interval(Real, 0, None, closed="left")],
        "max_components": [Interval(int, 1, None)],
        "explained": [Interval(Real, 0, 1, closed="right")],
        "refinements": [Interval(int, 0, None)],
        "needs_affinity": [BOOL],
    }

    def __init__(
        self,
        *,
        alpha: float = 4.0,
        max_components: int = 32,
        explained: float = 0.99,
        refinements: int = 3,
        needs_affinity: bool = False,
    ):
        self.alpha = alpha
        self.max_components = max_components
        self.explained = explained
        self.refinements = refinements
        self.needs_affinity = needs_affinity

    def extract_output(self, accumulator: dict, samples: Mapping[Any, ClassSample]) -> DetectorState:
        self._validate_params()
        state = DetectorState(self.name)
        for label, stats, eigvals, eigvecs in self._eigen(accumulator):
            sample = samples.get(label)
            if sample is None or len(sample) < 4:
                raise ValueError(f"spectre needs a sample of class {label!r} (got none or too few rows)")
            cls = self._fit_class(stats.mean, eigvals, eigvecs, sample.X)
            state.classes[label] = cls
            state.calibration[label] = self._cross_fitted(cls, stats.mean, eigvals, eigvecs, sample.X)
            if self._is_cross_fitted(cls, len(sample)):
                # the sample as every row is scored (one estimate fitted on all of it), for judge
                state.info.setdefault(_SCORED, {})[label] = np.log(np.maximum(cls.scores(sample.X), 1e-300))
        return state

    def judge(self, state: DetectorState, label: Any, class_rows: int, group_test) -> ClassVerdict:
        """The separated-group test on the cross-fitted sample statistic; a group there
        must also lie beyond the cut under the estimate every row is scored with.

        A group can stand out only under estimates fitted without its rows: a trigger
        stamped on a few rows of a class that keep their label (TaCT's cover rows) is
        left out of the folds' robust estimates that do not hold those rows, and taken
        into the one fitted on the whole sample. Such a class would be judged, and then
        flag none of its rows. It is not a group this detector can cut, so it is no
        candidate."""
        verdict = super().judge(state, label, class_rows, group_test)
        kept = state.info.get(_SCORED, {})
        scored = kept.pop(label, None)
        if not kept:
            state.info.pop(_SCORED, None)
        if scored is None or not verdict.extra.get("candidate") or verdict.cut is None:
            return verdict
        beyond = int((verdict.side * (scored - verdict.cut) > 0).sum())
        if beyond >= group_test.min_group_rows:
            return verdict
        return dataclasses.replace(
            verdict,
            cut=None,
            note=(f"{verdict.note}; but under the estimate every row is scored with, {beyond} sampled rows lie "
                  "beyond its cut (a group seen only by estimates fitted without its rows)"),
            extra=dict(verdict.extra, candidate=False, beyond_cut_when_scored=beyond),
        )

    def _cross_fitted(self, cls, mean, eigvals, eigvecs, X, folds: int = 5) -> np.ndarray:
        """log QUE of each sampled row from an estimate fitted without it.

        Rows that shaped the robust estimate sit closer to it than unseen rows; scoring
        each row with an estimate fitted on the other folds makes the sampled statistic
        look like pass 2's (where every row is unseen) and keeps small classes from
        showing spurious groups. The bias grows with k / n, so large samples (at least
        40 rows per dimension) are scored in-sample.
        """
        n = len(X)
        if not self._is_cross_fitted(cls, n, folds):
            return np.log(np.maximum(cls.scores(X), 1e-300))
        out = np.empty(n)
        fold = np.arange(n) % folds  # the sample is in position order: deterministic
        for f in range(folds):
            held = fold == f
            part = self._fit_class(mean, eigvals, eigvecs, X[~held], k=cls.k)
            out[held] = np.log(np.maximum(part.scores(X[held]), 1e-300))
        return out

    @staticmethod
    def _is_cross_fitted(fitted: SpectreClassState, n: int, folds: int = 5) -> bool:
        """Whether a sample of ``n`` rows is scored by estimates fitted without each row:
        not where the in-sample bias is negligible (at least 40 rows per dimension), nor
        where there are too few rows for the folds."""
        return not (n >= 40 * fitted.k or n < 10 * folds)

    def _fit_class(self, mean, eigvals, eigvecs, X, k: int | None = None) -> SpectreClassState:
        if k is None:
            lam = np.maximum(eigvals[::-1], 0.0)
            total = lam.sum()
            k_var = int(np.searchsorted(np.cumsum(lam) / total, self.explained) + 1) if total > 0 else 1
            k = int(max(1, min(self.max_components, k_var, len(X) // 10, len(lam))))
        basis = eigvecs[:, ::-1][:, :k].copy()
        Z = (np.asarray(X, dtype=np.float64) - mean) @ basis
        loc, cov, trimmed = _robust_estimate(Z, self.refinements)
        whitener = _whitener(cov)
        Y = (Z - loc) @ whitener
        que = _que_matrix(Y, self.alpha)
        return SpectreClassState(mean, basis, loc, whitener, que, k, trimmed)

    def statistic(self, state: DetectorState, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(self.score(state, X, y), 1e-300))

    def score(self, state: DetectorState, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._per_class(state, X, y, lambda cls, Xc: cls.scores(Xc))

    def evaluate(self, state, X, y):
        score = self.score(state, X, y)
        return score, np.log(np.maximum(score, 1e-300))

    def explain(self, state: DetectorState, label: Any, strength: float) -> str:
        cls = state.classes[label]
        return (
            f"an outlier {strength:.1f} SD beyond the bulk of class {fmt_label(label)} (SPECTRE's robust "
            f"outlier score over the class's {cls.k} main directions of variation)"
        )


def _whitener(cov: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(cov)
    # a main mass without variance (identical rows, or values near 1e-300) still gets a
    # finite whitening: distances stay finite (no 0 * inf) and order rows the same way
    floor = max(float(w.max()) * 1e-9, 1e-150)
    return V / np.sqrt(np.maximum(w, floor))


def _mahalanobis(Z, loc, cov) -> np.ndarray:
    Y = (Z - loc) @ _whitener(cov)
    return np.einsum("ij,ij->i", Y, Y)


def _cov(Z: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf shrunk covariance (towards a multiple of the identity).

    With few rows per dimension the plain estimate's small eigenvalues are too small, and
    whitening would blow noise up into structure. Ledoit and Wolf, J. Multivariate
    Analysis 88 (2004): the shrinkage weight is the estimated share of the plain
    estimate's error in its distance to the target.
    """
    n, p = Z.shape
    if n < 2:
        return np.eye(p)
    X = Z - Z.mean(axis=0)
    S = X.T @ X / n
    mu = np.trace(S) / p
    d2 = float(((S - mu * np.eye(p)) ** 2).sum())
    row_sq = np.einsum("ij,ij->i", X, X)
    b2 = float(min((np.sum(row_sq**2) / n - (S**2).sum()) / n, d2))
    shrink = b2 / d2 if d2 > 0 else 1.0
    return shrink * mu * np.eye(p) + (1 - shrink) * S


def _robust_estimate(Z: np.ndarray, refinements: int, steps: int = 20):
    """Centre and covariance of the main mass of Z; share of rows left out."""
    n, k = Z.shape
    h = (n + k + 1) // 2
    # start: coordinate-wise median, the half of rows nearest in MAD-scaled distance
    med = np.median(Z, axis=0)
    mad = np.median(np.abs(Z - med), axis=0) * 1.4826
    mad = np.where(mad > 0, mad, np.std(Z, axis=0) + 1e-12)
    keep = np.argsort(((Z - med) / mad) ** 2 @ np.ones(k), kind="stable")[:h]
    for _ in range(steps):  # C-steps: the determinant never increases
        loc, cov = Z[keep].mean(axis=0), np.cov(Z[keep], rowvar=False).reshape(k, k)
        new = np.sort(np.argsort(_mahalanobis(Z, loc, cov), kind="stable")[:h])
        if np.array_equal(new, np.sort(keep)):
            break
        keep = new
    loc, cov = Z[keep].mean(axis=0), _cov(Z[keep])
    main = np.ones(n, dtype=bool)
    # re-estimate from everything but a separated group of large distances
    for _ in range(refinements):
        d = np.log(np.maximum(_mahalanobis(Z, loc, cov), 1e-300))
        fit = fit_two_groups(d)
        if fit.cut is None or fit.side < 0:
            main = np.ones(n, dtype=bool)
        else:
            main = d <= fit.cut
        if main.sum() <= k + 1:
            break
        loc, cov = Z[main].mean(axis=0), _cov(Z[main])
    return loc, cov, float(1 - main.mean())


def _que_matrix(Y: np.ndarray, alpha: float) -> np.ndarray:
    n, k = Y.shape
    M = Y.T @ Y / max(n, 1)
    if alpha == 0:
        return np.eye(k) / k
    top = float(np.linalg.eigvalsh(M).max())
    scale = top - 1.0 if top - 1.0 > 1e-9 else 1.0
    w, V = np.linalg.eigh(alpha * (M - np.eye(k)) / scale)
    Q = (V * np.exp(w - w.max())) @ V.T
    return Q / np.trace(Q)

