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
   own-null and its peer p-value are below ``alpha / (classes x detectors)``. The chance
   that a clean scan has any class judged poisoned stays below ``alpha`` for classes
   compared with all the others, and below ``2 alpha`` with the step-down that takes
   classes that stand out from the peers (:func:`evidence_outliers`). A class that would
   be judged must also not be one log-concave hump (:mod:`.logconcave`): a skewed class
   stands out from its peers by its shape alone.

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
from .calibration import own_null, peer_p_value
from .mixture import fit_two_groups


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
        clustering, relative spectral), held by a Bonferroni correction over classes x
        detectors. Each class and detector is tested at ``alpha / (classes x detectors)``;
        the step-down of :func:`evidence_outliers` can add as much again (at most
        ``2 alpha`` in all). A scan given a false-alarm rate sets it to half the group
        detectors' share (:func:`~.base.split_false_alarms`).
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
        fit=None,
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
        fit : TwoGroupFit, optional
            ``fit_two_groups(statistic)``, where the caller has it already.
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
                extra={"candidate": False},
            )
        fit = fit if fit is not None else fit_two_groups(statistic)
        own_p, z = own_null(fit) if fit.sd_main > 0 else (1.0, 0.0)
        reasons = self._not_a_group(fit, k, two_sided)
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


    def _not_a_group(self, fit, k: int, two_sided: bool) -> list[str]:
        """Why the fitted split is not a group to judge (none: it is one)."""
        reasons = []
        if fit.weight < self.min_group_fraction or fit.weight * k < self.min_group_rows:
            reasons.append(f"group too small ({fit.weight:.2%} of the class)")
        if fit.weight > self.max_group_fraction:
            reasons.append(f"group too large ({fit.weight:.2%} of the class)")
        if not two_sided and fit.side < 0:
            reasons.append("the separated group has low scores")
        if fit.cut is None:
            reasons.append("the group never outweighs the main mass")
        return reasons


def judge_scan(
    verdicts: Mapping[Any, "ClassVerdict"],
    level: float,
    affinity,
    *,
    peer_floor: float = 1.0,
    separation_floor: float | None = None,
    needs_affinity: bool = False,
    alone_by_affinity: bool = True,
    shape=None,
    alone_by_shape: bool = False,
) -> dict:
    """Judge every class of one detector against its peers (the second step).

    ``verdicts`` maps each class to the first step's verdict (:meth:`GroupTest.decide`,
    or a detector's own with the same ``extra`` keys). A candidate class is judged
    poisoned when its p-value is below ``level``. The p-value is the larger of (an
    intersection-union test: each part must hold)

    * ``own_p``, the class's own one-group null (absent: no such gate), and
    * the peer p-value: the class's ``evidence`` against the same figure in the other
      classes of the scan (:func:`.calibration.peer_p_value`; their spread taken as at
      least ``peer_floor``). The classes whose evidence stands out from the rest
      (:func:`evidence_outliers`) are no one's peers. With fewer than three other
      classes there are no peers: then, if ``alone_by_affinity``, the affinity p-value
      stands in (``affinity(label, verdict)`` returns ``(means, p)`` for "the group's
      rows look more like other classes than the rest of the class", or None when it
      cannot be tested); otherwise the class cannot be judged poisoned.

    With ``separation_floor``, the group's separation (Ashman's D, ``v.separation``)
    is a second peer statistic beside ``evidence``: how far apart the group lies, where
    the evidence says how sure the split is. Each is compared with its peers (and its
    own outliers found) at half the level, and the class's peer p-value is the smaller
    of the two, doubled (Bonferroni over the two): a group as far apart as natural
    groups but found with more rows does not stand out on the first, a group far more
    distinct than any clean class's does on the second.

    With ``needs_affinity`` (tables, where one-hot categories split clean classes into
    far-apart groups) the affinity p-value must be below ``level`` too. Affinity is
    computed only for candidates that pass their own-null gate and need it.

    ``shape(label, verdict)``, where given, returns the p-value of the class's statistic
    against one group of any log-concave shape (:func:`.logconcave.log_concave_p`), or
    None where it has none; a class that would be judged must have it below ``level``
    too. It is computed only for such classes: a skewed class that stands out from its
    peers is one hump, not a group split off.

    With ``alone_by_shape`` a class without peers is judged by its own shape instead:
    its ``own_p`` and its one-hump p-value must both be below ``level``, and the
    yardstick must hold on the scan's other classes (at least one): each is one
    Gaussian group or one hump of a log-concave shape at :data:`YARDSTICK_HOLDS`. Where
    a representation makes every class many-humped (classes of natural
    sub-populations), no class is judged.
    """
    evidence = {label: v.extra.get("evidence") for label, v in verdicts.items()}
    statistics = [(evidence, peer_floor)]
    if separation_floor is not None:
        statistics.append(({label: (float(v.separation) if evidence[label] is not None else None)
                            for label, v in verdicts.items()}, separation_floor))
    share = level / len(statistics)  # each peer statistic's part of the level
    outliers = [evidence_outliers(values, share, floor) for values, floor in statistics]
    shapes: dict = {}

    def shape_of(label, verdict=None):
        if label not in shapes:
            shapes[label] = shape(label, verdicts[label]) if shape is not None else None
        return shapes[label]

    def one_hump(label) -> bool:
        own_p = verdicts[label].extra.get("own_p")
        if own_p is None or own_p >= YARDSTICK_HOLDS:
            return True
        p = shape_of(label)
        return p is not None and p >= YARDSTICK_HOLDS

    def holds_elsewhere(label) -> bool:
        others = [other for other in verdicts if other != label]
        return bool(others) and all(one_hump(other) for other in others)

    rules = _PeerRules(
        level, affinity, peer_floor, needs_affinity, alone_by_affinity,
        shape_of if shape is not None else None, alone_by_shape, holds_elsewhere,
    )
    out = {}
    for label in verdicts:
        tests = [
            (values.get(label), [e for other, e in values.items() if other != label and other not in out_ and e is not None], floor)
            for (values, floor), out_ in zip(statistics, outliers)
        ]
        out[label] = rules.judge(label, verdicts[label], tests)
    return out


def evidence_outliers(evidence: Mapping[Any, float | None], level: float, peer_floor: float = 1.0) -> set:
    """The classes whose evidence stands out from the rest, by the generalised ESD
    procedure (Rosner 1983).

    Classes are ranked from the strongest evidence down. Step i compares the i-th class
    with the classes below it (:func:`.calibration.peer_p_value`); the outliers are the
    top i* classes, where i* is the *last* step whose p-value is below ``level``. Taking
    the last step, not the first failing one, is what keeps two or three poisoned classes
    from hiding one another: the strongest is compared with peers that include the
    second, whose evidence widens the yardstick, while the second, compared with the
    clean classes only, stands out. At most ``(k - 1) // 2`` classes of k are outliers
    (a minority), and every step keeps at least three peers. Step 1 is the usual test at
    ``level``, which holds one detector's share of the scan's alpha over k classes. Step
    i picks one of C(k, i) sets of i classes, so it is run at that share over C(k, i),
    halved for each step after the first: in a clean scan the later steps together add
    at most the first step's false-alarm probability (a union bound). Each outlier is
    then judged against the classes that are not outliers (:func:`judge_scan`).
    """
    ranked = sorted(
        (lb for lb, e in evidence.items() if e is not None and np.isfinite(e)),
        key=lambda lb: -evidence[lb],
    )
    classes = len(evidence)
    k = len(ranked)
    steps = min((classes - 1) // 2, k - 3)
    last = 0
    for i in range(max(steps, 0)):
        p = peer_p_value(evidence[ranked[i]], [evidence[lb] for lb in ranked[i + 1:]], peer_floor)
        # step i + 1 picks one set of i + 1 classes of C(classes, i + 1): its level is the
        # detector's share of alpha (level x classes) over that many sets, halved at each
        # step after the first, so the steps together spend at most twice the first's
        step_level = level * classes / (math.comb(classes, i + 1) * 2**i)
        if p is not None and p < step_level:
            last = i + 1
    return set(ranked[:last])


#: Without peers, a class is judged by its own shape only where the yardstick holds on
#: the scan's other classes: each is one Gaussian group, or one hump of a log-concave
#: shape, at this probability (:func:`judge_scan`, ``alone_by_shape``). A clean scan
#: of two classes keeps the check with probability about 0.95; a representation that
#: makes classes many-humped fails it, and then no class is judged without peers.
YARDSTICK_HOLDS = 0.05


@dataclass(frozen=True)
class _PeerRules:
    """How :func:`judge_scan` judges one class, given its peers' evidence."""

    level: float
    affinity: Any
    peer_floor: float
    needs_affinity: bool
    alone_by_affinity: bool
    shape: Any = None
    alone_by_shape: bool = False
    holds_elsewhere: Any = None

    def judge(self, label: Any, v: "ClassVerdict", tests: list) -> "ClassVerdict":
        """``tests``: for each peer statistic (the evidence; the separation, where
        compared), the class's value, its peers' values and the spread's floor."""
        level = self.level
        extra = dict(v.extra)
        p_peer = self._peer_p(tests, extra)
        own_p = extra.get("own_p")
        extra["peer_p"] = p_peer
        if not extra.get("candidate"):
            # no group to judge; its p-value still says how far the class stands out
            p = max(own_p if own_p is not None else 0.0, p_peer if p_peer is not None else 1.0)
            return dataclasses.replace(v, poisoned=False, cut=None, p_value=p, level=level, extra=extra)
        p_aff, means = None, None
        gated = own_p is None or own_p < level
        if gated and (self.needs_affinity or (p_peer is None and self.alone_by_affinity)):
            tested = self.affinity(label, v)
            if tested is not None:
                means, p_aff = tested
                extra["other_class_confidence"] = [means[1], means[0]]
                extra["other_class_confidence_p"] = p_aff
        alone = None  # without peers, judged by its own shape: whether the yardstick holds
        p_shape = None
        if p_peer is not None:
            p_ev = p_peer
        elif self.alone_by_shape and self.shape is not None and own_p is not None and own_p < level:
            alone = self.holds_elsewhere(label)
            p_shape = self.shape(label, v)
            p_ev = p_shape if (alone and p_shape is not None) else 1.0
        else:
            p_ev = p_aff if (p_aff is not None and self.alone_by_affinity) else 1.0
        if self.needs_affinity:
            p_ev = max(p_ev, 1.0 if p_aff is None else p_aff)
        p = max(own_p if own_p is not None else 0.0, p_ev)
        if p < level and self.shape is not None and p_shape is None:
            p_shape = self.shape(label, v)
        if p_shape is not None:
            extra["one_hump_p"] = p_shape
            p = max(p, p_shape)
        poisoned = p < level
        words = self._words(own_p, p_peer, p_aff, means, alone, extra)
        if p_shape is not None:
            words.append(
                f"a single hump of any shape (skewed or long-tailed, not two groups) would split like this "
                f"with p = {p_shape:.1e}"
            )
        note = f"{v.note}: {'; '.join(words)}; p = {p:.1e} {'<' if poisoned else '>='} level {level:.1e}"
        return dataclasses.replace(
            v, poisoned=poisoned, cut=v.cut if poisoned else None, note=note, p_value=p, level=level, extra=extra
        )

    @staticmethod
    def _peer_p(tests: list, extra: dict) -> float | None:
        """The class's peer p-value: of one statistic, or the smaller of two, doubled.
        Records each in ``extra`` where there are two."""
        ps = [peer_p_value(value, peers, floor) if value is not None else None for value, peers, floor in tests]
        if len(tests) == 1:
            return ps[0]
        extra["peer_p_evidence"], extra["peer_p_separation"] = ps[0], ps[1]
        known = [p for p in ps if p is not None]
        return min(1.0, len(tests) * min(known)) if known else None

    def _words(self, own_p, p_peer, p_aff, means, alone=None, extra=None) -> list[str]:
        words = []
        if own_p is not None:
            words.append(f"one group would split like this with p = {own_p:.1e}")
        if p_peer is not None and extra is not None and "peer_p_separation" in extra:
            parts = [f"{what} p = {p:.1e}" for what, p in (
                ("its evidence", extra["peer_p_evidence"]), ("its group's separation", extra["peer_p_separation"]))
                if p is not None]
            words.append(f"against the other classes p = {p_peer:.1e} ({', '.join(parts)}; the smaller, doubled)")
        elif p_peer is not None:
            words.append(f"against the other classes p = {p_peer:.1e}")
        elif alone is True:
            words.append("too few classes to compare it with, so it is judged by its own shape (every other "
                         "class is a single hump)")
        elif alone is False:
            words.append("too few classes to compare it with, and another class is not a single hump either, "
                         "so it cannot be judged")
        elif not self.alone_by_affinity:
            words.append("too few classes to compare it with, so it cannot be judged")
        if p_aff is not None:
            words.append(
                f"its rows look like other classes (confidence {means[1]:.2f} vs {means[0]:.2f}, p = {p_aff:.1e})"
                if means[1] > means[0]
                else f"its rows look no more like other classes than the rest (confidence {means[1]:.2f} vs {means[0]:.2f})"
            )
        return words


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


def combine(verdicts: dict, finds: dict) -> dict:
    """Which detectors' flags count for one class: ``{detector: bool}``.

    * Backdoor detectors (a separated group inside the class) count on their own: each
      one's verdict is already a conservative, self-contained test.
    * Label detectors (rows the rest of the data contradict) count only when *every*
      selected label detector judged the class poisoned: a cross-fitted model and the
      neighbours are two views of the same question, and the intersection of their
      calibrated tests keeps the family-wise error of the label evidence over classes x
      label detectors within each detector's ``alpha`` (:class:`~.excess.ExcessTest`).
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
