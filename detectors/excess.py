"""Does a class hold more strongly disputed labels than its own calibration allows?

:class:`ExcessTest` is the verdict of the label detectors: the count of a class's
strongly disputed rows against the count its calibrated out-of-fold model predicts,
judged against the same evidence computed on labels redrawn from a model of the data
without flips (docs/detectors.md, "The decision").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, Callable, Mapping

import numpy as np

from ._params import NONE, Interval, ParamsMixin
from .decision import ClassVerdict


@dataclass(frozen=True)
class Resampled:
    """Where a class's evidence falls among the evidence of labels redrawn without flips.

    Each share is ``(1 + draws at least as extreme) / (1 + draws)``, a Monte Carlo
    p-value: ``family``, that *some* class of a redraw shows evidence as strong as this
    class's (its smallest Poisson p at most this class's); ``marginal``, that this class
    of a redraw does; ``pooled``, the same family share for the pooled stage
    (:meth:`ExcessTest.spread`; None where the class has no pooled stage)."""

    family: float
    marginal: float
    pooled: float | None
    draws: int


@dataclass(frozen=True)
class Disputed:
    """A class's label evidence: ``strong`` sampled rows strongly disputed where a clean
    class has ``expected``, among ``classes`` classes; ``pooled`` is
    :meth:`ExcessTest.spread` for this class (None: the class is judged alone);
    ``resampled`` where it falls among redrawn labels (:meth:`ExcessTest.resample`)."""

    strong: int
    expected: float
    classes: int
    pooled: tuple[int, float, float] | None = None
    resampled: Resampled | None = None


def _robust_location(rest: np.ndarray) -> tuple[float, float]:
    """Median and MAD scale (the standard deviation where the MAD is 0; 1 for nothing)."""
    center = float(np.median(rest)) if rest.size else 0.0
    scale = float(np.median(np.abs(rest - center)) * 1.4826) if rest.size else 1.0
    if not scale > 0:
        scale = float(rest.std()) if rest.size and rest.std() > 0 else 1.0
    return center, scale


class ExcessTest(ParamsMixin):
    """Does a class hold more strongly disputed labels than its own calibration allows?

    For per-row evidence (a label the data disagree with), not groups. The detector
    counts, in the class's sample, the rows whose label is *strongly* disputed (a fixed
    definition of the evidence, such as "another class 10 times more likely") and says
    how many such rows a clean class would have: ``expected``, the sum over the sampled
    rows of the probability that the row carries this label *and* would be strongly
    disputed with it, when labels are drawn from the detector's calibrated clean model.
    The class's evidence is the Poisson tail of its count at that mean.

    That tail is not the verdict's p-value: the calibration (a temperature and per-label
    floors, :class:`~._pooled.NoiseCalibration`) is fitted on the same labels, and on
    clean labels its fit can put natural label noise into the floors and make the count
    look improbable (docs/detectors.md, "Label consistency"). So the evidence is
    *resampled*: the detector redraws every sampled row's label from a model of the data
    without flips (its out-of-fold probabilities under a temperature alone), computes the
    same evidence, calibration fit included, on each redraw, and a class is judged by
    where its evidence falls among the redraws' (:meth:`resample`, :class:`Resampled`).

    Random label flips spread thinly: at 5 % over ten classes a class of 180 rows holds
    about 9 of them. So the test has two stages. When the *other* classes' counts pooled
    (leaving out the one with the largest excess, so that one flipped class cannot speak
    for the rest) are beyond the family level, flipped labels run through the data, and a
    class then needs only ``class_alpha`` on its own (marginal) share.

    Parameters
    ----------
    alpha : float, default=0.05
        Family-wise error over the classes of one detector: in a scan whose labels follow
        the detector's model without flips, the probability that any class is judged
        poisoned is at most ``alpha``. Each class's share is a family share (the smallest
        evidence over all classes of a redraw), tested at ``alpha`` when no class has a
        pooled stage (fewer than four classes) and at ``alpha / 2`` with the pooled stage
        at ``alpha / 2`` otherwise. The label detectors' verdicts count only when *every*
        selected label detector judges the class poisoned (:func:`combine`), so no
        further division by the number of label detectors is needed.
    min_rows : int, default=3
        Fewest sampled rows counted as evidence that can make a class poisoned.
    class_alpha : float, default=0.05
        Level of a class's own (marginal) share once the pooled stage has found flipped
        labels.
    draws : int or None, default=None
        Most redraws of the labels. Redrawing stops early once no class can reach its
        level whatever the remaining draws show (the verdicts are those of all draws).
        None: enough for a class with one redraw as strong as its evidence to reach the
        level, ``ceil(2 / level)`` and at least 100 (:meth:`most_draws`).
    """

    _parameter_constraints = {
        "alpha": [Interval(Real, 0, 1, closed="neither")],
        "min_rows": [Interval(int, 1, None)],
        "class_alpha": [Interval(Real, 0, 1, closed="neither")],
        "draws": [NONE, Interval(int, 19, None)],
    }

    batch = 20  # redraws between checks of the early stop

    def __init__(self, *, alpha: float = 0.05, min_rows: int = 3, class_alpha: float = 0.05, draws: int | None = None):
        self.alpha = alpha
        self.min_rows = min_rows
        self.class_alpha = class_alpha
        self.draws = draws

    def level(self, classes: int) -> float:
        """The level of a class's family share (and of the pooled stage) among ``classes``:
        ``alpha`` where no class can have a pooled stage, else half of it."""
        return self.alpha / 2 if int(classes) >= 4 else self.alpha

    def most_draws(self, classes: int) -> int:
        """Most redraws among ``classes``: ``draws``, or (None) ``ceil(2 / level)`` and at
        least 100, so that the level is within reach of a p-value ``(1 + c) / (1 + draws)``
        for c up to 1 (at the default ``alpha`` 0.05: 100, as before)."""
        if self.draws is not None:
            return int(self.draws)
        return max(100, math.ceil(2 / self.level(classes)))

    @staticmethod
    def p_value(observed: int, expected: float) -> float:
        """P(a class whose count is Poisson with mean ``expected`` shows at least
        ``observed``): the evidence, not the verdict's p-value."""
        # SciPy / scikit-learn: imported on first use, by the detectors that run
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

    def _tails(self, evidence: Mapping[Any, tuple], labels: list) -> tuple[np.ndarray, np.ndarray]:
        """Per class: the Poisson tail of its own count, and of its pooled stage (nan: none)."""
        own = np.array([self.p_value(evidence[v][0], evidence[v][2]) for v in labels])
        pooled = np.array([(s[2] if (s := self.spread(evidence, v)) is not None else np.nan) for v in labels])
        return own, pooled

    def resample(
        self,
        evidence: Mapping[Any, tuple],
        redraw: Callable[[np.random.Generator], Mapping[Any, tuple]],
        seed: int = 0,
    ) -> dict[Any, Resampled]:
        """Where each class's ``evidence`` (``(counted, sampled, expected)`` per class)
        falls among the evidence of up to ``draws`` redraws: ``redraw(rng)`` redraws the
        labels from the model without flips and returns the same mapping for them.
        Deterministic for a ``seed``."""
        self._validate_params()
        labels = list(evidence)
        own, pooled = self._tails(evidence, labels)
        level = self.level(len(labels))
        most = self.most_draws(len(labels))
        rng = np.random.default_rng(seed)
        least_own, least_pooled, own_draws = [], [], []
        while len(own_draws) < most:
            for _ in range(min(self.batch, most - len(own_draws))):
                o, p = self._tails(redraw(rng), labels)
                own_draws.append(o)
                least_own.append(o.min())
                least_pooled.append(np.nanmin(p) if np.isfinite(p).any() else np.inf)
            # stop once no class can reach its level whatever the remaining draws show
            b = len(own_draws)
            family_low = (1 + (np.array(least_own)[:, None] <= own[None, :]).sum(0)) / (1 + most)
            pooled_low = (1 + (np.array(least_pooled)[:, None] <= pooled[None, :]).sum(0)) / (1 + most)
            if b < most and np.all(family_low >= level) and np.all(np.isnan(pooled) | (pooled_low >= level)):
                break
        b = len(own_draws)
        least_own, least_pooled, own_draws = np.array(least_own), np.array(least_pooled), np.array(own_draws)
        out = {}
        for i, label in enumerate(labels):
            out[label] = Resampled(
                family=float((1 + (least_own <= own[i]).sum()) / (1 + b)),
                marginal=float((1 + (own_draws[:, i] <= own[i]).sum()) / (1 + b)),
                pooled=None if np.isnan(pooled[i]) else float((1 + (least_pooled <= pooled[i]).sum()) / (1 + b)),
                draws=b,
            )
        return out

    def decide(
        self,
        label: Any,
        detector: str,
        statistic: np.ndarray,
        class_rows: int,
        cut: float,
        evidence: "Disputed",
    ) -> "ClassVerdict":
        """Judge one class from its :class:`Disputed` evidence, which must carry its
        :class:`Resampled` share. In a class judged poisoned, the rows whose
        ``statistic`` exceeds ``cut`` are flagged."""
        self._validate_params()
        if evidence.resampled is None:
            raise ValueError("the label evidence was not resampled (ExcessTest.resample)")
        statistic = np.asarray(statistic, dtype=np.float64)
        n = statistic.shape[0]
        beyond = statistic > cut
        k, expected, pooled, r = int(evidence.strong), evidence.expected, evidence.pooled, evidence.resampled
        center, scale = _robust_location(statistic[~beyond] if (~beyond).any() else statistic)
        base_level = self.level(evidence.classes)
        data_flipped = r.pooled is not None and r.pooled < base_level and pooled is not None
        if r.family < base_level or not data_flipped:
            p_value, level, stage = r.family, base_level, "family"
        else:
            p_value, level, stage = r.marginal, max(self.class_alpha, base_level), "class"
        extra = {
            "rows_strongly_disputed": k,
            "rows_beyond_cut": int(beyond.sum()),
            "expected_in_clean_class": float(expected),
            "poisson_p_value": self.p_value(k, expected),
            "redraws": r.draws,
            "redraw_share_any_class": r.family,
            "redraw_share_this_class": r.marginal,
        }
        if data_flipped:
            extra.update(pooled_rows_strongly_disputed=pooled[0], pooled_expected=pooled[1],
                         pooled_redraw_share=r.pooled)
        info = dict(
            label=label, detector=detector, class_rows=int(class_rows), sample_rows=n, cut=float(cut), side=1,
            center=center, scale=scale, group_fraction=k / n if n else 0.0, p_value=p_value, level=level, extra=extra,
        )
        among = "some class" if stage == "family" else "this class"
        seen = (
            f"{k} of {n} sampled rows ({k / n:.1%}) strongly disagree with their label where a clean "
            f"class has about {expected:.1f}; in {r.draws} sets of labels drawn at random from a model "
            f"of the data without flipped labels, {among} showed evidence this strong with probability "
            f"{p_value:.2g}"
        )
        if k >= self.min_rows and p_value < level:
            note = seen + f" (< {level:.2g})"
            if stage == "class":
                note += (
                    f"; the other classes hold flipped labels too ({pooled[0]} of their sampled rows "
                    f"where {pooled[1]:.1f} are expected; redraws as strong: {r.pooled:.2g})"
                )
            return ClassVerdict(poisoned=True, note=note, **info)
        return ClassVerdict(poisoned=False, note=seen + f" (level {level:.2g})", **info)
