"""Decisions, kept apart from scores: does a class hold poison, and where is the cut?

A detector turns every row into a number. Whether a class is poisoned is a different
question, answered here from the distribution of those numbers over a uniform sample of
the class. The test asks for a *separated group*: a minority of rows that sits apart from
the class's main mass. A heavy tail, a skewed class or a few odd rows are not a group;
flagging "the top k % of every class" (what makes the usual implementations quarantine
clean data) never happens.

The test fits one and two Gaussian components to the 1-D statistic (EM) and calls the
class poisoned when all of these hold:

* two components explain the sample much better than one (BIC gain ``min_delta_bic``);
* the minor component holds between ``min_group_fraction`` and ``max_group_fraction``
  of the class, and at least ``min_group_rows`` sampled rows;
* the components are well separated: Ashman's D = |mu1 - mu2| / sqrt((s1^2 + s2^2)/2)
  is at least ``min_separation`` (a mixture is bimodal only for D > 2, and clean
  classes with natural sub-populations reach D = 4 to 5, so the default asks for 6);
* the group lies on a side the detector calls suspicious (one-sided statistics only
  flag their upper side).

The cut is where the group's posterior probability reaches one half, between the two
means. A row is flagged when it lies beyond the cut on the group's side.
"""

from __future__ import annotations

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

    Parameters
    ----------
    min_separation : float, default=6.0
        Smallest Ashman's D between the group and the main mass. Natural sub-populations
        of a clean class (two ways of writing a 7) reach D = 4 to 5 along its top
        direction; relabelled poison sits far beyond that.
    min_delta_bic : float, default=10.0
        Smallest BIC gain of two components over one ("very strong" evidence).
    min_group_fraction : float, default=0.005
        Smallest share of the class the group may hold.
    max_group_fraction : float, default=0.5
        Largest share of the class the group may hold; a majority is not an outlier
        group.
    min_group_rows : int, default=5
        Fewest sampled rows that make a group.
    min_rows : int, default=20
        Fewest sampled rows for which the test is run at all.
    """

    _parameter_constraints = {
        "min_separation": [Interval(Real, 0, None, closed="neither")],
        "min_delta_bic": [Interval(Real, None, None)],
        "min_group_fraction": [Interval(Real, 0, 0.5, closed="left")],
        "max_group_fraction": [Interval(Real, 0, 0.5, closed="right")],
        "min_group_rows": [Interval(int, 1, None)],
        "min_rows": [Interval(int, 3, None)],
    }

    def __init__(
        self,
        *,
        min_separation: float = 6.0,
        min_delta_bic: float = 10.0,
        min_group_fraction: float = 0.005,
        max_group_fraction: float = 0.5,
        min_group_rows: int = 5,
        min_rows: int = 20,
    ):
        self.min_separation = min_separation
        self.min_delta_bic = min_delta_bic
        self.min_group_fraction = min_group_fraction
        self.max_group_fraction = max_group_fraction
        self.min_group_rows = min_group_rows
        self.min_rows = min_rows

    def decide(
        self,
        label: Any,
        detector: str,
        statistic: np.ndarray,
        class_rows: int,
        *,
        two_sided: bool,
    ) -> "ClassVerdict":
        """Judge one class from its sampled statistic.

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
        self._validate_params()
        statistic = np.asarray(statistic, dtype=np.float64)
        k = statistic.shape[0]
        base = dict(label=label, detector=detector, class_rows=int(class_rows), sample_rows=k)
        if k < self.min_rows:
            return ClassVerdict(
                **base,
                poisoned=False,
                note=f"too few sampled rows to judge ({k} < {self.min_rows})",
            )
        fit = fit_two_groups(statistic)
        info = dict(
            group_fraction=fit.weight,
            separation=fit.separation,
            delta_bic=fit.delta_bic,
            center=fit.mean_main,
            scale=fit.sd_main,
            group_center=fit.mean_group,
            side=fit.side,
        )
        reasons = []
        if fit.delta_bic < self.min_delta_bic:
            reasons.append(f"one group explains the scores (BIC gain {fit.delta_bic:.1f})")
        if fit.separation < self.min_separation:
            reasons.append(f"no well-separated group (separation {fit.separation:.2f})")
        if fit.weight < self.min_group_fraction or fit.weight * k < self.min_group_rows:
            reasons.append(f"group too small ({fit.weight:.2%} of the class)")
        if fit.weight > self.max_group_fraction:
            reasons.append(f"group too large ({fit.weight:.2%} of the class)")
        if not two_sided and fit.side < 0:
            reasons.append("the separated group has low scores")
        if fit.cut is None:
            reasons.append("the group never outweighs the main mass")
        if reasons:
            return ClassVerdict(**base, **info, poisoned=False, note="; ".join(reasons))
        return ClassVerdict(
            **base,
            **info,
            poisoned=True,
            cut=fit.cut,
            note=(
                f"a separated group of about {fit.weight:.1%} of the class "
                f"(separation {fit.separation:.1f})"
            ),
        )


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
