"""Label consistency: does the rest of the data agree with a row's label?

Two detectors catch flipped labels:

* :class:`LabelConsistency` — confident learning (Northcutt, Jiang and Chuang, JAIR
  2021) on out-of-fold class probabilities of a model cross-fitted on the class
  samples (linear; on tables, where a quadratic model or trees fit better, a mixture);
* :class:`KnnLabel` — the labels of a row's nearest neighbours among the class samples.

Both read what the scan has that was *not fitted to the row's label* (a proxy trained
until it fits the labels has learned the flips): the encoded table, the user's vectors,
or a cross-fitted proxy's out-of-fold probabilities. Both judge a class with
:class:`~.decision.ExcessTest` against their own calibration (:class:`NoiseCalibration`):
a class holds flipped labels when its sample has more strongly disputed labels than it
would have if its labels were drawn from the calibrated out-of-fold model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from numbers import Real
from typing import Any, Mapping

import numpy as np

from ._params import NONE, Interval, OfType, Options
from ._pooled import (
    QUADRATIC_MAX_COLUMNS,
    LinearModel,
    Pooled,
    PooledDetector,
    QuadraticModel,
    TreeModel,
    fmt_label,
    plain_labels,
    stratified_folds,
)
from .base import ALL_KINDS, DetectorState, register
from .stats import ClassSample


@dataclass
class _CLState:
    models: list  # LinearModel or TreeModel per fold
    thresholds: np.ndarray  # per class code: mean out-of-fold self-confidence
    pooled_labels: list


@register
class LabelConsistency(PooledDetector):
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
    class j has ``q_j / t_j > verdict_odds * q_y / t_y``. A class's evidence is how many
    of its sampled rows are strong disagreements against how many a clean class would
    have if every sampled row's label were drawn from the calibrated clean model; it is
    judged by where it falls among the same evidence, calibration fit included, of labels
    redrawn from the out-of-fold probabilities under a temperature alone (no flips;
    :class:`~.excess.ExcessTest`). The row statistic is the posterior log-odds that
    the label is a flip; in a class judged poisoned, rows whose posterior is at least
    ``min_posterior`` are flagged (or, with None, those beyond the cut that maximises
    the expected F1 of the class's flags, :func:`~._pooled.f1_cut`). Score polarity:
    higher = more suspicious.

    With ``model="auto"`` (the default on tables) a quadratic model and gradient-boosted
    trees are cross-fitted on the same folds as well: a label that depends on columns
    jointly (survival on sex and class together) makes a linear model confidently wrong
    in places, and labels redrawn from that model cannot show it, so the real labels
    would stand out as flips. Where a richer model gives the sampled labels the higher
    out-of-fold likelihood, the null is the likelihood-weighted mixture of the three;
    where none does (random flips are noise a model of the columns cannot learn), the
    linear model.

    With ``source="probabilities"`` the input rows *are* out-of-fold class probabilities
    (columns in the order of ``probability_labels``), as a cross-fitted proxy network
    gives them, and no model is fitted.

    Parameters
    ----------
    folds, C, rows_per_class
        The cross-fitted model: folds, inverse regularisation, sampled rows per class.
    model : {"linear", "quadratic", "trees", "auto"}, default="linear"
        The cross-fitted model: multinomial logistic regression, the same on the
        columns and their pairwise products (:class:`~._pooled.QuadraticModel`),
        gradient-boosted trees (scikit-learn's histogram boosting, 100 rounds of 15
        leaves), or (``"auto"``, the scan's choice for tabular inputs) the linear model
        unless a richer one has the lower out-of-fold log-loss on the sample, and then
        the mixture of all three (quadratic only up to ``QUADRATIC_MAX_COLUMNS``
        varying columns) whose weights maximise the out-of-fold likelihood
        (:func:`mixture_weights`). The choice, every loss and the weights are in the
        state's ``model_choice``.
    verdict_odds : float, default=10
        What counts as a strong disagreement (the data make another class this many
        times more likely than the label, relative to the thresholds). A definition of
        the evidence counted, not a significance level: the level is ``alpha``.
    alpha : float, default=0.05
        Family-wise error over the classes: the probability that a scan whose labels
        follow the out-of-fold model without flips has any class judged poisoned by this
        detector is at most ``alpha`` (with four classes or more, half for a class's own
        evidence and half for the pooled stage below). A scan given a false-alarm rate
        sets it to the label detectors' share (:func:`~.base.split_false_alarms`).
    class_alpha : float, default=0.05
        Level of a class's own evidence among the redraws once the other classes,
        pooled, are shown to hold flipped labels.
    draws : int or None, default=None
        Most redraws of the labels (:class:`~.excess.ExcessTest`); fewer when no class
        can reach its level. None: enough for the level (``ceil(2 / level)``, at least
        100).
    min_posterior : float or None, default=0.5
        In a class judged poisoned, the posterior probability of being a flip above which
        a row is flagged; None: the cut that maximises the expected F1 of the class's
        flags under the sampled rows' posteriors (:func:`~._pooled.f1_cut`; every row
        with a posterior above 1/2 is flagged, and more where the posteriors are modest,
        at a cost in clean rows measured in docs/detectors.md).

    References
    ----------
    C. Northcutt, L. Jiang, I. Chuang. Confident Learning: Estimating Uncertainty in
    Dataset Labels. JAIR 70, 2021.
    """

    name = "label_consistency"
    default_kinds = ALL_KINDS
    default_rank = 4

    @classmethod
    def params_for(cls, kind: str, probability_labels: tuple = ()) -> dict:
        # a cross-fitted proxy's out-of-fold probabilities, where the scan has them
        if probability_labels:
            return {"source": "probabilities", "probability_labels": tuple(probability_labels)}
        # a table's label may depend on its columns jointly (survival on sex and class
        # together): the model whose out-of-fold likelihood is higher is the null
        if kind == "tabular":
            return {"model": "auto"}
        return {}
    statistic_name = "posterior log-odds that the label is a flip"
    _parameter_constraints = {
        "folds": [Interval(int, 2, None)],
        "C": [Interval(Real, 0, None, closed="neither")],
        "rows_per_class": [Interval(int, 10, None)],
        "alpha": [Interval(Real, 0, 1, closed="neither")],
        "class_alpha": [Interval(Real, 0, 1, closed="neither")],
        "draws": [NONE, Interval(int, 19, None)],
        "source": [Options(("fit", "probabilities"))],
        "model": [Options(("linear", "quadratic", "trees", "auto"))],
        "verdict_odds": [Interval(Real, 1, None, closed="neither")],
        "min_posterior": [Interval(Real, 0, 1, closed="neither"), NONE],
        "probability_labels": [OfType(tuple, "a tuple of labels"), NONE],
    }

    alarm_family = "labels"

    def __init__(
        self,
        *,
        folds: int = 5,
        C: float = 0.1,
        rows_per_class: int = 1024,
        alpha: float = 0.05,
        class_alpha: float = 0.05,
        draws: int | None = None,
        source: str = "fit",
        model: str = "linear",
        probability_labels: tuple | None = None,
        verdict_odds: float = 10.0,
        min_posterior: float | None = 0.5,
    ):
        self.verdict_odds = verdict_odds
        self.source = source
        self.model = model
        self.probability_labels = probability_labels
        self.folds = folds
        self.C = C
        self.rows_per_class = rows_per_class
        self.alpha = alpha
        self.class_alpha = class_alpha
        self.draws = draws
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
        fits = {}
        for kind in self._candidates(pooled.X):
            fits[kind] = self._cross_fit(kind, pooled, fold, k)
        loss = {kind: _log_loss(oof, pooled.codes) for kind, (oof, _) in fits.items()}
        kinds = list(fits)
        if len(kinds) == 1 or loss["linear"] <= min(loss.values()):
            # one model asked for, or no richer model fits the labels better than the
            # linear one: that model alone is the null
            weights = np.array([1.0 if kind == kinds[0] else 0.0 for kind in kinds])
        else:
            weights = mixture_weights([fits[kind][0] for kind in kinds], pooled.codes)
        used = [i for i, w in enumerate(weights) if w > 0]
        if len(used) == 1:
            chosen = kinds[used[0]]
            oof, models = fits[chosen]
        else:
            chosen = "mixture"
            oof = sum(weights[i] * fits[kinds[i]][0] for i in used)
            loss["mixture"] = _log_loss(oof, pooled.codes)
            # fold by fold, the models of each kind that carry weight, mixed
            models = [
                Mixture([float(weights[i]) for i in used], [fits[kinds[i]][1][f] for i in used])
                for f in range(len(fits[kinds[0]][1]))
            ]
        state.info["model_choice"] = {
            "chosen": chosen, "log_loss": loss, "weights": {kinds[i]: float(weights[i]) for i in range(len(kinds))},
        }
        return self._judged_on(state, oof, pooled.codes, pooled.labels, _CLState(models, np.ones(k), pooled.labels))

    def _candidates(self, X: np.ndarray) -> tuple:
        """The models cross-fitted: the one chosen, or with ``model="auto"`` the linear
        model, the trees and, on inputs of 1 to ``QUADRATIC_MAX_COLUMNS`` varying
        columns, the quadratic model."""
        if self.model != "auto":
            return (self.model,)
        if 1 <= QuadraticModel.width(X) <= QUADRATIC_MAX_COLUMNS:
            return ("linear", "quadratic", "trees")
        return ("linear", "trees")

    def _cross_fit(self, kind: str, pooled: Pooled, fold: np.ndarray, k: int) -> tuple[np.ndarray, list]:
        """Out-of-fold class probabilities of the sampled rows, and the fold models."""
        oof = np.zeros((len(pooled.codes), k))
        models = []
        for f in range(self.folds):
            train = fold != f
            if not train.any() or train.all():
                continue
            if kind == "trees":
                m = TreeModel.fit(pooled.X[train], pooled.codes[train])
            elif kind == "quadratic":
                m = QuadraticModel.fit(pooled.X[train], pooled.codes[train], self.C)
            else:
                m = LinearModel.fit(pooled.X[train], pooled.codes[train], self.C)
            models.append(m)
            oof[~train] = m.proba(pooled.X[~train], k)
        return oof, models

    def _strong(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``strong[i, c]``: with label c, row i would be a strong disagreement."""
        return _log_odds_all(q, _thresholds(q, codes)) > np.log(self.verdict_odds)

    def _judged_on(self, state, P, codes, labels, model: "_CLState") -> DetectorState:
        # given probabilities come from a model fitted to other class shares than the
        # sample's (the same number of rows per class): a log-prior shift per class
        state = self._calibrated(state, labels, P, codes, self._strong, shift=bool(state.info.get("given_probabilities")))
        model.thresholds = _thresholds(state.info["noise"].clean(P), codes)
        state.info["model"] = model
        return state

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
        self._require_fitted(state, set(plain_labels(y)))
        if state.info.get("model") is None:
            return np.zeros(len(y))
        codes = np.array([state.classes[v] for v in plain_labels(y)], dtype=np.int64)
        return state.info["noise"].flip_log_odds(self._proba(state, X), codes)

    def judge(self, state, label, class_rows, group_test):
        verdict = self._decide(state, label, class_rows)
        choice = state.info.get("model_choice")
        if choice:  # which model of the columns the null is, and why (summary.json)
            verdict.extra["label_model"] = choice["chosen"]
            verdict.extra["label_model_log_loss"] = dict(choice["log_loss"])
            verdict.extra["label_model_weights"] = dict(choice["weights"])
            if len(choice["weights"]) > 1:  # the scan chose the model: say which
                verdict = replace(verdict, note=f"{verdict.note}; {_null_words(choice)}")
        return verdict

    def describe(self, state, X, y, statistic, strength) -> list[str]:
        model: _CLState = state.info["model"]
        p = state.info["noise"].clean(self._proba(state, X))
        out = []
        for row, label in zip(p, plain_labels(y)):
            own = state.classes[label]
            other = int(np.argmax(np.where(np.arange(len(row)) == own, -1, row)))
            out.append(
                f"a model that never saw this row gives its label {fmt_label(label)} p = {row[own]:.2f} "
                f"and class {fmt_label(model.pooled_labels[other])} p = {row[other]:.2f}"
            )
        return out


_MODEL_WORDS = {"linear": "linear", "quadratic": "quadratic (columns and their products)", "trees": "gradient-boosted trees"}


def _null_words(choice: dict) -> str:
    """The label model a verdict was made against, for a reader of the report."""
    loss = choice["log_loss"]
    if choice["chosen"] != "mixture":
        others = ", ".join(f"{k} {v:.3f}" for k, v in loss.items() if k != choice["chosen"])
        tail = f" (out-of-fold log-loss {loss[choice['chosen']]:.3f}; {others})" if others else ""
        return f"labels judged against the {_MODEL_WORDS[choice['chosen']]} model of the columns{tail}"
    parts = ", ".join(f"{k} {w:.2f}" for k, w in choice["weights"].items() if w > 0)
    return (f"labels judged against a mixture of models of the columns (weights: {parts}; out-of-fold log-loss "
            f"{loss['mixture']:.3f}, the linear model alone {loss['linear']:.3f})")


#: A model whose weight in the mixture is below this is left out (and the rest scaled
#: up): pass 2 need not evaluate a model that moves no probability by a hundredth.
MIN_WEIGHT = 0.01


def mixture_weights(probs: list, codes: np.ndarray, iters: int = 1000, tol: float = 1e-9) -> np.ndarray:
    """Weights ``w`` on the simplex maximising the log-likelihood of the labels under
    ``sum_k w_k probs[k]`` (each an array of out-of-fold class probabilities): EM on the
    mixture weights, which raises the likelihood at every step; weights below
    ``MIN_WEIGHT`` are then set to 0 and the rest scaled to sum to 1."""
    rows = np.arange(len(codes))
    L = np.maximum(np.column_stack([p[rows, codes] for p in probs]), 1e-300)
    w = np.full(L.shape[1], 1.0 / L.shape[1])
    for _ in range(iters):
        new = (L * w / (L @ w)[:, None]).mean(axis=0)
        done = np.abs(new - w).max() <= tol
        w = new
        if done:
            break
    w = np.where(w >= MIN_WEIGHT, w, 0.0)
    return w / w.sum()


@dataclass
class Mixture:
    """One fold's models, their probabilities mixed with fixed weights."""

    weights: list
    models: list

    def proba(self, X: np.ndarray, n_classes: int) -> np.ndarray:
        return sum(w * m.proba(X, n_classes) for w, m in zip(self.weights, self.models))


def _log_loss(p: np.ndarray, codes: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels under out-of-fold probabilities."""
    return float(-np.mean(np.log(np.clip(p[np.arange(len(codes)), codes], 1e-6, 1.0))))


def _thresholds(q: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per class code j: the mean of q_j over the rows labelled j (confident learning's
    threshold), 1 for a class without rows."""
    t = np.array([q[codes == j, j].mean() if (codes == j).any() else 1.0 for j in range(q.shape[1])])
    return np.clip(t, 1e-6, 1.0)


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
