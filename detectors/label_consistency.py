"""Label consistency: does the rest of the data agree with a row's label?

Two detectors catch flipped labels:

* :class:`LabelConsistency` — confident learning (Northcutt, Jiang and Chuang, JAIR
  2021) on out-of-fold class probabilities of a linear model cross-fitted on the class
  samples;
* :class:`KnnLabel` — the labels of a row's nearest neighbours among the class samples.

Both judge a class with :class:`~.decision.ExcessTest`: a class holds flipped labels
when its sample has significantly more disagreeing rows than a clean class has (at a
laxer level once the data as a whole are shown to hold flipped labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Any, Mapping

import numpy as np

from ._params import NONE, Interval, OfType, Options
from ._pooled import LinearModel, Pooled, stratified_folds
from .base import Detector, DetectorState, register
from .decision import ExcessTest
from .stats import ClassSample


class _PooledDetector(Detector):
    """Fits on all classes' samples at once; no exact statistics."""

    per_class = False
    two_sided = False
    finds = "flipped labels"

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, accumulator: dict, X: np.ndarray, y: np.ndarray) -> dict:
        self._check_batch(X, y)
        return accumulator

    def merge_accumulators(self, accumulators: list) -> dict:
        return {}

    def _excess(self) -> ExcessTest:
        return ExcessTest(background_rate=self.background_rate, alpha=self.alpha, class_alpha=self.class_alpha)

    def _decide(self, state, label, class_rows, cut: float, verdict_cut: float):
        test = self._excess()
        key = ("excess_counts", verdict_cut)  # once per state, not once per class
        if key not in state.info:
            state.info[key] = test.counts(state.calibration, verdict_cut)
        pooled = test.spread(state.info[key], label)
        verdict = test.decide(
            label, self.name, state.calibration.get(label, np.empty(0)), class_rows,
            cut=cut, verdict_cut=verdict_cut, pooled=pooled,
        )
        return self._gated(verdict, state)

    def _gated(self, verdict, state):
        """A model that misses many labels it does not flag cannot tell a flipped label
        from a hard case: the verdict stands only if, on the sampled rows it does not
        flag, the model's own prediction matches the label at least ``min_accuracy`` of
        the time (on curated data such as digits: ~0.97; on credit default: ~0.78)."""
        acc = state.info.get("unflagged_accuracy")
        verdict.extra["unflagged_accuracy"] = acc
        if verdict.poisoned and acc is not None and acc < self.min_accuracy:
            import dataclasses

            return dataclasses.replace(
                verdict,
                poisoned=False,
                note=f"{verdict.note}; but the model predicts only {acc:.0%} of the labels it "
                f"does not flag (at least {self.min_accuracy:.0%} needed to trust its disagreement)",
            )
        return verdict


@dataclass
class _CLState:
    models: list  # LinearModel per fold
    thresholds: np.ndarray  # per class code: mean out-of-fold self-confidence
    pooled_labels: list


@register
class LabelConsistency(_PooledDetector):
    """Confident learning on out-of-fold probabilities of a cross-fitted linear model.

    A multinomial logistic regression is cross-fitted (``folds`` folds, stratified by
    class) on up to ``rows_per_class`` sampled rows of every class, so every sampled row
    gets class probabilities from a model that never saw it; rows outside the sample get
    the average of the fold models. Per class j the confident-learning threshold t_j is
    the mean out-of-fold probability of j over rows labelled j. The statistic of a row
    labelled y is the log-odds, relative to the thresholds, of its most likely other
    class j against its label:

        s = log(p_j / t_j) - log(p_y / t_y)

    The class is judged on rows with s > log(``verdict_odds``) (the data make another
    class at least 10 times more likely than the label): only such confident disagreement
    counts as evidence, so that data whose labels are intrinsically uncertain are not
    called poisoned. In a class judged poisoned, rows with s > log(``min_odds``) are
    flagged. Score polarity: higher = more suspicious.

    With ``source="probabilities"`` the input rows *are* out-of-fold class probabilities
    (columns in the order of ``probability_labels``), as a cross-fitted proxy network
    gives them, and no model is fitted.

    References
    ----------
    C. Northcutt, L. Jiang, I. Chuang. Confident Learning: Estimating Uncertainty in
    Dataset Labels. JAIR 70, 2021.
    """

    name = "label_consistency"
    statistic_name = "log-odds of another class against the label"
    _parameter_constraints = {
        "folds": [Interval(int, 2, None)],
        "C": [Interval(Real, 0, None, closed="neither")],
        "rows_per_class": [Interval(int, 10, None)],
        "min_odds": [Interval(Real, 1, None, closed="neither")],
        "background_rate": [Interval(Real, 0, 1, closed="neither")],
        "alpha": [Interval(Real, 0, 1, closed="neither")],
        "class_alpha": [Interval(Real, 0, 1, closed="neither")],
        "source": [Options(("fit", "probabilities"))],
        "verdict_odds": [Interval(Real, 1, None, closed="neither")],
        "min_accuracy": [Interval(Real, 0, 1, closed="both")],
        "probability_labels": [OfType(tuple, "a tuple of labels"), NONE],
    }

    def __init__(
        self,
        *,
        folds: int = 5,
        C: float = 0.1,
        rows_per_class: int = 1024,
        min_odds: float = 5.0,
        background_rate: float = 0.005,
        alpha: float = 1e-3,
        class_alpha: float = 0.05,
        source: str = "fit",
        probability_labels: tuple | None = None,
        verdict_odds: float = 10.0,
        min_accuracy: float = 0.9,
    ):
        self.min_accuracy = min_accuracy
        self.verdict_odds = verdict_odds
        self.source = source
        self.probability_labels = probability_labels
        self.folds = folds
        self.C = C
        self.rows_per_class = rows_per_class
        self.min_odds = min_odds
        self.background_rate = background_rate
        self.alpha = alpha
        self.class_alpha = class_alpha

    def extract_output(self, accumulator: dict, samples: Mapping[Any, ClassSample]) -> DetectorState:
        self._validate_params()
        if self.source == "probabilities":
            return self._from_probabilities(samples)
        pooled = Pooled.of(samples, self.rows_per_class)
        state = DetectorState(self.name)
        k = len(pooled.labels)
        for i, label in enumerate(pooled.labels):
            state.classes[label] = i
        if k < 2:
            state.info["model"] = None
            for label in pooled.labels:
                state.calibration[label] = np.zeros(len(samples[label]))
            return state
        fold = stratified_folds(pooled.codes, pooled.positions, self.folds)
        oof = np.zeros((len(pooled.codes), k))
        models = []
        for f in range(self.folds):
            train = fold != f
            if not train.any() or train.all():
                continue
            m = LinearModel.fit(pooled.X[train], pooled.codes[train], self.C)
            models.append(m)
            oof[~train] = m.proba(pooled.X[~train], k)
        thresholds = np.array(
            [oof[pooled.codes == j, j].mean() if (pooled.codes == j).any() else 1.0 for j in range(k)]
        )
        thresholds = np.clip(thresholds, 1e-6, 1.0)
        model = _CLState(models, thresholds, pooled.labels)
        state.info["model"] = model
        stat = _log_odds(oof, pooled.codes, thresholds)
        for i, label in enumerate(pooled.labels):
            state.calibration[label] = stat[pooled.codes == i]
        state.info["out_of_fold_accuracy"] = float((oof.argmax(1) == pooled.codes).mean())
        kept = stat <= np.log(self.min_odds)
        state.info["unflagged_accuracy"] = float((oof.argmax(1) == pooled.codes)[kept].mean()) if kept.any() else None
        return state

    @property
    def input(self) -> str:
        return "probabilities" if self.source == "probabilities" else "representation"

    @property
    def accumulator_key(self) -> str:
        return f"{self.name}:{self.input}"

    def _from_probabilities(self, samples: Mapping[Any, ClassSample]) -> DetectorState:
        labels = list(self.probability_labels or ())
        if not labels:
            raise ValueError("label_consistency with source='probabilities' needs probability_labels")
        state = DetectorState(self.name)
        index = {label: i for i, label in enumerate(labels)}
        missing = [label for label in samples if label not in index]
        if missing:
            raise ValueError(f"no probability column for class(es) {missing[:5]}")
        parts = {label: np.asarray(samples[label].X, dtype=np.float64) for label in samples}
        thresholds = np.ones(len(labels))
        for label, P in parts.items():
            if len(P):
                thresholds[index[label]] = max(float(P[:, index[label]].mean()), 1e-6)
        model = _CLState([], thresholds, labels)
        state.info["model"] = model
        state.info["given_probabilities"] = True
        hits, total = 0, 0
        for label, P in parts.items():
            state.classes[label] = index[label]
            stat = _log_odds(P, np.full(len(P), index[label]), thresholds)
            state.calibration[label] = stat
            kept = stat <= np.log(self.min_odds)
            hits += int((P[kept].argmax(axis=1) == index[label]).sum())
            total += int(kept.sum())
        state.info["unflagged_accuracy"] = hits / total if total else None
        return state

    def _proba(self, state: DetectorState, X: np.ndarray) -> np.ndarray:
        model: _CLState = state.info["model"]
        if state.info.get("given_probabilities"):
            return np.asarray(X, dtype=np.float64)
        k = len(model.pooled_labels)
        return np.mean([m.proba(X, k) for m in model.models], axis=0)

    def score(self, state: DetectorState, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        X, y = self._check_batch(X, y)
        self._require_fitted(state, set(_plain(y)))
        if state.info.get("model") is None:
            return np.zeros(len(y))
        codes = np.array([state.classes[v] for v in _plain(y)], dtype=np.int64)
        return _log_odds(self._proba(state, X), codes, state.info["model"].thresholds)

    def judge(self, state, label, class_rows, group_test):
        return self._decide(state, label, class_rows, float(np.log(self.min_odds)), float(np.log(self.verdict_odds)))

    def describe(self, state, X, y, statistic, strength) -> list[str]:
        model: _CLState = state.info["model"]
        p = self._proba(state, X)
        out = []
        for row, label in zip(p, _plain(y)):
            own = state.classes[label]
            other = int(np.argmax(np.where(np.arange(len(row)) == own, -1, row)))
            out.append(
                f"a model that never saw this row gives its label {_fmt(label)} p = {row[own]:.2f} "
                f"and class {_fmt(model.pooled_labels[other])} p = {row[other]:.2f}"
            )
        return out


def _log_odds(p: np.ndarray, codes: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    rows = np.arange(len(codes))
    own = p[rows, codes]
    other = p.copy()
    other[rows, codes] = -1.0
    j = other.argmax(axis=1)
    pj = other[rows, j]
    eps = 1e-12
    return np.log((pj + eps) / thresholds[j]) - np.log((own + eps) / thresholds[codes])


@dataclass
class _KnnState:
    mean: np.ndarray
    scale: np.ndarray
    basis: np.ndarray  # (d, c)
    refs: np.ndarray  # (m, c)
    ref_codes: np.ndarray
    ref_positions: np.ndarray
    labels: list


@register
class KnnLabel(_PooledDetector):
    """Label disagreement with the nearest neighbours among the class samples.

    The reference set is up to ``rows_per_class`` sampled rows of every class,
    standardised and projected on their top ``components`` principal directions. A row's
    statistic is the share of its ``k`` nearest references (Euclidean, the row itself
    excluded) whose label differs from its own. The class is judged on rows where at least
    ``verdict_disagreement`` of the neighbours disagree; in a class judged poisoned, rows
    where at least ``min_disagreement`` do are flagged. Score polarity: higher = more
    suspicious.
    """

    name = "knn_label"
    statistic_name = "share of nearest neighbours with another label"
    _parameter_constraints = {
        "k": [Interval(int, 1, None)],
        "rows_per_class": [Interval(int, 10, None)],
        "components": [Interval(int, 1, None)],
        "min_disagreement": [Interval(Real, 0, 1, closed="right")],
        "background_rate": [Interval(Real, 0, 1, closed="neither")],
        "alpha": [Interval(Real, 0, 1, closed="neither")],
        "class_alpha": [Interval(Real, 0, 1, closed="neither")],
        "verdict_disagreement": [Interval(Real, 0, 1, closed="right")],
        "min_accuracy": [Interval(Real, 0, 1, closed="both")],
    }

    def __init__(
        self,
        *,
        k: int = 10,
        rows_per_class: int = 512,
        components: int = 32,
        min_disagreement: float = 0.7,
        background_rate: float = 0.005,
        alpha: float = 1e-3,
        class_alpha: float = 0.05,
        verdict_disagreement: float = 0.9,
        min_accuracy: float = 0.9,
    ):
        self.min_accuracy = min_accuracy
        self.verdict_disagreement = verdict_disagreement
        self.k = k
        self.rows_per_class = rows_per_class
        self.components = components
        self.min_disagreement = min_disagreement
        self.background_rate = background_rate
        self.alpha = alpha
        self.class_alpha = class_alpha

    def extract_output(self, accumulator: dict, samples: Mapping[Any, ClassSample]) -> DetectorState:
        self._validate_params()
        pooled = Pooled.of(samples, self.rows_per_class)
        state = DetectorState(self.name)
        for i, label in enumerate(pooled.labels):
            state.classes[label] = i
        if not pooled.labels:
            return state
        mean = pooled.X.mean(axis=0)
        scale = pooled.X.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        S = (pooled.X - mean) / scale
        c = min(self.components, S.shape[1], max(1, S.shape[0] - 1))
        _, _, Vt = np.linalg.svd(S, full_matrices=False)
        basis = Vt[:c].T.copy()
        refs = S @ basis
        knn = _KnnState(mean, scale, basis, refs, pooled.codes, pooled.positions, pooled.labels)
        state.info["refs"] = knn
        share = self._disagreement(knn, refs, pooled.codes, pooled.positions)[0]
        for i, label in enumerate(pooled.labels):
            state.calibration[label] = share[pooled.codes == i]
        kept = share < self.min_disagreement - 1e-9
        # the neighbours' vote agrees with a row's label when fewer than half disagree
        state.info["unflagged_accuracy"] = float((share[kept] < 0.5).mean()) if kept.any() else None
        return state

    def _disagreement(self, knn: _KnnState, Z: np.ndarray, codes: np.ndarray, positions=None):
        """(share disagreeing, majority other code among the neighbours, its count) per row."""
        k = min(self.k, len(knn.ref_codes) - (1 if positions is not None else 0))
        share = np.zeros(len(Z))
        major = np.zeros(len(Z), dtype=np.int64)
        count = np.zeros(len(Z), dtype=np.int64)
        if k < 1:
            return share, codes.copy(), count
        ref_sq = np.einsum("ij,ij->i", knn.refs, knn.refs)
        n_codes = len(knn.labels)
        for start in range(0, len(Z), 2048):
            z = Z[start : start + 2048]
            d2 = ref_sq[None, :] - 2 * z @ knn.refs.T + np.einsum("ij,ij->i", z, z)[:, None]
            if positions is not None:  # a sampled row is not its own neighbour
                d2[positions[start : start + 2048, None] == knn.ref_positions[None, :]] = np.inf
            nn = np.argpartition(d2, k - 1, axis=1)[:, :k]
            # ties at the k-th distance are broken by reference order: deterministic
            nn_codes = knn.ref_codes[nn]
            mine = codes[start : start + 2048, None]
            share[start : start + 2048] = (nn_codes != mine).mean(axis=1)
            counts = np.zeros((len(z), n_codes), dtype=np.int64)
            np.add.at(counts, (np.repeat(np.arange(len(z)), k), nn_codes.ravel()), 1)
            counts[np.arange(len(z)), codes[start : start + 2048]] = -1
            major[start : start + 2048] = counts.argmax(axis=1)
            count[start : start + 2048] = counts.max(axis=1)
        return share, major, count

    def _project(self, knn: _KnnState, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float64) - knn.mean) / knn.scale) @ knn.basis

    def score(self, state: DetectorState, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        X, y = self._check_batch(X, y)
        self._require_fitted(state, set(_plain(y)))
        knn: _KnnState = state.info.get("refs")
        if knn is None:
            return np.zeros(len(y))
        codes = np.array([state.classes[v] for v in _plain(y)], dtype=np.int64)
        return self._disagreement(knn, self._project(knn, X), codes)[0]

    def judge(self, state, label, class_rows, group_test):
        # a share of at least min_disagreement is flagged: cut just below it
        return self._decide(state, label, class_rows, self.min_disagreement - 1e-9, self.verdict_disagreement - 1e-9)

    def describe(self, state, X, y, statistic, strength) -> list[str]:
        knn: _KnnState = state.info["refs"]
        codes = np.array([state.classes[v] for v in _plain(y)], dtype=np.int64)
        k = min(self.k, len(knn.ref_codes))
        share, major, count = self._disagreement(knn, self._project(knn, X), codes)
        return [
            f"label {_fmt(label)} disagrees with {int(round(s * k))} of its {k} nearest "
            f"neighbours ({c} of them {_fmt(knn.labels[m])})"
            for label, s, m, c in zip(_plain(y), share, major, count)
        ]


def _plain(y) -> list:
    return [v.item() if isinstance(v, np.generic) else v for v in y]


def _fmt(label) -> str:
    return repr(label) if isinstance(label, str) else str(label)
