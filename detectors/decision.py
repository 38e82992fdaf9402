"""Decisions, kept apart from scores: does a class hold poison, and where is the cut?

A detector turns every row into a number. Whether a class is poisoned is a different
question, answered here from the distribution of those numbers over a uniform sample of
the class, and from how that class compares with the other classes of the same scan.
Flagging "the top k % of every class" (what makes the usual implementations quarantine
clean data) never happens.

The separated-group test (:class:`GroupTest`, for spectral signatures and SPECTRE; and
:func:`judge_scan`, which activation clustering shares) works in two steps:

1. per class, one and two Gaussian components are fitted to the 1-D statistic (EM). The
   two-group split is measured against the class's own one-group yardstick: how often
   one Gaussian group of the same size splits as well (:func:`.calibration.own_null`).
2. once every class is fitted, each class's evidence is compared with its peers' (a
   poisoned class stands out from the other classes; natural sub-populations that every
   class has do not), or, with too few classes for peers, the group's rows must look like
   other classes (they were taken from them). A class is judged poisoned when both its
   own-null and its peer p-value are below ``alpha / (classes x detectors)``: the
   chance that a clean scan has any class judged poisoned stays below ``alpha``.

The cut is where the group's posterior probability reaches one half, between the two
means. A row is flagged when it lies beyond the cut on the group's side.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Mapping

import numpy as np

from ._params import Interval, ParamsMixin

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class TwoGroupFit:
    """Maximum-likelihood fit of one and two 1-D Gaussian components."""

    n: int
    weight: float  # share of the minor component
    mean_group: float
    sd_group: float
    mean_main: float
    sd_main: float
    delta_bic: float  # BIC(one component) - BIC(two components); > 0 favours two
    separation: float  # Ashman's D
    side: int  # +1 when the group lies above the main mass, -1 below
    cut: float | None  # posterior 1/2 point between the means; None when none exists


def _log_normal(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
    z = (x - mean) / sd
    return -0.5 * z * z - math.log(sd) - _LOG_SQRT_2PI


def _em_two(x: np.ndarray, init_masks: np.ndarray, var_floor: float, max_iter: int):
    """EM for a two-component 1-D Gaussian mixture, from several hard initial splits at
    once (one row of ``init_masks`` each); a start stops iterating once it has converged.
    Returns the fit of best likelihood as ``(w, m1, s1, m2, s2, loglik)`` or None."""
    n = x.shape[0]
    starts = init_masks.shape[0]
    r = init_masks.astype(np.float64)  # (k, n) responsibilities of component 1
    final = np.full((starts, 6), np.nan)
    final[:, 5] = -np.inf
    active = np.arange(starts)
    ll_prev = np.full(starts, -np.inf)
    for _ in range(max_iter):
        ra = r[active]
        n1 = ra.sum(axis=1)
        n2 = n - n1
        alive = (n1 > 1e-9) & (n2 > 1e-9)
        n1 = np.where(alive, n1, 1.0)
        n2 = np.where(alive, n2, 1.0)
        m1 = (ra @ x) / n1
        m2 = ((1 - ra) @ x) / n2
        d1 = x[None, :] - m1[:, None]
        d2 = x[None, :] - m2[:, None]
        v1 = np.maximum((ra * d1 * d1).sum(axis=1) / n1, var_floor)
        v2 = np.maximum(((1 - ra) * d2 * d2).sum(axis=1) / n2, var_floor)
        w = np.clip(n1 / n, 1e-300, 1 - 1e-16)
        l1 = (np.log(w) - 0.5 * np.log(v1) - _LOG_SQRT_2PI)[:, None] - 0.5 * d1 * d1 / v1[:, None]
        l2 = (np.log(1 - w) - 0.5 * np.log(v2) - _LOG_SQRT_2PI)[:, None] - 0.5 * d2 * d2 / v2[:, None]
        lse = np.logaddexp(l1, l2)
        ll = np.where(alive, lse.sum(axis=1), -np.inf)
        r[active] = np.exp(l1 - lse)
        final[active] = np.stack([w, m1, np.sqrt(v1), m2, np.sqrt(v2), ll], axis=1)
        with np.errstate(invalid="ignore"):  # -inf - -inf for starts that died
            done = ~alive | (ll - ll_prev[active] <= 1e-8 * np.abs(ll))
        ll_prev[active] = ll
        active = active[~done]
        if active.size == 0:
            break
    if not np.isfinite(final[:, 5]).any():
        return None
    b = int(np.argmax(final[:, 5]))  # first best: deterministic
    return tuple(float(v) for v in final[b])


def _posterior_cut(w, m_group, s_group, m_main, s_main) -> float | None:
    """Point between the means where the group's posterior probability is one half."""

    def f(x: float) -> float:
        a = math.log(w) + float(_log_normal(np.array([x]), m_group, s_group)[0])
        b = math.log(1 - w) + float(_log_normal(np.array([x]), m_main, s_main)[0])
        return a - b

    lo, hi = m_main, m_group
    f_lo, f_hi = f(lo), f(hi)
    if f_hi <= 0 or f_lo >= 0:
        return None  # the group never dominates (or the main mass never does)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        f_mid = f(mid)
        if f_mid > 0:
            hi = mid
        else:
            lo = mid
        if abs(hi - lo) <= 1e-12 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


def fit_two_groups(x: np.ndarray, *, max_iter: int = 100) -> TwoGroupFit:
    """Fit one and two Gaussian components to a 1-D sample.

    Deterministic: EM starts from fixed splits (the top and the bottom 1, 3, 10 and 30 %
    of the sample) and the best likelihood wins.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"need at least 3 values to fit two groups, got {n}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the statistic contains NaN or infinite values")
    mean = float(x.mean())
    var = float(x.var())
    if var <= 0:
        return TwoGroupFit(n, 0.0, mean, 0.0, mean, 0.0, 0.0, 0.0, 1, None)
    var_floor = var * 1e-6
    ll_one = float(_log_normal(x, mean, math.sqrt(var)).sum())

    order = np.argsort(x, kind="stable")
    masks = []
    for q in (0.01, 0.03, 0.1, 0.3):
        k = max(1, int(round(q * n)))
        for tail in (order[-k:], order[:k]):
            mask = np.zeros(n, dtype=bool)
            mask[tail] = True
            masks.append(mask)
    best = _em_two(x, np.array(masks), var_floor, max_iter)
    if best is None:
        return TwoGroupFit(n, 0.0, mean, math.sqrt(var), mean, math.sqrt(var), 0.0, 0.0, 1, None)
    w, m1, s1, m2, s2, ll_two = best
    if w > 0.5:  # name the minor component "group"
        w, m1, s1, m2, s2 = 1 - w, m2, s2, m1, s1
    # BIC = k ln n - 2 ll; one component has 2 parameters, two have 5.
    delta_bic = (2 * math.log(n) - 2 * ll_one) - (5 * math.log(n) - 2 * ll_two)
    separation = abs(m1 - m2) / math.sqrt(0.5 * (s1 * s1 + s2 * s2))
    side = 1 if m1 >= m2 else -1
    cut = _posterior_cut(w, m1, s1, m2, s2) if w > 0 else None
    return TwoGroupFit(n, w, m1, s1, m2, s2, delta_bic, separation, side, cut)


class GroupTest(ParamsMixin):
    """The separated-group test that decides whether a class holds poison.

    Two steps. Per class (:meth:`decide`, run where the class is fitted): the class's
    statistic is split into two Gaussian components, and the split is measured against
    the class's own one-group yardstick (:func:`.calibration.own_null`). Then, once every
    class of the scan is fitted (:func:`judge_scan`): the class is compared with its peers
    and its group with the other classes, and judged at a level that holds the scan's
    false alarms to ``alpha``.

    What counts as a group is a definition, not a threshold: the minor component lies on
    a side the detector calls suspicious, holds between ``min_group_fraction`` and
    ``max_group_fraction`` of the class and at least ``min_group_rows`` sampled rows, and
    outweighs the main mass somewhere between the two means (where the cut is put).

    Parameters
    ----------
    alpha : float, default=0.05
        Family-wise false-alarm probability of a scan: the chance that a clean scan has
        *any* class judged poisoned by the group detectors (spectral, SPECTRE, activation
        clustering), held by a Bonferroni correction over classes x detectors. Each
        class and detector is tested at ``alpha / (classes x detectors)``.
    min_group_fraction : float, default=0.005
        Smallest share of the class a group may hold.
    max_group_fraction : float, default=0.5
        Largest share of the class a group may hold; a majority is not an outlier group.
    min_group_rows : int, default=5
        Fewest sampled rows that make a group.
    min_rows : int, default=20
        Fewest sampled rows for which the test is run at all.
    """

    _parameter_constraints = {
        "alpha": [Interval(Real, 0, 1, closed="neither")],
        "min_group_fraction": [Interval(Real, 0, 0.5, closed="left")],
        "max_group_fraction": [Interval(Real, 0, 0.5, closed="right")],
        "min_group_rows": [Interval(int, 1, None)],
        "min_rows": [Interval(int, 3, None)],
    }

    def __init__(
        self,
        *,
        alpha: float = 0.05,
        min_group_fraction: float = 0.005,
        max_group_fraction: float = 0.5,
        min_group_rows: int = 5,
        min_rows: int = 20,
    ):
        self.alpha = alpha
        self.min_group_fraction = min_group_fraction
        self.max_group_fraction = max_group_fraction
        self.min_group_rows = min_group_rows
        self.min_rows = min_rows

    def level(self, tests: int) -> float:
        """The level each of ``tests`` class x detector tests is run at."""
        self._validate_params()
        return self.alpha / max(int(tests), 1)

    def decide(
        self,
        label: Any,
        detector: str,
        statistic: np.ndarray,
        class_rows: int,
        *,
        two_sided: bool,
    ) -> "ClassVerdict":
        """Measure one class's group from its sampled statistic (the first step).

        The verdict returned is never ``poisoned``: :func:`judge_scan` decides once the
        class's peers are known. It carries the group (cut, side, share, separation),
        ``extra["candidate"]`` (whether the split is a group at all), the own-null
        p-value ``extra["own_p"]`` and the evidence on a z scale ``extra["evidence"]``.

        Parameters
        ----------
        label : the class.
        detector : name of the detector that produced the statistic.
        statistic : ndarray of shape (k,)
            The detector's decision statistic on a uniform sample of the class.
        class_rows : int
            Rows of the class in the whole input (to express sizes as row counts).
        two_sided : bool
            Whether a group below the main mass is suspicious too.
        """
        from .calibration import own_null

        self._validate_params()
        statistic = np.asarray(statistic, dtype=np.float64)
        k = statistic.shape[0]
        base = dict(label=label, detector=detector, class_rows=int(class_rows), sample_rows=k)
        if k < self.min_rows:
            return ClassVerdict(
                **base,
                poisoned=False,
                note=f"too few sampled rows to judge ({k} < {self.min_rows})",
                extra={"candidate": False},
            )
        fit = fit_two_groups(statistic)
        own_p, z = own_null(fit) if fit.sd_main > 0 else (1.0, 0.0)
        reasons = []
        if fit.weight < self.min_group_fraction or fit.weight * k < self.min_group_rows:
            reasons.append(f"group too small ({fit.weight:.2%} of the class)")
        if fit.weight > self.max_group_fraction:
            reasons.append(f"group too large ({fit.weight:.2%} of the class)")
        if not two_sided and fit.side < 0:
            reasons.append("the separated group has low scores")
        if fit.cut is None:
            reasons.append("the group never outweighs the main mass")
        return ClassVerdict(
            **base,
            poisoned=False,
            note="; ".join(reasons)
            or f"a group of about {fit.weight:.1%} of the class (separation {fit.separation:.1f})",
            cut=fit.cut if not reasons else None,
            group_fraction=fit.weight,
            separation=fit.separation,
            delta_bic=fit.delta_bic,
            center=fit.mean_main,
            scale=fit.sd_main,
            group_center=fit.mean_group,
            side=fit.side,
            extra={"candidate": not reasons, "own_p": own_p, "evidence": z},
        )


def judge_scan(
    verdicts: Mapping[Any, "ClassVerdict"],
    level: float,
    affinity,
    *,
    peer_floor: float = 1.0,
    needs_affinity: bool = False,
    alone_by_affinity: bool = True,
) -> dict:
    """Judge every class of one detector against its peers (the second step).

    ``verdicts`` maps each class to the first step's verdict (:meth:`GroupTest.decide`,
    or a detector's own with the same ``extra`` keys). A candidate class is judged
    poisoned when its p-value is below ``level``. The p-value is the larger of (an
    intersection-union test: each part must hold)

    * ``own_p``, the class's own one-group null (absent: no such gate), and
    * the peer p-value: the class's ``evidence`` against the same figure in the other
      classes of the scan (:func:`.calibration.peer_p_value`; their spread taken as at
      least ``peer_floor``). With fewer than three other classes there are no peers:
      then, if ``alone_by_affinity``, the affinity p-value stands in (``affinity(label,
      verdict)`` returns ``(means, p)`` for "the group's rows look more like other
      classes than the rest of the class", or None when it cannot be tested); otherwise
      the class cannot be judged poisoned.

    With ``needs_affinity`` (tables, where one-hot categories split clean classes into
    far-apart groups) the affinity p-value must be below ``level`` too. Affinity is
    computed only for candidates that pass their own-null gate and need it.
    """
    from .calibration import peer_p_value

    evidence = {label: v.extra.get("evidence") for label, v in verdicts.items()}
    # step down from the class with the strongest evidence (the generalised ESD idea):
    # a class judged poisoned is no one's peer, so two or three poisoned classes do not
    # hide one another
    order = sorted(
        verdicts, key=lambda lb: -(evidence[lb] if evidence[lb] is not None else -math.inf)
    )
    outliers: set = set()
    out = {}
    for label in order:
        v = verdicts[label]
        extra = dict(v.extra)
        peers = [e for other, e in evidence.items() if other != label and other not in outliers and e is not None]
        e = evidence[label]
        p_peer = peer_p_value(e, peers, peer_floor) if e is not None else None
        own_p = extra.get("own_p")
        extra["peer_p"] = p_peer
        if not extra.get("candidate"):
            # no group to judge; its p-value still says how far the class stands out
            p = max(own_p if own_p is not None else 0.0, p_peer if p_peer is not None else 1.0)
            out[label] = dataclasses.replace(v, poisoned=False, cut=None, p_value=p, level=level, extra=extra)
            continue
        p_aff, means = None, None
        gated = own_p is None or own_p < level
        if gated and (needs_affinity or (p_peer is None and alone_by_affinity)):
            tested = affinity(label, v)
            if tested is not None:
                means, p_aff = tested
                extra["other_class_confidence"] = [means[1], means[0]]
                extra["other_class_confidence_p"] = p_aff
        if p_peer is not None:
            p_ev = p_peer
        else:
            p_ev = p_aff if (p_aff is not None and alone_by_affinity) else 1.0
        if needs_affinity:
            p_ev = max(p_ev, 1.0 if p_aff is None else p_aff)
        p = max(own_p if own_p is not None else 0.0, p_ev)
        poisoned = p < level
        words = []
        if own_p is not None:
            words.append(f"one group would split like this with p = {own_p:.1e}")
        if p_peer is not None:
            words.append(f"against the other classes p = {p_peer:.1e}")
        elif not alone_by_affinity:
            words.append("too few classes to compare it with, so it cannot be judged")
        if p_aff is not None:
            words.append(
                f"its rows look like other classes (confidence {means[1]:.2f} vs {means[0]:.2f}, p = {p_aff:.1e})"
                if means[1] > means[0]
                else f"its rows look no more like other classes than the rest (confidence {means[1]:.2f} vs {means[0]:.2f})"
            )
        head = v.note
        note = f"{head}: {'; '.join(words)}; p = {p:.1e} {'<' if poisoned else '>='} level {level:.1e}"
        if poisoned:
            outliers.add(label)
        out[label] = dataclasses.replace(
            v, poisoned=poisoned, cut=v.cut if poisoned else None, note=note, p_value=p, level=level, extra=extra
        )
    return {label: out[label] for label in verdicts}


@dataclass(frozen=True)
class ClassVerdict:
    """One detector's decision for one class.

    ``poisoned`` says whether the class holds a separated group; when it does, rows whose
    statistic lies beyond ``cut`` on the group's ``side`` are flagged. ``center`` and
    ``scale`` describe the class's main mass, so :meth:`strength` puts rows of every class
    on one scale (distance from the main mass in its standard deviations).
    """

    label: Any
    detector: str
    poisoned: bool
    class_rows: int
    sample_rows: int
    note: str
    cut: float | None = None
    side: int = 1
    center: float = 0.0
    scale: float = 1.0
    group_center: float = 0.0
    group_fraction: float = 0.0
    separation: float = 0.0
    delta_bic: float = 0.0
    #: Calibrated evidence: the probability that a clean class of this scan shows evidence
    #: at least this strong for this detector (None where the detector has no such test).
    p_value: float | None = None
    #: The level ``p_value`` must fall below for the class to be judged poisoned, after
    #: the scan-wide correction over classes x detectors.
    level: float | None = None
    extra: dict = field(default_factory=dict)

    def flags(self, statistic: np.ndarray) -> np.ndarray:
        """Boolean mask of the rows this verdict flags."""
        statistic = np.asarray(statistic, dtype=np.float64)
        if not self.poisoned or self.cut is None:
            return np.zeros(statistic.shape[0], dtype=bool)
        return self.side * (statistic - self.cut) > 0

    def strength(self, statistic: np.ndarray) -> np.ndarray:
        """Distance from the main mass towards the group, in the main mass's SDs."""
        scale = self.scale if self.scale > 0 else 1.0
        return self.side * (np.asarray(statistic, dtype=np.float64) - self.center) / scale

    def to_dict(self) -> dict:
        out = {
            "detector": self.detector,
            "poisoned": self.poisoned,
            "note": self.note,
            "class_rows": self.class_rows,
            "sample_rows": self.sample_rows,
            "cut": self.cut,
            "side": "above" if self.side > 0 else "below",
            "center": self.center,
            "scale": self.scale,
            "group_center": self.group_center,
            "group_fraction": self.group_fraction,
            "separation": self.separation,
            "delta_bic": self.delta_bic,
            "p_value": self.p_value,
            "level": self.level,
        }
        out.update(self.extra)
        return out


class ExcessTest(ParamsMixin):
    """Does a class hold more strongly disputed labels than its own calibration allows?

    For per-row evidence (a label the data disagree with), not groups. The detector
    counts, in the class's sample, the rows whose label is *strongly* disputed (a fixed
    definition of the evidence, such as "another class 10 times more likely") and says
    how many such rows a clean class would have: ``expected``, the sum over the sampled
    rows of the probability that the row carries this label *and* would be strongly
    disputed with it, when labels are drawn from the detector's calibrated out-of-fold
    model (a model of the scanned data itself, not a constant). Under that null the count
    is a sum of independent Bernoulli variables; its upper tail is taken from the Poisson
    distribution of the same mean, a close and slightly conservative stand-in. A class
    whose labels a model predicts poorly has many disputed rows *and* expects many.

    Random label flips spread thinly: at 5 % over ten classes a class of 180 rows holds
    about 9 of them. So the test has two stages. When the *other* classes' counts pooled
    (leaving out the one with the largest excess, so that one flipped class cannot speak
    for the rest) exceed their pooled expectation at the class level, flipped labels run
    through the data, and a class then needs only ``class_alpha`` on its own rows.

    Parameters
    ----------
    alpha : float, default=0.05
        Family-wise error over the classes of one detector: in a scan whose labels are
        clean (drawn from the calibrated model), the probability that any class is judged
        poisoned is at most ``alpha``. With K classes each class's own test runs at
        ``alpha / (2 K)`` and the pooled stage at ``alpha / (2 K)`` (Bonferroni over
        both). The label detectors' verdicts count only when *every* selected label
        detector judges the class poisoned (:func:`combine`), so no further division by
        the number of label detectors is needed: the family-wise error of the label
        evidence over classes x label detectors is at most ``alpha`` as well.
    min_rows : int, default=3
        Fewest sampled rows counted as evidence that can make a class poisoned.
    class_alpha : float, default=0.05
        Level of a class's own test once the pooled stage has found flipped labels.
    """

    _parameter_constraints = {
        "alpha": [Interval(Real, 0, 1, closed="neither")],
        "min_rows": [Interval(int, 1, None)],
        "class_alpha": [Interval(Real, 0, 1, closed="neither")],
    }

    def __init__(self, *, alpha: float = 0.05, min_rows: int = 3, class_alpha: float = 0.05):
        self.alpha = alpha
        self.min_rows = min_rows
        self.class_alpha = class_alpha

    def level(self, classes: int) -> float:
        """The level of a class's own test (and of the pooled stage) among ``classes``."""
        return self.alpha / (2 * max(int(classes), 1))

    @staticmethod
    def p_value(observed: int, expected: float) -> float:
        """P(a clean class shows at least ``observed`` strong disagreements)."""
        from scipy.stats import poisson

        if observed <= 0:
            return 1.0
        if expected <= 0:
            return 0.0
        return float(poisson.sf(observed - 1, expected))

    def spread(self, evidence: Mapping[Any, tuple], label: Any) -> tuple[int, float, float] | None:
        """Evidence that flipped labels run through the data, for judging ``label``:
        ``(rows counted, rows expected, p)`` pooled over every *other* class except the
        one with the largest excess share, so that neither the class judged nor a single
        flipped class (a targeted flip) can lower the bar for the rest. ``evidence`` maps
        each class to ``(rows counted, sampled rows, rows expected)``. None when fewer
        than two classes remain."""
        others = [e for other, e in evidence.items() if other != label]
        if len(others) < 3:
            return None
        top = max(range(len(others)), key=lambda i: (others[i][0] - others[i][2]) / max(others[i][1], 1))
        rest = others[:top] + others[top + 1 :]
        k = sum(e[0] for e in rest)
        lam = sum(e[2] for e in rest)
        return k, lam, self.p_value(k, lam)

    def decide(
        self,
        label: Any,
        detector: str,
        statistic: np.ndarray,
        class_rows: int,
        cut: float,
        *,
        strong: int,
        expected: float,
        classes: int,
        pooled: tuple[int, float, float] | None = None,
    ) -> "ClassVerdict":
        """Judge one class from ``strong`` sampled rows counted as evidence where a clean
        class has ``expected``, among ``classes`` classes; ``pooled`` is :meth:`spread`
        for this class (None: the class is judged alone). In a class judged poisoned, the
        rows whose ``statistic`` exceeds ``cut`` are flagged."""
        self._validate_params()
        statistic = np.asarray(statistic, dtype=np.float64)
        n = statistic.shape[0]
        beyond = statistic > cut
        k = int(strong)
        p_value = self.p_value(k, expected)
        rest = statistic[~beyond] if (~beyond).any() else statistic
        center = float(np.median(rest)) if rest.size else 0.0
        scale = float(np.median(np.abs(rest - center)) * 1.4826) if rest.size else 1.0
        if not scale > 0:
            scale = float(rest.std()) if rest.size and rest.std() > 0 else 1.0
        base_level = self.level(classes)
        data_flipped = pooled is not None and pooled[2] < base_level
        level = max(self.class_alpha, base_level) if data_flipped else base_level
        extra = {
            "rows_strongly_disputed": k,
            "rows_beyond_cut": int(beyond.sum()),
            "expected_in_clean_class": float(expected),
        }
        if data_flipped:
            extra.update(pooled_rows_strongly_disputed=pooled[0], pooled_expected=pooled[1], pooled_p_value=pooled[2])
        info = dict(
            label=label,
            detector=detector,
            class_rows=int(class_rows),
            sample_rows=n,
            cut=float(cut),
            side=1,
            center=center,
            scale=scale,
            group_fraction=k / n if n else 0.0,
            p_value=p_value,
            level=level,
            extra=extra,
        )
        if k >= self.min_rows and p_value < level:
            note = (
                f"{k} of {n} sampled rows ({k / n:.1%}) strongly disagree with their label where a "
                f"clean class has about {expected:.1f} (p = {p_value:.1e} < {level:.1e})"
            )
            if p_value >= base_level:
                note += (
                    f"; the other classes hold flipped labels too ({pooled[0]} of their sampled rows "
                    f"where {pooled[1]:.1f} are expected, p = {pooled[2]:.1e})"
                )
            return ClassVerdict(poisoned=True, note=note, **info)
        note = (
            f"{k} of {n} sampled rows strongly disagree with their label; about {expected:.1f} "
            f"expected in a clean class (p = {p_value:.2g}, level {level:.1e})"
        )
        return ClassVerdict(poisoned=False, note=note, **info)


def combine(verdicts: dict, finds: dict) -> dict:
    """Which detectors' flags count for one class: ``{detector: bool}``.

    * Backdoor detectors (a separated group inside the class) count on their own: each
      one's verdict is already a conservative, self-contained test.
    * Label detectors (rows the rest of the data contradict) count only when *every*
      selected label detector judged the class poisoned: a cross-fitted model and the
      neighbours are two views of the same question, and the intersection of their
      calibrated tests keeps the family-wise error of the label evidence over classes x
      label detectors within each detector's ``alpha`` (:class:`ExcessTest`).
    """
    label_dets = [d for d in verdicts if finds.get(d) == "flipped labels"]
    labels_agree = bool(label_dets) and all(verdicts[d].poisoned for d in label_dets)
    return {
        d: (v.poisoned if finds.get(d) != "flipped labels" else v.poisoned and labels_agree)
        for d, v in verdicts.items()
    }


def strongest_group(verdicts: dict, active: dict, calibrated: set) -> dict:
    """Keep, among the calibrated group detectors counted for one class, only the one with
    the strongest evidence (smallest p-value; the first in order on a tie).

    Each of them describes the *same* suspected group in its own statistic, and a
    detector can judge a poisoned class rightly while its own group is a poor outline of
    the poison (on a 5 % group shifted 4 SD, SPECTRE's group held 24 % of the class where
    the spectral test's held the 5 %): flagging the union of their groups spends
    precision for nothing. Other detectors are left as they are.
    """
    counted = [d for d in active if active[d] and d in calibrated and verdicts[d].p_value is not None]
    if len(counted) < 2:
        return dict(active)
    best = min(counted, key=lambda d: verdicts[d].p_value)
    return {d: (on and (d == best or d not in counted)) for d, on in active.items()}


def budget_cap(expected_poison_rate: float | None, rows: int) -> int | None:
    """Most rows that may be quarantined: floor(1.5 * R * N), or no cap without R."""
    if expected_poison_rate is None:
        return None
    return int(math.floor(1.5 * expected_poison_rate * rows + 1e-9))


def select_within_budget(
    strength: np.ndarray, positions: np.ndarray, cap: int | None
) -> np.ndarray:
    """Indices of the flagged rows to quarantine, most suspicious first.

    Without a cap every flagged row is kept. With one, the ``cap`` rows of greatest
    strength are kept (ties broken by input position, so the choice is deterministic).
    """
    order = np.lexsort((positions, -np.asarray(strength, dtype=np.float64)))
    if cap is None:
        return order
    return order[:cap]
