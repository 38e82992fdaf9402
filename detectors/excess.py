"""Does a class hold more strongly disputed labels than its own calibration allows?

:class:`ExcessTest` is the verdict of the label detectors: the count of a class's
strongly disputed rows against the count its calibrated out-of-fold model predicts
(docs/detectors.md, "The decision").
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Any, Mapping

import numpy as np

from ._params import Interval, ParamsMixin
from .decision import ClassVerdict


@dataclass(frozen=True)
class Disputed:
    """A class's label evidence: ``strong`` sampled rows strongly disputed where a clean
    class has ``expected``, among ``classes`` classes; ``pooled`` is
    :meth:`ExcessTest.spread` for this class (None: the class is judged alone)."""

    strong: int
    expected: float
    classes: int
    pooled: tuple[int, float, float] | None = None


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

    def decide(
        self,
        label: Any,
        detector: str,
        statistic: np.ndarray,
        class_rows: int,
        cut: float,
        evidence: "Disputed",
    ) -> "ClassVerdict":
        """Judge one class from its :class:`Disputed` evidence. In a class judged
        poisoned, the rows whose ``statistic`` exceeds ``cut`` are flagged."""
        self._validate_params()
        statistic = np.asarray(statistic, dtype=np.float64)
        n = statistic.shape[0]
        beyond = statistic > cut
        k, expected, pooled = int(evidence.strong), evidence.expected, evidence.pooled
        p_value = self.p_value(k, expected)
        center, scale = _robust_location(statistic[~beyond] if (~beyond).any() else statistic)
        base_level = self.level(evidence.classes)
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
            label=label, detector=detector, class_rows=int(class_rows), sample_rows=n, cut=float(cut), side=1,
            center=center, scale=scale, group_fraction=k / n if n else 0.0, p_value=p_value, level=level, extra=extra,
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

