"""A group shared by most classes: all-to-all poison, which per-class tests cannot see.

All-to-all poisoning (BadNets' all-to-all; BackdoorBench's ``all2all``) stamps one
trigger on a few rows of *every* class and relabels each to another class. Every class
then holds a small separated group, so a class does not stand out from its peers, and
the peer comparison that keeps the per-class detectors from judging natural
sub-populations (:func:`.decision.judge_scan`) hides the poison. What the per-class view
misses is that the groups are *the same group*: the trigger moves the rows of every
class the same way.

The cross-class view:

1. per class, the sampled rows split along their top principal direction (spectral
   signatures' statistic, Tran et al. 2018) into two Gaussian groups; a class with a
   group contributes the difference of the group's and the rest's means, less its part
   in the span of the class means (a poison row's difference is its source class's mean
   minus this class's, plus the trigger: what is left is the trigger's, alike in every
   class);
2. each class is then projected on the direction the *other* classes' differences share
   (their top singular vector), chosen without looking at this class, and split again:
   its own-null p-value (:func:`.calibration.own_null`) says how improbable that split is
   for one Gaussian group;
3. poison rows came from other classes: a linear model fitted on every sampled row
   *outside* the groups (it never sees the trigger, so it cannot have learned it) takes
   a group's rows for other classes far more often than it mistakes the rest of the
   class (out of fold); Chen et al.'s exclusionary reclassification, applied to every
   class's group at once, since a model that keeps any poisoned class's group learns
   the trigger from it. A one-sided Fisher exact test per class compares the two shares
   (:func:`._counterfactual.fisher_greater`), and most of the group's rows must be taken
   for another class (poison came from other classes; a group the model takes mostly for
   this class is this class's own rows). A natural sub-population that every class
   has (thick strokes, a second writing style) is mostly recognised as its own class
   without its group's rows;
4. a trigger shared by the classes is one most of them hold: the scan's evidence is the
   ``ceil(K / 2)``-th smallest of the classes' p-values (each the larger of steps 2 and
   3). A class is judged poisoned when both its own p-value and the scan's are below
   ``alpha / K`` (the detector's ``alpha``, by default the group test's).

With fewer than four classes there is no "most classes" to speak of, and the detector
judges no class. A group in a single class (one-to-one poison) is the per-class
detectors' to judge: this one needs half the classes. It runs by default on raw images,
where the scan reads the representation of its own proxy network (on the development
image families it judged the all-to-all sets and nothing else, clean sets with a
sub-population shared by every class included); on other inputs only when named
(``--detectors``): on a held-out clean control (sentence embeddings of four speakers) it
judged two classes and quarantined a fifth of the rows (docs/detectors.md).

References
----------
B. Tran, J. Li, A. Madry. Spectral Signatures in Backdoor Attacks. NeurIPS 2018.
T. Gu, B. Dolan-Gavitt, S. Garg. BadNets. arXiv:1708.06733, 2017 (all-to-all attack).
Y. Wang et al. FLARE: Towards Universal Dataset Purification against Backdoor Attacks.
IEEE Transactions on Information Forensics and Security, 2025 (all-to-all as a family
the per-class defences miss).
B. Chen et al. Detecting Backdoor Attacks on Deep Neural Networks by Activation
Clustering. arXiv:1811.03728, 2018 (exclusionary reclassification).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, Mapping

import numpy as np

from ._counterfactual import fisher_greater
from ._params import NONE, Interval
from ._pooled import (
    LinearModel,
    Pooled,
    PooledDetector,
    class_statistics,
    fmt_label,
    plain_labels,
    stratified_folds,
)
from .base import DetectorState, register
from .calibration import own_null
from .decision import ClassVerdict
from .mixture import fit_two_groups
from .stats import ClassSample

#: Fewest classes for which "most classes hold the group" means something.
MIN_CLASSES = 4


@dataclass(frozen=True)
class SharedClassState:
    """One class projected on the direction the other classes' groups share."""

    mean: np.ndarray  # (d,) the class's sampled mean
    direction: np.ndarray  # (d,) unit; the statistic is side * (x - mean) @ direction
    side: int
    cut: float | None  # on the signed statistic; None: no split
    center: float  # main mass on the signed statistic
    scale: float
    group_center: float
    group_fraction: float  # share of the sampled rows beyond the cut
    separation: float
    delta_bic: float
    own_p: float  # one Gaussian group splits like this (step 2)
    group_rows: int  # sampled rows in the group (0: no group)
    group_other: int  # of them, taken for another class by the model without the groups
    rest_rows: int
    rest_other: int  # the class's other rows taken for another class, out of fold
    other_p: float  # one-sided Fisher test of the two shares (step 3)
    source: Any = None  # the class the group's rows are most often taken for
    source_rows: int = 0  # how many of them

    @property
    def mostly_other(self) -> bool:
        """Whether most of the group's rows are taken for another class: poison rows came
        from other classes; a group the model takes mostly for this class is its own."""
        return self.group_rows > 0 and 2 * self.group_other >= self.group_rows

    @property
    def p(self) -> float:
        return max(self.own_p, self.other_p) if self.mostly_other else 1.0

    def statistic(self, X: np.ndarray) -> np.ndarray:
        return self.side * ((np.asarray(X, dtype=np.float64) - self.mean) @ self.direction)


@register
class SharedGroup(PooledDetector):
    """A separated group along one direction shared by most classes (all-to-all poison).

    See the module docstring for the four steps. Parameters
    ----------
    rows_per_class : int, default=1024
        Sampled rows per class the detector fits on.
    min_group_fraction, max_group_fraction : float, default=0.005, 0.5
        Shares of a class a group may hold (the group test's definition of a group).
    min_group_rows : int, default=5
        Fewest sampled rows that make a group.
    C : float, default=0.1
        Inverse regularisation of the linear model of step 3 (the affinity model's).
    seed : int, default=0
    alpha : float or None, default=None
        The chance that a clean scan has any class judged by this detector: a class
        needs its own and the scan's p-value below ``alpha / K``. None: the group
        test's ``alpha``. A scan given a false-alarm rate sets it to this detector's
        share (:func:`~.base.split_false_alarms`).
    """

    name = "shared_group"
    finds = "backdoor"
    across_classes = True
    alarm_family = "shared"
    # raw images: the scan's own proxy representation, where the development image
    # families were measured (docs/detectors.md); vectors, text and tables name it
    default_kinds = frozenset({"image"})
    default_rank = 8
    statistic_name = "projection on the direction the classes' groups share"
    _parameter_constraints = {
        "rows_per_class": [Interval(int, 20, None)],
        "min_group_fraction": [Interval(Real, 0, 0.5, closed="left")],
        "max_group_fraction": [Interval(Real, 0, 0.5, closed="right")],
        "min_group_rows": [Interval(int, 1, None)],
        "C": [Interval(Real, 0, None, closed="neither")],
        "seed": [Interval(int, 0, None)],
        "alpha": [NONE, Interval(Real, 0, 1, closed="neither")],
    }

    def __init__(
        self,
        *,
        rows_per_class: int = 1024,
        min_group_fraction: float = 0.005,
        max_group_fraction: float = 0.5,
        min_group_rows: int = 5,
        C: float = 0.1,
        seed: int = 0,
        alpha: float | None = None,
    ):
        self.alpha = alpha
        self.rows_per_class = rows_per_class
        self.min_group_fraction = min_group_fraction
        self.max_group_fraction = max_group_fraction
        self.min_group_rows = min_group_rows
        self.C = C
        self.seed = seed

    def alarm_spent(self, group_alpha: float) -> float:
        return self._alpha(group_alpha)

    def _alpha(self, group_alpha: float) -> float:
        # a detector saved before it had its own ``alpha`` judges at the group test's
        own = getattr(self, "alpha", None)
        return group_alpha if own is None else own

    # fitting -------------------------------------------------------------------------
    def _group(self, p: np.ndarray):
        """Two Gaussian groups of ``p``: (fit, member mask), member all False when the
        minor component is no group by the group test's definition."""
        fit = fit_two_groups(p)
        if fit.cut is None:
            return fit, np.zeros(len(p), dtype=bool)
        member = fit.side * (p - fit.cut) > 0
        k = int(member.sum())
        ok = k >= self.min_group_rows and self.min_group_fraction <= k / len(p) <= self.max_group_fraction
        return fit, member if ok else np.zeros(len(p), dtype=bool)

    def _differences(self, parts: list) -> dict:
        """Step 1: per class, the unit mean difference of its spectral group and rest."""
        out = {}
        for i, X in enumerate(parts):
            if len(X) < 20:
                continue
            centred = X - X.mean(axis=0)
            _, s, Vt = np.linalg.svd(centred, full_matrices=False)
            if not s.size or s[0] <= 0:
                continue
            _, member = self._group(centred @ Vt[0])
            if member.any():
                d = X[member].mean(axis=0) - X[~member].mean(axis=0)
                norm = float(np.linalg.norm(d))
                if norm > 0:
                    out[i] = d / norm
        return out

    def extract_output(self, accumulator: dict, samples: Mapping[Any, ClassSample]) -> DetectorState:
        self._validate_params()
        pooled = Pooled.of(samples, self.rows_per_class)
        state = DetectorState(self.name)
        k = len(pooled.labels)
        parts = [pooled.X[pooled.codes == i] for i in range(k)]
        diffs = self._differences(parts) if k >= MIN_CLASSES else {}
        if diffs:
            # poison's difference is (its source class's mean - this class's) + trigger: the
            # part off the span of the class means is the trigger's, the same in every class
            means = np.asarray([X.mean(axis=0) for X in parts])
            basis = np.linalg.svd(means - means.mean(axis=0), full_matrices=False)[2]
            basis = basis[: max(k - 1, 0)]
            diffs = {i: d - (d @ basis.T) @ basis for i, d in diffs.items()}
            diffs = {i: d / np.linalg.norm(d) for i, d in diffs.items() if np.linalg.norm(d) > 1e-9}
        fitted: dict[int, tuple] = {}
        in_group = np.zeros(len(pooled.codes), dtype=bool)
        for i, X in enumerate(parts):
            others = [diffs[j] for j in sorted(diffs) if j != i]
            if len(others) < MIN_CLASSES - 1 or len(X) < 20:
                continue
            v = np.linalg.svd(np.asarray(others), full_matrices=False)[2][0]
            v = v * (1.0 if v[np.argmax(np.abs(v))] > 0 else -1.0)  # one sign, whatever the order
            mean = X.mean(axis=0)
            fit, member = self._group((X - mean) @ v)
            fitted[i] = (mean, v, fit, member)
            in_group[np.flatnonzero(pooled.codes == i)[member]] = True
        pred = self._predicted(pooled, in_group) if in_group.any() else None
        for i, label in enumerate(pooled.labels):
            cls = self._class_state(fitted.get(i), pred, pooled, in_group, i)
            state.classes[label] = cls
            X = np.asarray(samples[label].X)
            state.calibration[label] = cls.statistic(X) if cls is not None else np.zeros(len(X))
        ps = sorted(cls.p for cls in state.classes.values() if cls is not None)
        needed = math.ceil(k / 2)
        state.info = {
            "classes": k,
            "classes_with_a_difference": len(diffs),
            "needed": needed,
            "scan_p": ps[needed - 1] if k >= MIN_CLASSES and len(ps) >= needed else 1.0,
        }
        return state

    def _predicted(self, pooled: Pooled, in_group: np.ndarray) -> np.ndarray:
        """Step 3: per sampled row, the class a model that never saw the groups takes it
        for (group rows: a model of every row outside the groups; other rows: out of
        fold, five folds of the rows outside the groups); -1 where no model could be fit."""
        k = len(pooled.labels)
        X, codes = pooled.X, pooled.codes
        rest = np.flatnonzero(~in_group)
        pred = np.full(len(codes), -1, dtype=np.int64)
        if len(np.unique(codes[rest])) < 2:
            return pred
        model = LinearModel.fit(X[rest], codes[rest], C=self.C, seed=self.seed)
        group = np.flatnonzero(in_group)
        pred[group] = model.proba(X[group], k).argmax(axis=1)
        fold = stratified_folds(codes[rest], 5)
        for f in range(5):
            train, held = rest[fold != f], rest[fold == f]
            if len(held) == 0 or len(np.unique(codes[train])) < 2:
                continue
            m = LinearModel.fit(X[train], codes[train], C=self.C, seed=self.seed)
            pred[held] = m.proba(X[held], k).argmax(axis=1)
        return pred

    def _class_state(self, fitted, pred, pooled, in_group, i) -> SharedClassState | None:
        if fitted is None:
            return None
        mean, v, fit, member = fitted
        rows = pooled.codes == i
        g, r = rows & in_group, rows & ~in_group
        n_g, n_r = int(g.sum()), int(r.sum())
        other = (pred >= 0) & (pred != i) if pred is not None else np.zeros(len(rows), dtype=bool)
        k_g, k_r = int(other[g].sum()), int(other[r].sum())
        taken = np.bincount(pred[g & other], minlength=len(pooled.labels)) if k_g else None
        source = pooled.labels[int(taken.argmax())] if taken is not None else None
        own_p = own_null(fit)[0] if member.any() else 1.0
        other_p = fisher_greater(k_g, n_g, k_r, n_r) if n_g else 1.0
        side = fit.side if fit.side else 1
        return SharedClassState(
            mean=mean, direction=v, side=side,
            cut=side * fit.cut if fit.cut is not None else None,
            center=side * fit.mean_main, scale=fit.sd_main or 1.0, group_center=side * fit.mean_group,
            group_fraction=n_g / max(int(rows.sum()), 1), separation=fit.separation, delta_bic=fit.delta_bic,
            own_p=own_p, group_rows=n_g, group_other=k_g, rest_rows=n_r, rest_other=k_r, other_p=other_p,
            source=source, source_rows=int(taken.max()) if taken is not None else 0,
        )

    # scoring and judging ---------------------------------------------------------------
    def score(self, state: DetectorState, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        X, y = self._check_batch(X, y)
        return class_statistics(self, state, X, y)

    def judge(self, state, label, class_rows, group_test) -> ClassVerdict:
        """Poisoned when the class's own p-value and the scan's (the ``ceil(K/2)``-th
        smallest over the classes) are both below ``alpha / K``."""
        cls: SharedClassState | None = state.classes.get(label)
        stat = state.calibration.get(label, np.empty(0))
        info = state.info or {}
        k = int(info.get("classes", 0))
        base = dict(label=label, detector=self.name, class_rows=int(class_rows), sample_rows=len(stat))
        if k < MIN_CLASSES:
            return ClassVerdict(
                poisoned=False, note=f"{k} classes: a group shared by most classes needs at least {MIN_CLASSES}",
                **base,
            )
        if cls is None:
            return ClassVerdict(
                poisoned=False, note="no direction shared by the other classes' groups, or too few sampled rows",
                **base,
            )
        level = self._alpha(group_test.alpha) / k
        scan_p = float(info["scan_p"])
        p = max(cls.p, scan_p)
        poisoned = p < level and cls.cut is not None and cls.group_rows > 0
        if cls.group_rows:
            note = (
                f"along the direction the other classes' groups share, a group of {cls.group_fraction:.1%} of the "
                f"class (separation {cls.separation:.1f}; one group would split like this with p = {cls.own_p:.1e}); "
                f"a model that never saw the groups takes {cls.group_other} of its {cls.group_rows} sampled rows "
                f"for another class ({cls.source_rows} for class {fmt_label(cls.source)}), and {cls.rest_other} of the "
                f"other {cls.rest_rows} (p = {cls.other_p:.1e})"
                + ("" if cls.mostly_other else ": most of the group is taken for this class, its own rows")
                + "; "
                f"{info['needed']} of {k} classes show this with p <= {scan_p:.1e}; "
                f"p = {p:.1e} {'<' if poisoned else '>='} level {level:.1e}"
            )
        else:
            note = (
                f"no group along the direction the other classes' groups share; "
                f"{info['needed']} of {k} classes show one with p <= {scan_p:.1e}"
            )
        return ClassVerdict(
            poisoned=poisoned, note=note, cut=cls.cut if poisoned else None, side=1,
            center=cls.center, scale=cls.scale, group_center=cls.group_center,
            group_fraction=cls.group_fraction, separation=cls.separation, delta_bic=cls.delta_bic,
            p_value=p, level=level,
            extra={
                "own_p": cls.own_p, "other_class_p": cls.other_p, "scan_p": scan_p,
                "group_taken_for_other": [cls.group_other, cls.group_rows],
                "group_taken_for": cls.source,
                "rest_taken_for_other": [cls.rest_other, cls.rest_rows],
            },
            **base,
        )

    def describe(self, state, X, y, statistic, strength) -> list[str]:
        out = []
        for label, s in zip(plain_labels(y), strength):
            cls: SharedClassState = state.classes[label]
            out.append(
                f"this row is {s:.1f} SD out along the direction that most classes' groups share, in a group of "
                f"{cls.group_fraction:.0%} of class {fmt_label(label)}'s sample; without the groups, a model takes "
                f"{cls.group_other} of the group's {cls.group_rows} sampled rows for another class "
                f"(the rest of the class: {cls.rest_other} of {cls.rest_rows})"
            )
        return out

