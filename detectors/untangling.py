"""Two identities untangled in one class (the local model of SCAn; Tang et al., 2021)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, Mapping

import numpy as np

from ._params import BOOL, Interval
from ._pooled import fmt_label
from .base import DetectorState, register
from .mixture import fit_two_groups
from .spectral import ClassMeanCovDetector, others_whiteners
from .stats import ClassSample, MeanCov


@dataclass(frozen=True)
class UntangledClassState:
    """Fitted state of one class: the line between its two untangled identities.

    Attributes
    ----------
    mean : ndarray of shape (d,)
        The class mean.
    direction : ndarray of shape (d,)
        Discriminant direction of the two identities under the other classes' shared
        within-class covariance, scaled so that the sample's projections have a
        normal-consistent median absolute deviation of 1.
    offset : float
        The sample's median projection (so that ``projection`` is 0 there).
    group_fraction : float
        Share of the class's sample in the smaller identity (0: no split was found).
    separation : float
        Distance between the two identities' means in the shared within-class metric
        (Mahalanobis).
    gain : float
        SCAn's log-likelihood gain of two identities over one,
        ``n p (1 - p) separation^2 / 2``.
    n : int
        Rows the class's statistics were accumulated from.
    """

    mean: np.ndarray
    direction: np.ndarray
    offset: float
    group_fraction: float
    separation: float
    gain: float
    n: int

    def projection(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.mean) @ self.direction - self.offset


@register
class Untangling(ClassMeanCovDetector):
    """SCAn's untangling: is a class one identity, or two that share the data's variation?

    SCAn (Tang et al., 2021) models a representation as an identity (the class's mean)
    plus a variation that every class shares, with one within-class covariance S. A
    class that holds poison is two identities: its own, and the identity the trigger
    gives the poisoned rows (with source-specific poison, TaCT, the source class's
    rows that carry the trigger). Per class:

    1. S is the pooled within-class covariance of the *other* classes (from the exact,
       mergeable per-class means and scatter matrices the spectral signature keeps), so
       a poisoned class does not shape its own metric; directions the other classes
       hardly use get the variance ``floor`` times S's largest (as
       :class:`.spectral.RelativeSpectral` does). With one class, S is the identity.
    2. The class's sample, centred and whitened by S, is split in two identities by
       SCAn's alternation: assign each row to the nearer identity under S (Fisher's
       linear discriminant with the identities' shares as priors), recompute the two
       means, until no row moves. The alternation starts from a two-group split of the
       sample along each of the ``starts`` directions of largest variance relative to S;
       the split with the largest gain ``n p (1 - p) D^2 / 2`` (D: distance of the two
       means under S; SCAn's likelihood-ratio statistic) is kept.
    3. A row's decision statistic is its projection on the discriminant direction, from
       the class's median in robust standard deviations (MAD), positive towards the
       smaller identity; its score is the square of the positive part (higher = more
       suspicious).

    In d dimensions a sample of n rows can always be split so that a handful of rows
    stand apart on a line chosen from those rows (any d + 1 points are linearly
    separable). So the statistic the class is judged on is cross-fitted: the rows are
    dealt into ``folds`` folds in sample order, and each fold is projected on the line
    untangled from the other folds (as SPECTRE's sampled statistic is,
    :mod:`.spectre`). A split that exists in the data recurs in every fold; one carved
    out of noise does not. The class is then judged as the spectral signature's is: its
    own one-group null, its peers among the scan's classes, the scan's level
    (:mod:`.decision`).

    SCAn itself judges a class by its gain's distance from the other classes' median in
    median absolute deviations (an anomaly index beyond e^2). Here the gain picks the
    split, and the class's evidence (its cross-fitted statistic against one group) goes
    through the calibrated peer test the other group detectors share, so the scan's
    false-alarm bound covers it.

    Runs when named (``--detectors ...,untangling``); docs/detectors.md gives its
    measured reach and why it is not a default.

    References
    ----------
    D. Tang, X. Wang, H. Tang, K. Zhang. Demon in the Variant: Statistical Analysis of DNNs
    for Robust Backdoor Contamination Detection. USENIX Security 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from poisonscan.detectors import ClassSample, Untangling
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(1500, 8)); y = np.repeat([0, 1, 2], 500)
    >>> X[:40] += 6.0 * np.eye(8)[3]  # a second identity inside class 0
    >>> det = Untangling()
    >>> acc = det.add_input(det.create_accumulator(), X, y)
    >>> sample = {c: ClassSample(X[y == c], np.flatnonzero(y == c), np.flatnonzero(y == c)) for c in range(3)}
    >>> state = det.extract_output(acc, sample)
    >>> stat = det.statistic(state, X[y == 0], y[y == 0])
    >>> bool(stat[:40].min() > stat[40:].max())
    True
    """

    name = "untangling"
    per_class = False
    default_kinds = frozenset()
    default_rank = 11
    two_sided = False
    statistic_name = "distance from the class's main identity towards its second one"
    _parameter_constraints = {
        "starts": [Interval(int, 1, None)],
        "folds": [Interval(int, 2, None)],
        "max_iterations": [Interval(int, 1, None)],
        "floor": [Interval(Real, 0, 1, closed="neither")],
        "needs_affinity": [BOOL],
    }

    def __init__(
        self,
        *,
        starts: int = 8,
        folds: int = 5,
        max_iterations: int = 50,
        floor: float = 1e-3,
        needs_affinity: bool = False,
    ):
        self.starts = starts
        self.folds = folds
        self.max_iterations = max_iterations
        self.floor = floor
        self.needs_affinity = needs_affinity

    def extract_output(self, accumulator: dict, samples: Mapping[Any, ClassSample]) -> DetectorState:
        self._validate_params()
        state = DetectorState(self.name)
        for label, s, whitener in others_whiteners(accumulator, self.floor):
            sample = samples.get(label)
            if sample is None or len(sample) < 4:
                raise ValueError(f"untangling needs a sample of class {label!r} (got none or too few rows)")
            X = np.asarray(sample.X, dtype=np.float64)
            cls = self._fit_class(s, whitener, X)
            state.classes[label] = cls
            state.calibration[label] = self._cross_fitted(cls, s, whitener, X)
        return state

    def _fit_class(self, stats: MeanCov, whitener: np.ndarray, X: np.ndarray) -> UntangledClassState:
        U = (X - stats.mean) @ whitener
        split = untangle(U, self.starts, self.max_iterations)
        if split is None:
            # no two identities: the line of largest variance relative to S, so the
            # statistic is still defined (the decision finds no group on it)
            w, V = np.linalg.eigh(U.T @ U / max(len(U), 1))
            line, group = V[:, -1], np.zeros(len(U), dtype=bool)
            gain = separation = 0.0
        else:
            gain, group, line = split
            separation = float(np.linalg.norm(line))
        # in standard deviations of the class's bulk (median and MAD: the smaller identity
        # holds at most half of the rows), so that every fold's projections below share
        # one scale
        centre, spread = _robust_scale(U @ line)
        return UntangledClassState(
            mean=stats.mean,
            direction=whitener @ line / spread,
            offset=centre / spread,
            group_fraction=float(group.mean()),
            separation=separation,
            gain=float(gain),
            n=stats.n,
        )

    def _cross_fitted(self, cls: UntangledClassState, stats: MeanCov, whitener: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Each sampled row projected on the line untangled from the other folds."""
        n = len(X)
        if n < 10 * self.folds:  # too few rows to leave any out
            return cls.projection(X)
        out = np.empty(n)
        fold = np.arange(n) % self.folds  # the sample is in position order: deterministic
        for f in range(self.folds):
            held = fold == f
            part = self._fit_class(stats, whitener, X[~held])
            # the held-out rows on their own bulk's scale: a line fitted to the other
            # folds spreads its own rows more widely than unseen ones
            proj = (X[held] - part.mean) @ part.direction
            centre, spread = _robust_scale(proj)
            out[held] = (proj - centre) / spread
        return out

    def statistic(self, state: DetectorState, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._per_class(state, X, y, lambda cls, Xc: cls.projection(Xc))

    def score(self, state: DetectorState, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.maximum(self.statistic(state, X, y), 0.0) ** 2

    def evaluate(self, state: DetectorState, X: np.ndarray, y: np.ndarray):
        stat = self.statistic(state, X, y)
        return np.maximum(stat, 0.0) ** 2, stat

    def explain(self, state: DetectorState, label: Any, strength: float) -> str:
        cls = state.classes[label]
        return (
            f"lies {strength:.1f} SD from the bulk of class {fmt_label(label)}, towards a second identity "
            f"inside it: a sub-group with a centre of its own, {cls.group_fraction:.0%} of the class's sample, "
            f"{cls.separation:.1f} SD from the bulk, measured in the spread the other classes show within "
            "themselves"
        )


def _robust_scale(values: np.ndarray) -> tuple[float, float]:
    """Median and normal-consistent MAD (the standard deviation where the MAD is 0)."""
    centre = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - centre)))
    if not spread > 0:
        spread = float(values.std())
    return centre, spread if spread > 0 else 1.0


def untangle(U: np.ndarray, starts: int, max_iterations: int):
    """Split whitened, centred rows ``U`` into two identities (SCAn's local model).

    Returns ``(gain, group, line)``: the gain ``n p (1 - p) |m1 - m0|^2 / 2`` of the best
    split, a mask of the smaller identity's rows, and ``line = m1 - m0`` (from the main
    identity's mean to the smaller one's, in whitened coordinates); None when no start
    leaves two identities of at least two rows each.
    """
    n, d = U.shape
    if n < 4:
        return None
    w, V = np.linalg.eigh(U.T @ U / n)
    best = None
    for j in range(1, min(starts, d) + 1):
        s = U @ V[:, -j]
        fit = fit_two_groups(s)
        group = (s - fit.cut) * fit.side > 0 if fit.cut is not None else s > np.median(s)
        split = _alternate(U, group, max_iterations)
        if split is not None and (best is None or split[0] > best[0]):
            best = split
    return best


def _alternate(U: np.ndarray, group: np.ndarray, max_iterations: int):
    """SCAn's alternation from an initial split: Fisher's discriminant between the two
    identities (shared identity covariance in whitened coordinates, the shares as
    priors), then the means again, until no row moves."""
    n = len(U)
    for _ in range(max_iterations):
        k = int(group.sum())
        if k < 2 or k > n - 2:
            return None
        m1, m0 = U[group].mean(axis=0), U[~group].mean(axis=0)
        line = m1 - m0
        threshold = 0.5 * float((m1 + m0) @ line) + math.log((n - k) / k)
        moved = U @ line > threshold
        if np.array_equal(moved, group):
            break
        group = moved
    k = int(group.sum())
    if k < 2 or k > n - 2:
        return None
    if 2 * k > n:  # the smaller identity is the group
        group = ~group
        k = n - k
    m1, m0 = U[group].mean(axis=0), U[~group].mean(axis=0)
    line = m1 - m0
    p = k / n
    return 0.5 * n * p * (1 - p) * float(line @ line), group, line
