"""Spectral signatures (Tran, Li and Madry, 2018)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, Mapping

import numpy as np

from ._params import BOOL, NONE, Interval
from ._pooled import Pooled, affinity_test
from .base import (
    ALL_KINDS,
    MIN_DISTINCT_FOR_SHAPE,
    Detector,
    DetectorState,
    group_rows_by_label,
    label_sort_key,
    register,
)
from .calibration import Z_MAX, z_of_log_p
from .decision import ClassVerdict
from .logconcave import log_concave_p
from .mixture import TwoGroupFit, fit_two_groups
from .refine import Refinement, refine_group
from .stats import ClassSample, MeanCov

#: Of the principal directions searched below the top one, how many get the two-group
#: fit (those whose projections stray furthest from one Gaussian).
SCREENED = 4
#: A principal direction with less than this share of the top one's variance is not
#: searched (:func:`searchable`): float32 rounding of the rows reaches about 1e-7 of it.
RESOLVED = 1e-6
#: The largest share of its class a refined group may hold for the one-hump test to read
#: it along its discriminant (:meth:`ClassMeanCovDetector.group_shape`): poison is a
#: minority of its label, and a natural split of a class into two styles often holds
#: nearly half of it. Chosen on the development part: under the attack families' CNN,
#: clean digit 1 splits 41-47 % / the rest, one hump on the direction it is found on
#: and two on the discriminant; read there, it was judged in 3 of 36 sets.
DISCRIMINANT_VIEW_MAX_SHARE = 1.0 / 3.0
#: The probability that a shifted copy of some of a class's rows, found on a searched
#: direction, is taken for the class's own tail (:func:`wider_than_a_shifted_copy`).
TAIL_LEVEL = 1e-6


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
    refinement : Refinement or None
        The discriminant direction of the sample's group (:mod:`.refine`), used to cut
        the class once it is judged poisoned; None when there is no group to cut or the
        detector's own direction separates it as well.
    settled : bool
        Whether ``direction`` is now the refinement's (the class was judged poisoned).
    """

    mean: np.ndarray
    direction: np.ndarray
    eigenvalue: float
    explained: float
    n: int
    refinement: Refinement | None = None
    settled: bool = False
    #: Which principal direction ``direction`` is (0: the top one; see ``directions``).
    component: int = 0
    #: Held from fitting until the class is judged, then dropped: the class sample's rows,
    #: the covariance's eigendecomposition (or a callable giving it), and the principal
    #: directions that may be searched.
    pending: tuple | None = None

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

    def group_shape(self, state: DetectorState, verdict: ClassVerdict, label: Any) -> float | None:
        """The one-hump test (:meth:`.base.Detector.group_shape`) on two views of the
        class, the smaller p-value times two (Bonferroni over the views): the statistic
        the group was found on and, where the class has a refinement (:mod:`.refine`)
        whose group holds at most :data:`DISCRIMINANT_VIEW_MAX_SHARE` of it, each half of
        its sample projected on the discriminant fitted on the other half. A group found
        on a direction that mixes it with the class's own strong variance is a shoulder
        on one hump there and two humps along the discriminant; fitted on the other
        half, that direction does not make the humps it is judged on, and a log-concave
        class projected on a fixed direction stays log-concave."""
        p = super().group_shape(state, verdict, label)
        ref = getattr(state.classes.get(label), "refinement", None)
        crossed = getattr(ref, "crossed", None)
        if (p is None or crossed is None or ref.fit.weight > DISCRIMINANT_VIEW_MAX_SHARE
                or len(np.unique(crossed)) < MIN_DISTINCT_FOR_SHAPE):
            return p
        return min(1.0, 2.0 * min(p, log_concave_p(crossed)[0]))

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
    _parameter_constraints = {"needs_affinity": [BOOL], "directions": [Interval(int, 1, None), NONE]}
    #: Without peers (two or three classes), judged by its own shape where the other
    #: classes are single humps (chosen on the development part: docs/detectors.md).
    alone_by_shape = True

    @classmethod
    def params_for(cls, kind: str, probability_labels: tuple = ()) -> dict:
        # one-hot categories split a clean table into far-apart groups: a group must
        # also look like other classes (see group_affinity)
        return {"needs_affinity": True} if kind == "tabular" else {}

    def __init__(self, *, needs_affinity: bool = False, directions: int | None = 32):
        self.needs_affinity = needs_affinity
        self.directions = directions

    def extract_output(
        self, accumulator: dict, samples: Mapping[Any, ClassSample]
    ) -> DetectorState:
        self._validate_params()
        state = DetectorState(self.name)
        for label, stats, eigvals, eigvecs in self._eigen(accumulator):
            k = min(searchable(eigvals), self.directions or len(eigvals))  # None: every one
            self._store(state, label, stats, eigvecs[:, -1].copy(), eigvals, samples,
                        (eigvals, eigvecs), eigvecs[:, ::-1][:, :k].copy())
        return state

    @staticmethod
    def _store(state: DetectorState, label: Any, stats: MeanCov, direction: np.ndarray,
               eigvals: np.ndarray, samples: Mapping[Any, ClassSample], raw_eigen=None,
               searched=None) -> None:
        """Keep one class's state (its direction and the spectrum it tops, ascending) and
        the class sample's statistic for the decision; until the class is judged, also
        the sample itself, the covariance's eigendecomposition (``raw_eigen``, when the
        caller has it) and the principal directions to search (``searched``, columns)."""
        top = float(max(eigvals[-1], 0.0))
        total = float(max(eigvals.clip(min=0).sum(), 0.0))
        cls = SpectralClassState(
            mean=stats.mean,
            direction=direction,
            eigenvalue=top,
            explained=top / total if total > 0 else 0.0,
            n=stats.n,
        )
        sample = samples.get(label)
        if sample is not None and len(sample):
            state.calibration[label] = cls.projection(sample.X)
            eigen = raw_eigen or (lambda: np.linalg.eigh(stats.covariance()))
            cls = dataclasses.replace(cls, pending=(np.asarray(sample.X), eigen, searched, total))
        state.classes[label] = cls

    def judge(self, state: DetectorState, label: Any, class_rows: int, group_test) -> ClassVerdict:
        """The separated-group test on the top direction's projections; where that
        direction holds no group, on the next principal directions (``directions``); and,
        for a group the class's own yardstick finds improbable, its discriminant direction
        for the cut (:mod:`.refine`, used once the class is judged: :meth:`settle`)."""
        verdict = super().judge(state, label, class_rows, group_test)
        cls = state.classes.get(label)
        if cls is None or cls.pending is None:
            return verdict
        X, eigen, searched, total = cls.pending
        cls = dataclasses.replace(cls, pending=None)
        if not verdict.extra.get("candidate") and searched is not None and searched.shape[1] > 1:
            found = self._search(X, cls, searched, total, label, class_rows, group_test)
            if found is not None and found[1].extra["own_p"] < verdict.extra.get("own_p", 1.0):
                cls, verdict = found
                state.calibration[label] = cls.projection(X)
        own_p = verdict.extra.get("own_p")
        if verdict.extra.get("candidate") and own_p is not None and own_p < group_test.alpha:
            cls = dataclasses.replace(cls, refinement=refine_group(
                X, cls.mean, state.calibration[label], eigen=eigen, max_own_p=1.0))
        state.classes[label] = cls
        return verdict

    def _search(self, X, cls, searched, total, label, class_rows, group_test):
        """The next principal directions' groups, when the top one holds none.

        A group that shifts a few % of a class adds less variance than the class's own
        strongest directions, so its direction is one of the next few (its own variance
        still stands above the bulk). Where the class's covariance is far from round, a
        shift that is large *in that covariance* lies mostly along its weakest
        directions, which ``directions=None`` searches too: every direction that holds
        variance (:func:`searchable`). It is not the default: on a sparse representation
        (hashed n-grams) the weakest directions hold a few rows that share a rare
        feature, and they split off as a group (docs/detectors.md). Of the next ones, the
        :data:`SCREENED` whose projections stray furthest from one Gaussian (the
        Jarque-Bera statistic: skewness and kurtosis), among those a Gaussian gives with
        probability below 0.05 / k (k: the directions searched, the top one included),
        get the two-group fit; the one whose split is least probable under the class's
        own one-group yardstick is kept. Its own-null p-value is multiplied by k
        (Bonferroni), so the search costs the class's calibration nothing.
        """
        P = (np.asarray(X, dtype=np.float64) - cls.mean) @ searched[:, 1:]  # the projections
        S = P - P.mean(axis=0)
        sd = S.std(axis=0)
        ok = sd > 0
        z = np.zeros_like(S)
        z[:, ok] = S[:, ok] / sd[ok]
        n = S.shape[0]
        jb = n * ((np.mean(z**3, axis=0) ** 2) / 6 + ((np.mean(z**4, axis=0) - 3) ** 2) / 24)
        k = searched.shape[1]
        # a Gaussian projection's JB is chi-square with 2 degrees of freedom: P(JB > x) =
        # exp(-x / 2); only directions a Gaussian gives with probability below 0.05 / k
        # are fitted (a separated group's JB is far beyond that)
        jb[~ok | (jb <= 2 * math.log(k / 0.05))] = -1.0
        order = np.argsort(-jb, kind="stable")[:SCREENED]
        best = None
        for j in order:
            if jb[j] < 0:
                continue
            fit = fit_two_groups(P[:, j])
            v = group_test.decide(label, self.name, P[:, j], class_rows, two_sided=self.two_sided, fit=fit)
            if not v.extra.get("candidate") or wider_than_a_shifted_copy(fit):
                continue
            if best is None or v.extra["own_p"] < best[1].extra["own_p"]:
                best = (int(j) + 1, v)
        if best is None:
            return None
        j, v = best
        p = min(1.0, v.extra["own_p"] * k)
        variance = float(sd[j - 1] ** 2)
        found = dataclasses.replace(
            cls, direction=searched[:, j].copy(), component=j, eigenvalue=variance,
            explained=variance / total if total > 0 else 0.0,
        )
        extra = dict(v.extra, own_p=p, evidence=z_of_log_p(math.log(p)) if p > 0 else Z_MAX,  # p < 1 where kept
                     direction=j + 1, directions_searched=k)
        note = f"along principal direction {j + 1} of the class (the top one holds no group): {v.note}"
        return found, dataclasses.replace(v, note=note, extra=extra)

    def settle(self, state: DetectorState, label: Any, verdict: ClassVerdict) -> ClassVerdict:
        """A class judged poisoned is cut along its group's discriminant direction
        (:mod:`.refine`): the state's direction, the sample's statistic and the verdict's
        cut, centre and scale become the refinement's; the judgment (p-value, level) stays."""
        cls = state.classes.get(label)
        ref = getattr(cls, "refinement", None)
        if not verdict.poisoned or ref is None or cls.settled:
            return verdict
        state.classes[label] = dataclasses.replace(cls, direction=ref.direction, settled=True)
        state.calibration[label] = ref.statistic
        f = ref.fit
        return dataclasses.replace(
            verdict,
            cut=f.cut,
            side=f.side,
            center=f.mean_main,
            scale=f.sd_main,
            group_center=f.mean_group,
            group_fraction=f.weight,
            separation=f.separation,
            note=(
                f"{verdict.note}; cut along the direction that best separates the group "
                f"(separation {ref.separation_before:.1f} -> {ref.separation_after:.1f} on "
                "held-out halves of the sample)"
            ),
            extra=dict(
                verdict.extra,
                refined={
                    "components": ref.components,
                    "separation_before": ref.separation_before,
                    "separation_after": ref.separation_after,
                },
            ),
        )

    def statistic_label(self, state: DetectorState, label: Any) -> str:
        cls = state.classes.get(label)
        if cls is not None and cls.settled:
            return "projection on the direction that best separates the class's suspected group"
        if cls is not None and cls.component:
            return f"projection on principal direction {cls.component + 1}"
        return self.statistic_name

    def statistic(self, state: DetectorState, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._per_class(state, X, y, lambda cls, Xc: cls.projection(Xc))

    def score(self, state: DetectorState, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.statistic(state, X, y) ** 2

    def evaluate(self, state: DetectorState, X: np.ndarray, y: np.ndarray):
        stat = self.statistic(state, X, y)
        return stat * stat, stat

    def explain(self, state: DetectorState, label: Any, strength: float) -> str:
        cls = state.classes[label]
        if cls.settled:
            return _settled_words(strength)
        if cls.component:
            return (
                f"lies {strength:.1f} SD from the class's main mass along its principal "
                f"direction {cls.component + 1} ({cls.explained:.0%} of the class's variance)"
            )
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
    alone_by_shape = False  # its statistic's shape without peers was not measured
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
        if cls.settled:
            return _settled_words(strength)
        return (
            f"lies {strength:.1f} SD from the class's main mass along the direction in which "
            f"it varies most relative to the other classes ({cls.explained:.0%} of that relative variance)"
        )


def searchable(eigvals: np.ndarray) -> int:
    """How many principal directions (from the top) hold variance: at least
    :data:`RESOLVED` of the top one's. Below it a direction is float rounding (or a unit
    that never varies), and its projections a few stray values, not a group."""
    top = float(eigvals.max()) if eigvals.size else 0.0
    return max(1, int(np.count_nonzero(eigvals >= RESOLVED * top))) if top > 0 else 1


def wider_than_a_shifted_copy(fit: TwoGroupFit, level: float = TAIL_LEVEL) -> bool:
    """Whether a two-group ``fit`` of a searched projection is the class's own tail
    rather than a shifted copy of some of its rows.

    The search looks for a share of the class moved along a direction: along it, the
    moved rows keep the class's spread. A skewed or heavy tail fits two Gaussians too,
    as a main mass and a *wider* minor component a little way off, which the Gaussian
    one-group yardstick finds far too improbable. The split is a tail when the minor
    component's variance exceeds the main mass's by more than a copy's would with
    probability ``level``: a one-sided F test of the EM fit's two variances, with the
    rows each component holds as degrees of freedom."""
    # SciPy: imported on first use, by the detectors that run
    from scipy import special

    group_rows = fit.weight * fit.n
    if fit.sd_main <= 0 or fit.sd_group <= fit.sd_main or group_rows < 2:
        return False
    ratio = (fit.sd_group / fit.sd_main) ** 2
    return bool(special.fdtrc(group_rows - 1, fit.n - group_rows - 1, ratio) < level)  # F upper tail


def _settled_words(strength: float) -> str:
    return (
        f"lies {strength:.1f} SD from the class's main mass along the direction that best "
        "separates the class's suspected group from the rest"
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
