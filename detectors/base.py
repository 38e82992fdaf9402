"""The detector contract and the registry of detectors by name.

A detector is a small class with keyword-only parameters and the accumulator contract of
TFDV's statistics generators, so the same code runs in memory and inside a Beam combiner:

    create_accumulator() -> A
    add_input(A, X, y) -> A              # a batch: X float (n, d), y labels (n,)
    merge_accumulators([A, ...]) -> A    # associative: Beam may combine in any tree
    extract_output(A, samples) -> State  # fitted state, small and picklable
    score(State, X, y) -> (n,)           # higher = more suspicious, always

``samples`` maps each class to a bounded uniform :class:`~.stats.ClassSample` gathered in
the same pass; detectors that cannot merge exactly (clustering, neighbours) fit on it and
then score every row.

A detector also names a *decision statistic*: a signed 1-D value per row from which
:mod:`.decision` judges each class (:meth:`Detector.statistic`, by default the score).
State carries that statistic for the sampled rows (``State.calibration``), computed so
that a row is not judged by a model it helped fit.

Detectors never import Beam and never render anything.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

from ._params import InvalidParameterError, ParamsMixin
from .logconcave import log_concave_p
from .stats import ClassSample

if TYPE_CHECKING:
    from .decision import ClassVerdict


@dataclass
class DetectorState:
    """Fitted state of one detector.

    Attributes
    ----------
    detector : str
        The detector's registered name.
    classes : dict
        Per-class fitted state (detector-specific, small and picklable).
    calibration : dict
        Per-class decision statistic of the sampled rows.
    info : dict
        Anything else worth reporting (chosen dimensions, eigenvalues, ...).
    """

    detector: str
    classes: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @staticmethod
    def union(states: list["DetectorState"]) -> "DetectorState":
        """Join per-class states fitted separately (for per-class detectors)."""
        if not states:
            raise ValueError("no states to join")
        out = DetectorState(states[0].detector)
        for st in states:
            if st.detector != out.detector:
                raise ValueError(f"cannot join states of {out.detector} and {st.detector}")
            overlap = set(out.classes) & set(st.classes)
            if overlap:
                raise ValueError(f"class(es) {sorted(map(str, overlap))} fitted twice")
            out.classes.update(st.classes)
            out.calibration.update(st.calibration)
            out.info.update(st.info)
        return out


#: Fewest distinct values of a class's statistic for :meth:`Detector.group_shape` to test
#: its shape; below it the statistic is a few spikes (a table's one-hot categories), and
#: the class has no shape to judge by.
MIN_DISTINCT_FOR_SHAPE = 20


class Detector(ParamsMixin, abc.ABC):
    """Base class of every detector. See the module docstring for the contract."""

    #: Registered name (``--detectors`` selects by it).
    name: ClassVar[str]
    #: True when the state is a union of independent per-class states, so each class
    #: can be fitted on its own (in parallel).
    per_class: ClassVar[bool] = True
    #: True when a group *below* the main mass of the statistic is suspicious too.
    two_sided: ClassVar[bool] = False
    #: Short description of the decision statistic, for reasons and reports.
    statistic_name: ClassVar[str] = "score"
    #: What the detector finds: "backdoor" (a separated group inside a class),
    #: "flipped labels" (rows whose label the rest of the data contradict; such verdicts
    #: count only when every selected one agrees, :func:`.decision.combine`) or
    #: "class-to-class flip" (a share of one class relabelled as another).
    finds: ClassVar[str] = "backdoor"
    #: True when the detector looks for one group that most classes hold at once
    #: (all-to-all poison) rather than a group inside one class.
    across_classes: ClassVar[bool] = False

    #: True when the detector's class verdicts are calibrated across the scan's classes
    #: (:func:`.decision.judge_scan`): its first-step verdicts carry ``extra["candidate"]``,
    #: ``extra["evidence"]`` (and ``extra["own_p"]``), and it answers
    #: :meth:`group_affinity`.
    calibrated: ClassVar[bool] = False
    #: Peer spread below which a class's ``evidence`` is not compared (its unit: the
    #: spread a clean class's evidence has by its own null).
    peer_floor: ClassVar[float] = 1.0
    #: Where set, the group's separation (``ClassVerdict.separation``, Ashman's D) is
    #: compared with the peers' too, its spread taken as at least this; the class's
    #: peer p-value is then the smaller of the two, doubled (:func:`.decision.judge_scan`).
    separation_floor: ClassVar[float | None] = None
    #: Modules beyond numpy and scipy.special that the detector's fit imports on first use
    #: (scipy.stats, scikit-learn's estimators). A scan imports them before it fits
    #: classes side by side in threads: two threads importing scikit-learn for the first
    #: time at once can see a half-initialised module. A scan whose detectors name none
    #: loads neither (scikit-learn: 1.3 s of a spectral scan's start; scipy.stats: 0.8 s).
    fit_imports: ClassVar[tuple[str, ...]] = ()
    #: A calibrated detector's group must also look like other classes (tables).
    needs_affinity: bool = False
    #: Without peers (fewer than four classes) the affinity test alone may judge. Off:
    #: the affinity test's Welch p-value is not calibrated for a split chosen from the
    #: data (a clean two-class table of 4,454 rows had a spectral group at p far below
    #: any level), so without peers the group detectors judge no class.
    alone_by_affinity: ClassVar[bool] = False
    #: Without peers, a class may be judged by its own shape (:func:`.decision.judge_scan`,
    #: ``alone_by_shape``): its own one-group null and the one-hump test, where both hold
    #: on the scan's other classes. Only for detectors whose statistic's shape was
    #: measured to keep that promise on clean classes of real representations.
    alone_by_shape: ClassVar[bool] = False

    #: Input kinds ("features", "image", "text", "tabular") the detector can read; None:
    #: every kind.
    kinds: ClassVar[frozenset | None] = None
    #: Input kinds it runs on when the user names no detectors.
    default_kinds: ClassVar[frozenset] = frozenset()
    #: Its place among the default detectors: lists and summaries name them in this order.
    default_rank: ClassVar[int] = 100
    #: The family of evidence its verdicts belong to, for the scan's bound on false alarms
    #: (:func:`split_false_alarms`): "groups" (judged against the scan's other classes by
    #: the group test, whose ``alpha`` holds the family), "shared", "labels",
    #: "class_flip" or "triggers".
    alarm_family: ClassVar[str] = "groups"

    def alarm_tests(self) -> int:
        """Families of tests a trigger detector runs, each at ``family_alpha`` over the
        registered detectors (one; two for a text's words and sentence forms)."""
        return 1

    def alarm_params(self, share: float, rate: float) -> dict:
        """Parameters that hold this detector's family to ``share`` of a scan whose
        false-alarm rate is ``rate`` ({} where the group test holds it)."""
        return {}

    def alarm_spent(self, group_alpha: float) -> float:
        """The chance that this detector's family judges some class of a clean scan, at
        most, with its parameters as set (the group detectors: the group test's ``alpha``
        and as much again for its step-down)."""
        return 2 * group_alpha

    @classmethod
    def params_for(cls, kind: str, probability_labels: tuple = ()) -> dict:
        """Parameters the scan sets for an input ``kind`` (the user's own take
        precedence); ``probability_labels``: the columns of a cross-fitted proxy's
        out-of-fold probabilities, when the scan has them."""
        return {}

    def group_affinity(self, state: "DetectorState", verdict, pooled, label: Any):
        """``((mean affinity of the rest, of the group), p)``: whether the rows of the
        class's group look more like other classes than the rest of the class (one-sided
        p); None when that cannot be tested. Only for ``calibrated`` detectors."""
        raise NotImplementedError(f"{self.name} does not test its groups' affinity")

    def group_shape(self, state: "DetectorState", verdict, label: Any) -> float | None:
        """p-value of the class's sampled statistic (the one its verdict split) against
        one group of any log-concave shape (:func:`.logconcave.log_concave_p`), times the
        directions searched for it where the verdict says so; None when the class has no
        such statistic. Only for ``calibrated`` detectors, and only asked of a class the
        scan would judge poisoned."""
        stat = state.calibration.get(label)
        if stat is None or len(stat) < 20:
            return None
        stat = np.asarray(stat, dtype=np.float64)
        # a statistic of a few distinct values (one-hot categories of a table) is spikes,
        # not a density: no shape to test (the log-concave fit diverges on it)
        if len(np.unique(stat)) < MIN_DISTINCT_FOR_SHAPE:
            return None
        p, _ = log_concave_p(stat)
        return min(1.0, p * int(verdict.extra.get("directions_searched", 1)))

    @property
    def input(self) -> str:
        """The view of a row the detector reads: "representation" (vectors),
        "probabilities" (out-of-fold class probabilities) or "tokens" (n-grams of a text)."""
        return "representation"

    @property
    def accumulator_key(self) -> str:
        """Detectors with the same key accumulate the same statistics, computed once."""
        return self.name

    @abc.abstractmethod
    def create_accumulator(self) -> Any:
        """A new, empty accumulator."""

    @abc.abstractmethod
    def add_input(self, accumulator: Any, X: np.ndarray, y: np.ndarray) -> Any:
        """Fold a batch of rows into the accumulator and return it."""

    @abc.abstractmethod
    def merge_accumulators(self, accumulators: list) -> Any:
        """Merge accumulators (associative and commutative)."""

    @abc.abstractmethod
    def extract_output(
        self, accumulator: Any, samples: Mapping[Any, ClassSample]
    ) -> DetectorState:
        """Fit the detector's state from the merged accumulator and class samples."""

    @abc.abstractmethod
    def score(self, state: DetectorState, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-row suspicion scores; higher = more suspicious."""

    def statistic(self, state: DetectorState, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-row decision statistic (see :mod:`.decision`); by default the score."""
        return self.score(state, X, y)

    def evaluate(
        self, state: DetectorState, X: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and decision statistics in one call (override to share work)."""
        return self.score(state, X, y), self.statistic(state, X, y)

    def judge(self, state: DetectorState, label: Any, class_rows: int, group_test) -> "ClassVerdict":
        """Decide whether ``label`` holds poison (by default: the separated-group test on
        the sampled decision statistic)."""
        stat = state.calibration.get(label, np.empty(0))
        return group_test.decide(label, self.name, stat, class_rows, two_sided=self.two_sided)

    def settle(self, state: DetectorState, label: Any, verdict: "ClassVerdict") -> "ClassVerdict":
        """The final verdict of a class once the scan has judged it (by default the
        verdict as it is). A detector may move a judged class's cut here, updating its
        ``state`` for that class to match; the judgment itself (poisoned, p-value,
        level) must stay."""
        return verdict

    def statistic_label(self, state: DetectorState, label: Any) -> str:
        """What the class's decision statistic is, in words (by default ``statistic_name``;
        a detector whose statistic differs by class says which it read for ``label``)."""
        return self.statistic_name

    def explain(self, state: DetectorState, label: Any, strength: float) -> str:
        """A phrase for a flagged row's reason."""
        return f"{self.name} {self.statistic_name} {strength:.1f} SD from the class's main mass"

    def describe(
        self,
        state: DetectorState,
        X: np.ndarray,
        y: np.ndarray,
        statistic: np.ndarray,
        strength: np.ndarray,
    ) -> list[str]:
        """Reason phrases for flagged rows (by default :meth:`explain` per row)."""
        return [self.explain(state, _py(lab), float(s)) for lab, s in zip(y, strength)]

    def highlights(self, state: DetectorState, X: Any, y: np.ndarray) -> list[list[str]] | None:
        """For flagged rows: the parts of each row's input that carry the evidence (a
        text's trigger n-grams), for a reviewer to see; None when the detector has none."""
        return None

    # helpers -----------------------------------------------------------------------
    @staticmethod
    def _check_batch(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X)
        y = np.asarray(y)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array of vectors; got shape {X.shape}")
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(
                f"y must be a 1-D array with one label per row of X; got shape {y.shape} "
                f"for X of shape {X.shape}"
            )
        return X, y

    @staticmethod
    def _require_fitted(state: DetectorState, labels) -> None:
        missing = [lab for lab in labels if lab not in state.classes]
        if missing:
            raise ValueError(
                f"no fitted state for class(es) {', '.join(map(repr, missing[:5]))}; "
                "fit the detector on data that contains them first"
            )


def group_rows_by_label(y: np.ndarray) -> list[tuple[Any, np.ndarray]]:
    """(label, row indices) for every label in ``y``, labels in sorted order."""
    y = np.asarray(y)
    if y.shape[0] == 0:
        return []
    if y.dtype.kind in "iu" and y.ndim == 1:
        lo, hi = y.min(), y.max()
        span = int(hi) - int(lo)
        if span < 1 << 16:
            # integer labels of a small range (the usual class ids): one radix sort on 8
            # or 16 bits in place of two comparison sorts; y - lo wraps in y's type but
            # is exact modulo 2**8 or 2**16
            offset = (y - lo).astype(np.uint8 if span < 1 << 8 else np.uint16)
            counts = np.bincount(offset)
            present = np.flatnonzero(counts)
            order = np.argsort(offset, kind="stable")
            bounds = np.cumsum(counts[present])[:-1]
            labels = [int(lo) + int(v) for v in present]  # plain ints, as _py gives below
            return list(zip(labels, np.split(order, bounds)))
    labels, inverse = np.unique(y, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(labels)))[:-1]
    return [(_py(lab), idx) for lab, idx in zip(labels, np.split(order, bounds))]


def label_sort_key(label: Any):
    """Sort key that orders labels of one type naturally and never compares types."""
    return (type(label).__name__, label)


def _py(value: Any) -> Any:
    """A numpy scalar as the plain Python value (labels are dictionary keys)."""
    return value.item() if isinstance(value, np.generic) else value


#: The input kinds a scan reads.
ALL_KINDS = frozenset({"features", "image", "text", "tabular"})


# registry -----------------------------------------------------------------------------
_REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector selectable by its ``name``."""
    name = getattr(cls, "name", None)
    if not name:
        raise ValueError(f"{cls.__name__} has no name")
    if name in _REGISTRY:
        raise ValueError(f"a detector named {name!r} is registered already ({_REGISTRY[name].__name__})")
    _REGISTRY[name] = cls
    return cls


def input_words(kinds) -> str:
    """The input kinds a detector reads, in words: "a text input", "an image input"."""
    words = " or ".join(sorted(kinds))
    return f"{'an' if words[:1] in 'aeiou' else 'a'} {words} input"


def available_detectors() -> list[str]:
    """Registered detector names, sorted."""
    return sorted(_REGISTRY)


def spent_false_alarms(detectors, group_alpha: float) -> dict[str, float]:
    """What each family of evidence of ``detectors`` spends of a scan's false alarms with
    their parameters as set: the chance that it judges some class of clean data, at most
    (:meth:`Detector.alarm_spent`). The group detectors share one group test (``alpha``
    ``group_alpha``); the label detectors' verdicts count only where every one judges, so
    the least of theirs; the others add up. The scan's bound is the sum."""
    out: dict[str, float] = {}
    for d in detectors:
        family, spent = d.alarm_family, d.alarm_spent(group_alpha)
        if family == "groups":
            out[family] = spent
        elif family == "labels":
            out[family] = min(out.get(family, spent), spent)
        else:
            out[family] = out.get(family, 0.0) + spent
    return out


def trigger_share(family_alpha: float, tests: int = 1) -> float:
    """What ``tests`` families of a trigger detector's tests spend of a scan's false
    alarms: each tests its classes at ``family_alpha`` over classes x registered detectors,
    so ``family_alpha / registered`` per scan."""
    return family_alpha * tests / max(len(_REGISTRY), 1)


def split_false_alarms(rate: float, detectors) -> dict[str, float]:
    """Split a scan's false-alarm rate between the families of evidence of ``detectors``.

    ``rate`` bounds the probability that a scan of clean data has *any* class judged
    poisoned. The trigger detectors test each class at ``rate`` over classes x registered
    detectors, so each of their families of tests spends ``rate / registered``; the rest
    is split equally between the other families that run ("groups", "shared", "labels",
    "class_flip"). Returns each family's share (the triggers' as spent).
    """
    spent = sum(trigger_share(rate, d.alarm_tests()) for d in detectors if d.alarm_family == "triggers")
    others = list(dict.fromkeys(d.alarm_family for d in detectors if d.alarm_family != "triggers"))
    out = {family: (rate - spent) / len(others) for family in others}
    if spent:
        out["triggers"] = spent
    return out


def default_detectors(kind: str | None = None) -> tuple[str, ...]:
    """The detectors that run on an input ``kind`` when none are named (every kind's,
    for None), in their ``default_rank`` order."""
    chosen = [c for c in _REGISTRY.values() if c.default_kinds and (kind is None or kind in c.default_kinds)]
    return tuple(c.name for c in sorted(chosen, key=lambda c: (c.default_rank, c.name)))


def detector_class(name: str) -> type[Detector]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidParameterError(
            f"Unknown detector {name!r}; known detectors: {', '.join(available_detectors())}."
        ) from None


def make_detector(name: str, params: Mapping[str, Any] | None = None) -> Detector:
    """Build a registered detector; unknown names and parameters are errors."""
    det = detector_class(name)()
    det.set_params(**dict(params or {}))
    det._validate_params()
    return det
