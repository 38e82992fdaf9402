"""Label consistency: does the rest of the data agree with a row's label?

Two detectors catch flipped labels:

* :class:`LabelConsistency` — confident learning (Northcutt, Jiang and Chuang, JAIR
  2021) on out-of-fold class probabilities of a linear model cross-fitted on the class
  samples;
* :class:`KnnLabel` — the labels of a row's nearest neighbours among the class samples.

Both read what the scan has that was *not fitted to the row's label* (a proxy trained
until it fits the labels has learned the flips): the encoded table, the user's vectors,
or a cross-fitted proxy's out-of-fold probabilities. Both judge a class with
:class:`~.decision.ExcessTest` against their own calibration (:class:`NoiseCalibration`):
a class holds flipped labels when its sample has more strongly disputed labels than it
would have if its labels were drawn from the calibrated out-of-fold model.
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
    """Fits on all classes' samples at once; no exact statistics.

    Subclasses give, for the sampled rows, class probabilities that were not fitted to
    the row's own label (out of fold) and, per row and hypothetical label, whether that
    label would count as *strongly disputed*; :meth:`_calibrated` turns them into the
    verdicts' evidence.
    """

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
        return ExcessTest(alpha=self.alpha, class_alpha=self.class_alpha)

    def _calibrated(self, state, labels: list, P: np.ndarray, codes: np.ndarray, strong: np.ndarray, cal=None):
        """Fit the label-noise calibration on the sampled rows' out-of-fold probabilities
        ``P`` and record, per class, the evidence the verdict is made on.

        ``strong[i, c]``: row i would be a strong disagreement if its label were c. A
        class's evidence is ``(rows labelled c that are, sampled rows, expected)``, where
        ``expected = sum_i q_ic strong[i, c]`` is how many rows of c would be strong
        disagreements if every sampled row's label were drawn from the calibrated clean
        model q (:class:`NoiseCalibration`)."""
        cal = cal if cal is not None else NoiseCalibration.fit(P, codes)
        state.info["noise"] = cal
        q = cal.clean(P)
        stat = cal.flip_log_odds(P, codes)
        evidence = {}
        for i, label in enumerate(labels):
            mine = codes == i
            state.calibration[label] = stat[mine]
            evidence[label] = (int(strong[mine, i].sum()), int(mine.sum()), float((q[:, i] * strong[:, i]).sum()))
        state.info["evidence"] = evidence
        state.info["temperature"] = cal.temperature
        state.info["flip_rate"] = float(cal.floors.sum())
        state.info["out_of_fold_accuracy"] = float((P.argmax(1) == codes).mean()) if len(codes) else None
        return state

    def _decide(self, state, label, class_rows):
        evidence = state.info.get("evidence") or {}
        test = self._excess()
        strong, n, expected = evidence.get(label, (0, 0, 0.0))
        cut = float(np.log(self.min_posterior / (1 - self.min_posterior)))
        return test.decide(
            label, self.name, state.calibration.get(label, np.empty(0)), class_rows, cut,
            strong=strong, expected=expected, classes=max(len(evidence), 1),
            pooled=test.spread(evidence, label),
        )


@dataclass
class NoiseCalibration:
    """How a clean label relates to out-of-fold probabilities, fitted on the scanned data.

    The label of a row with out-of-fold probabilities p is modelled as

        P(y = c | p) = (1 - sum_j e_j) * q_c + e_c,   q = softmax(log(p) / T)

    a temperature ``T`` (the out-of-fold model's own miscalibration: a regularised linear
    model is underconfident, a network's softmax overconfident) and a *floor* ``e_c`` per
    label: the share of rows that carry label c whatever they look like, which is what
    flipped labels are. Both are fitted by maximum likelihood (EM; the floors absorb the
    rows the temperature cannot explain). ``q`` is the clean model: a class is judged
    against labels drawn from q, and a row's posterior probability of being a flip is
    ``e_y / ((1 - sum e) q_y + e_y)``.

    Flips that a model learns as the label of a whole region (every 1 that looks like a
    7, relabelled) are part of q, not of the floors: such targeted flips are invisible to
    this calibration (docs/detectors.md).
    """

    temperature: float
    floors: np.ndarray  # e_c per class code

    @classmethod
    def fit(cls, P: np.ndarray, codes: np.ndarray, iters: int = 200, tol: float = 1e-9) -> "NoiseCalibration":
        from scipy.optimize import minimize_scalar

        P = np.asarray(P, dtype=np.float64)
        n, k = P.shape
        if n == 0 or k < 2:
            return cls(1.0, np.zeros(k))
        L = np.log(np.clip(P, 1e-300, 1.0))
        rows = np.arange(n)
        floors = np.full(k, 0.01 / k)
        t = 1.0
        ll_prev = -np.inf
        for _ in range(iters):
            q = _tempered(L, t)
            lik = (1 - floors.sum()) * q[rows, codes] + floors[codes]
            ll = float(np.log(lik).sum())
            if ll - ll_prev <= tol * abs(ll):
                break
            ll_prev = ll
            w = floors[codes] / lik  # posterior that the row's label is a floor (a flip)
            floors = np.bincount(codes, weights=w, minlength=k) / n
            keep = 1 - w

            def nll(log_t):
                return -float((keep * np.log(np.clip(_tempered(L, np.exp(log_t))[rows, codes], 1e-300, 1))).sum())

            t = float(np.exp(minimize_scalar(nll, bounds=(np.log(0.02), np.log(50.0)), method="bounded",
                                             options={"xatol": 1e-4}).x))
        return cls(t, floors)

    def clean(self, P: np.ndarray) -> np.ndarray:
        """The clean model q of rows with out-of-fold probabilities ``P``."""
        return _tempered(np.log(np.clip(np.asarray(P, dtype=np.float64), 1e-300, 1.0)), self.temperature)

    def flip_log_odds(self, P: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Posterior log-odds that each row's label is a flip (> 0: more likely a flip)."""
        q = self.clean(P)
        own = q[np.arange(len(codes)), codes]
        floor = np.maximum(self.floors[codes], 1e-12)
        return np.log(floor) - np.log(np.maximum((1 - self.floors.sum()) * own, 1e-300))


def _tempered(L: np.ndarray, t: float) -> np.ndarray:
    z = L / t
    z = z - z.max(axis=1, keepdims=True)
    q = np.exp(z)
    return q / q.sum(axis=1, keepdims=True)


@dataclass
class _CLState:
    models: list  # LinearModel per fold
    thresholds: np.ndarray  # per class code: mean out-of-fold self-confidence
    pooled_labels: list


@register
class LabelConsistency(_PooledDetector):
    """Confident learning on out-of-fold probabilities, judged against their own calibration.

    A multinomial logistic regression is cross-fitted (``folds`` folds, stratified by
    class) on up to ``rows_per_class`` sampled rows of every class, so every sampled row
    gets class probabilities from a model that never saw it; rows outside the sample get
    the average of the fold models. The input is what the scan has that was not fitted
    to the labels: the encoded table for tabular inputs, the user's vectors for a
    features input, the proxy's out-of-fold probabilities when there are some.

    The probabilities are calibrated on the sample (:class:`NoiseCalibration`: a
    temperature, and a floor per label that flipped labels fill). With t_j the mean
    calibrated probability of class j over rows labelled j (the confident-learning
    threshold), a row is a *strong disagreement* for label y when its most likely other
    class j has ``q_j / t_j > verdict_odds * q_y / t_y``. A class is judged on how many
    of its sampled rows are strong disagreements against how many a clean class would
    have if every sampled row's label were drawn from the calibrated clean model
    (:class:`~.decision.ExcessTest`). The row statistic is the posterior log-odds that
    the label is a flip; in a class judged poisoned, rows whose posterior is at least
    ``min_posterior`` are flagged. Score polarity: higher = more suspicious.

    With ``source="probabilities"`` the input rows *are* out-of-fold class probabilities
    (columns in the order of ``probability_labels``), as a cross-fitted proxy network
    gives them, and no model is fitted.

    Parameters
    ----------
    folds, C, rows_per_class
        The cross-fitted model: folds, inverse regularisation, sampled rows per class.
    verdict_odds : float, default=10
        What counts as a strong disagreement (the data make another class this many
        times more likely than the label, relative to the thresholds). A definition of
        the evidence counted, not a significance level: the level is ``alpha``.
    alpha : float, default=0.05
        Family-wise error over the classes: the probability that a scan whose labels are
        clean has any class judged poisoned by this detector is at most ``alpha``
        (each class is tested at ``alpha / (2 K)`` for K classes, and the pooled stage
        below at the same level).
    class_alpha : float, default=0.05
        Level of a class's own test once the other classes, pooled, are shown (at
        ``alpha / (2 K)``) to hold flipped labels.
    min_posterior : float, default=0.5
        In a class judged poisoned, the posterior probability of being a flip above which
        a row is flagged.

    References
    ----------
    C. Northcutt, L. Jiang, I. Chuang. Confident Learning: Estimating Uncertainty in
    Dataset Labels. JAIR 70, 2021.
    """

    name = "label_consistency"
    statistic_name = "posterior log-odds that the label is a flip"
    _parameter_constraints = {
        "folds": [Interval(int, 2, None)],
        "C": [Interval(Real, 0, None, closed="neither")],
        "rows_per_class": [Interval(int, 10, None)],
        "alpha": [Interval(Real, 0, 1, closed="neither")],
        "class_alpha": [Interval(Real, 0, 1, closed="neither")],
        "source": [Options(("fit", "probabilities"))],
        "verdict_odds": [Interval(Real, 1, None, closed="neither")],
        "min_posterior": [Interval(Real, 0, 1, closed="neither")],
        "probability_labels": [OfType(tuple, "a tuple of labels"), NONE],
    }

    def __init__(
        self,
        *,
        folds: int = 5,
        C: float = 0.1,
        rows_per_class: int = 1024,
        alpha: float = 0.05,
        class_alpha: float = 0.05,
        source: str = "fit",
        probability_labels: tuple | None = None,
        verdict_odds: float = 10.0,
        min_posterior: float = 0.5,
    ):
        self.verdict_odds = verdict_odds
        self.source = source
        self.probability_labels = probability_labels
        self.folds = folds
        self.C = C
        self.rows_per_class = rows_per_class
        self.alpha = alpha
        self.class_alpha = class_alpha
        self.min_posterior = min_posterior

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
        fold = stratified_folds(pooled.codes, self.folds)
        oof = np.zeros((len(pooled.codes), k))
        models = []
        for f in range(self.folds):
            train = fold != f
            if not train.any() or train.all():
                continue
            m = LinearModel.fit(pooled.X[train], pooled.codes[train], self.C)
            models.append(m)
            oof[~train] = m.proba(pooled.X[~train], k)
        return self._judged_on(state, oof, pooled.codes, pooled.labels, _CLState(models, np.ones(k), pooled.labels))

    def _judged_on(self, state, P, codes, labels, model: "_CLState") -> DetectorState:
        cal = NoiseCalibration.fit(P, codes)
        q = cal.clean(P)
        k = len(labels)
        thresholds = np.array(
            [q[codes == j, j].mean() if (codes == j).any() else 1.0 for j in range(k)]
        )
        model.thresholds = np.clip(thresholds, 1e-6, 1.0)
        state.info["model"] = model
        strong = _log_odds_all(q, model.thresholds) > np.log(self.verdict_odds)
        return self._calibrated(state, labels, P, codes, strong, cal)

    @property
    def input(self) -> str:
        return "probabilities" if self.source == "probabilities" else "unfitted"

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
        for label in samples:
            state.classes[label] = index[label]
        present = sorted(samples, key=lambda v: index[v])
        P = np.concatenate([np.asarray(samples[v].X, dtype=np.float64) for v in present]) if present else np.zeros((0, len(labels)))
        codes = np.concatenate([np.full(len(samples[v]), index[v], dtype=np.int64) for v in present]) if present else np.zeros(0, np.int64)
        state.info["given_probabilities"] = True
        state = self._judged_on(state, P, codes, labels, _CLState([], np.ones(len(labels)), labels))
        # only the classes of the scan are judged (a probability column may have no rows)
        state.info["evidence"] = {v: state.info["evidence"][v] for v in present}
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
        return state.info["noise"].flip_log_odds(self._proba(state, X), codes)

    def judge(self, state, label, class_rows, group_test):
        return self._decide(state, label, class_rows)

    def describe(self, state, X, y, statistic, strength) -> list[str]:
        model: _CLState = state.info["model"]
        p = state.info["noise"].clean(self._proba(state, X))
        out = []
        for row, label in zip(p, _plain(y)):
            own = state.classes[label]
            other = int(np.argmax(np.where(np.arange(len(row)) == own, -1, row)))
            out.append(
                f"a model that never saw this row gives its label {_fmt(label)} p = {row[own]:.2f} "
                f"and class {_fmt(model.pooled_labels[other])} p = {row[other]:.2f}"
            )
        return out


def _log_odds_all(p: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``s[i, c]`` = log(p_ij / t_j) - log(p_ic / t_c) for the most likely other class j."""
    eps = 1e-12
    R = np.log(p + eps) - np.log(thresholds)
    n, k = R.shape
    order = np.argsort(-R, axis=1, kind="stable")
    first = R[np.arange(n), order[:, 0]]
    second = R[np.arange(n), order[:, 1]] if k > 1 else np.full(n, -np.inf)
    other = np.where(np.arange(k)[None, :] == order[:, :1], second[:, None], first[:, None])
    return other - R


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
    standardised and projected on their top ``components`` principal directions (of the
    encoded table, the user's vectors, or the proxy's out-of-fold probabilities: what
    the scan has that was not fitted to the labels). A row's ``k`` nearest references
    (Euclidean, the row itself excluded) give it class probabilities, the add-one
    estimate ``(n_c + 1) / (k + K)``, which are calibrated like label consistency's
    (:class:`NoiseCalibration`). A row is a strong disagreement when at least
    ``verdict_disagreement`` of its neighbours carry another label; a class is judged on
    how many of its sampled rows are, against how many a clean class would have with
    labels drawn from the calibrated clean model (:class:`~.decision.ExcessTest`). The row
    statistic is the posterior log-odds that the label is a flip; in a class judged
    poisoned, rows whose posterior is at least ``min_posterior`` are flagged. Score
    polarity: higher = more suspicious.

    ``alpha``, ``class_alpha`` and ``min_posterior`` mean what they mean for
    :class:`LabelConsistency`.
    """

    name = "knn_label"
    statistic_name = "posterior log-odds that the label is a flip (nearest neighbours)"
    _parameter_constraints = {
        "k": [Interval(int, 1, None)],
        "rows_per_class": [Interval(int, 10, None)],
        "components": [Interval(int, 1, None)],
        "alpha": [Interval(Real, 0, 1, closed="neither")],
        "class_alpha": [Interval(Real, 0, 1, closed="neither")],
        "verdict_disagreement": [Interval(Real, 0, 1, closed="right")],
        "min_posterior": [Interval(Real, 0, 1, closed="neither")],
    }

    def __init__(
        self,
        *,
        k: int = 10,
        rows_per_class: int = 512,
        components: int = 32,
        alpha: float = 0.05,
        class_alpha: float = 0.05,
        verdict_disagreement: float = 0.9,
        min_posterior: float = 0.5,
    ):
        self.verdict_disagreement = verdict_disagreement
        self.k = k
        self.rows_per_class = rows_per_class
        self.components = components
        self.alpha = alpha
        self.class_alpha = class_alpha
        self.min_posterior = min_posterior

    input = "unfitted"

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
        counts = self._counts(knn, refs, pooled.codes, pooled.positions)
        P = self._proba(knn, counts)
        kk = np.maximum(counts.sum(axis=1, keepdims=True), 1)
        strong = 1 - counts / kk >= self.verdict_disagreement - 1e-9
        return self._calibrated(state, pooled.labels, P, pooled.codes, strong)

    def _counts(self, knn: _KnnState, Z: np.ndarray, codes: np.ndarray, positions=None) -> np.ndarray:
        """Per row, how many of its nearest references carry each class code."""
        k = min(self.k, len(knn.ref_codes) - (1 if positions is not None else 0))
        n_codes = len(knn.labels)
        counts = np.zeros((len(Z), n_codes), dtype=np.int64)
        if k < 1:
            return counts
        ref_sq = np.einsum("ij,ij->i", knn.refs, knn.refs)
        for start in range(0, len(Z), 2048):
            z = Z[start : start + 2048]
            d2 = ref_sq[None, :] - 2 * z @ knn.refs.T + np.einsum("ij,ij->i", z, z)[:, None]
            if positions is not None:  # a sampled row is not its own neighbour
                d2[positions[start : start + 2048, None] == knn.ref_positions[None, :]] = np.inf
                nn = np.argpartition(d2, k - 1, axis=1)[:, :k]
            else:
                # pass 2 meets the sampled rows again: a reference at distance 0 is the
                # row itself (or an exact copy), which cannot vouch for its label
                m = min(k + 1, d2.shape[1])
                near = np.argpartition(d2, m - 1, axis=1)[:, :m]
                near = np.take_along_axis(near, np.argsort(np.take_along_axis(d2, near, 1), axis=1, kind="stable"), 1)
                first = np.take_along_axis(d2, near[:, :1], 1)[:, 0]
                self_hit = first <= 1e-9 * (1.0 + np.einsum("ij,ij->i", z, z))
                nn = np.where(self_hit[:, None], near[:, 1 : k + 1], near[:, :k]) if m > k else near[:, :k]
            # ties at the k-th distance are broken by reference order: deterministic
            nn_codes = knn.ref_codes[nn]
            block = np.zeros((len(z), n_codes), dtype=np.int64)
            np.add.at(block, (np.repeat(np.arange(len(z)), k), nn_codes.ravel()), 1)
            counts[start : start + 2048] = block
        return counts

    @staticmethod
    def _proba(knn: _KnnState, counts: np.ndarray) -> np.ndarray:
        """The add-one estimate of the class probabilities from neighbour counts."""
        k = counts.sum(axis=1, keepdims=True)
        return (counts + 1.0) / (k + counts.shape[1])

    def _project(self, knn: _KnnState, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float64) - knn.mean) / knn.scale) @ knn.basis

    def score(self, state: DetectorState, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        X, y = self._check_batch(X, y)
        self._require_fitted(state, set(_plain(y)))
        knn: _KnnState = state.info.get("refs")
        if knn is None or "noise" not in state.info:
            return np.zeros(len(y))
        codes = np.array([state.classes[v] for v in _plain(y)], dtype=np.int64)
        counts = self._counts(knn, self._project(knn, X), codes)
        return state.info["noise"].flip_log_odds(self._proba(knn, counts), codes)

    def judge(self, state, label, class_rows, group_test):
        return self._decide(state, label, class_rows)

    def describe(self, state, X, y, statistic, strength) -> list[str]:
        knn: _KnnState = state.info["refs"]
        codes = np.array([state.classes[v] for v in _plain(y)], dtype=np.int64)
        counts = self._counts(knn, self._project(knn, X), codes)
        k = int(counts[0].sum()) if len(counts) else min(self.k, len(knn.ref_codes))
        out = []
        for label, code, row in zip(_plain(y), codes, counts):
            other = row.copy()
            other[code] = -1
            m = int(other.argmax())
            out.append(
                f"label {_fmt(label)} disagrees with {k - int(row[code])} of its {k} nearest "
                f"neighbours ({int(row[m])} of them {_fmt(knn.labels[m])})"
            )
        return out


def _plain(y) -> list:
    return [v.item() if isinstance(v, np.generic) else v for v in y]


def _fmt(label) -> str:
    return repr(label) if isinstance(label, str) else str(label)
