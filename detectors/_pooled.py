"""Helpers for detectors that look across classes: pooled samples, linear and tree classifiers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .base import Detector, label_sort_key
from .excess import Disputed, ExcessTest, Resampled
from .stats import ClassSample


@dataclass
class Pooled:
    """The class samples side by side: X, label indices, labels, positions."""

    X: np.ndarray
    codes: np.ndarray
    labels: list
    positions: np.ndarray
    _affinity: dict = field(default_factory=dict, repr=False, compare=False)  # code -> affinity

    @classmethod
    def of(cls, samples: Mapping[Any, ClassSample], per_class: int | None = None) -> "Pooled":
        labels = sorted(samples, key=label_sort_key)
        Xs, codes, pos = [], [], []
        for i, label in enumerate(labels):
            s = samples[label]
            take = slice(None) if per_class is None else _spread(len(s), per_class)
            Xs.append(np.asarray(s.X[take], dtype=np.float64))
            pos.append(s.positions[take])
            codes.append(np.full(len(pos[-1]), i, dtype=np.int64))
        if not labels:
            return cls(np.empty((0, 0)), np.empty(0, np.int64), [], np.empty(0, np.int64))
        return cls(np.concatenate(Xs), np.concatenate(codes), labels, np.concatenate(pos))

    def affinity(self, code: int) -> np.ndarray:
        """:func:`other_class_affinity` of class ``code``'s rows, computed once per class
        (spectral and SPECTRE may both ask about the same class)."""
        if code not in self._affinity:
            self._affinity[code] = other_class_affinity(self, code, self.X[self.codes == code])
        return self._affinity[code]

    def code_of(self, y: np.ndarray) -> np.ndarray:
        index = {label: i for i, label in enumerate(self.labels)}
        try:
            return np.fromiter((index[_py(v)] for v in y), dtype=np.int64, count=len(y))
        except KeyError as exc:
            raise ValueError(f"no fitted state for class {exc.args[0]!r}") from None


def _spread(n: int, k: int) -> slice | np.ndarray:
    """Indices of ``k`` rows spread evenly over ``n`` (all when n <= k)."""
    if n <= k:
        return slice(None)
    return np.linspace(0, n - 1, k).round().astype(np.int64)


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def stratified_folds(codes: np.ndarray, folds: int) -> np.ndarray:
    """Fold of each row: within each class, rows dealt round-robin in the order given.

    Samples come in id order (:meth:`.stats.Reservoir.sample`), so the folds do not
    depend on the order rows were read in."""
    out = np.empty(len(codes), dtype=np.int64)
    for c in np.unique(codes):
        idx = np.flatnonzero(codes == c)
        out[idx] = np.arange(len(idx)) % folds
    return out


@dataclass
class LinearModel:
    """Multinomial logistic regression on standardised features (scikit-learn)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (classes, d)
    intercept: np.ndarray  # (classes,)
    classes: np.ndarray  # codes the columns stand for

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        codes: np.ndarray,
        C: float,
        seed: int = 0,
        tol: float = 1e-3,
        max_iter: int = 200,
    ) -> "LinearModel":
        # SciPy / scikit-learn: imported on first use, by the detectors that run
        from sklearn.linear_model import LogisticRegression

        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        model = LogisticRegression(C=C, max_iter=max_iter, tol=tol, random_state=seed)
        model.fit((X - mean) / scale, codes)
        coef, intercept = model.coef_, model.intercept_
        if coef.shape[0] == 1:  # two classes: sklearn keeps one row
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        return cls(mean, scale, coef, intercept, model.classes_)

    def proba(self, X: np.ndarray, n_classes: int) -> np.ndarray:
        """Probabilities over all ``n_classes`` codes (0 for codes the model never saw)."""
        logits = ((np.asarray(X, dtype=np.float64) - self.mean) / self.scale) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        out = np.zeros((len(p), n_classes))
        out[:, self.classes] = p
        return out


#: Widest input (columns that vary) on which ``model="auto"`` also tries the quadratic
#: model: 40 columns make 860 features, a few seconds per fold on 10,000 sampled rows.
QUADRATIC_MAX_COLUMNS = 40


@dataclass
class QuadraticModel:
    """Multinomial logistic regression on the standardised columns and their pairwise
    products (squares included): a smooth model of a label that depends on columns
    jointly (survival on sex and class together), where :class:`LinearModel` is
    misspecified, that stays smooth where :class:`TreeModel` fits few rows poorly.
    Plain arrays once fitted (a saved state holds it as data)."""

    mean: np.ndarray
    scale: np.ndarray
    keep: np.ndarray  # the columns that vary in the training rows
    linear: LinearModel  # on the expanded features

    @classmethod
    def fit(cls, X: np.ndarray, codes: np.ndarray, C: float, seed: int = 0) -> "QuadraticModel":
        X = np.asarray(X, dtype=np.float64)
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        keep = std > 0
        model = cls(mean, np.where(keep, std, 1.0), keep, None)
        model.linear = LinearModel.fit(model.expand(X), codes, C, seed=seed)
        return model

    @staticmethod
    def width(X: np.ndarray) -> int:
        """Columns that vary: the quadratic model has ``w + w (w + 1) / 2`` features."""
        return int((np.asarray(X).std(axis=0) > 0).sum()) if len(X) else 0

    def expand(self, X: np.ndarray) -> np.ndarray:
        Z = ((np.asarray(X, dtype=np.float64) - self.mean) / self.scale)[:, self.keep]
        if Z.shape[1] == 0:  # no column varied in the training rows: the class shares alone
            return np.zeros((len(Z), 1))
        i, j = np.triu_indices(Z.shape[1])
        return np.hstack([Z, Z[:, i] * Z[:, j]])

    def proba(self, X: np.ndarray, n_classes: int) -> np.ndarray:
        """Probabilities over all ``n_classes`` codes (0 for codes the model never saw)."""
        return self.linear.proba(self.expand(X), n_classes)


class TreeModel:
    """Gradient-boosted trees (scikit-learn's histogram boosting): a model of the label
    that holds interactions between columns, which :class:`LinearModel` does not.

    A saved scan state holds data only (``scan.state``), and a fitted scikit-learn
    model is not data: the state keeps the training rows and the seed, and the trees
    are fitted again, identically, when the state is read."""

    def __init__(self, X: np.ndarray, codes: np.ndarray, seed: int = 0):
        self.X = np.asarray(X)
        self.codes = np.asarray(codes, dtype=np.int64)
        self.seed = int(seed)
        self._fit()

    @classmethod
    def fit(cls, X: np.ndarray, codes: np.ndarray, seed: int = 0) -> "TreeModel":
        return cls(X, codes, seed)

    def _fit(self) -> None:
        from sklearn.ensemble import HistGradientBoostingClassifier

        # regularised and without early stopping (its validation split is drawn at
        # random): the fit depends on the rows only
        self.model = HistGradientBoostingClassifier(
            learning_rate=0.1,
            max_iter=100,
            max_leaf_nodes=15,
            min_samples_leaf=20,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=self.seed,
        )
        self.model.fit(np.asarray(self.X, dtype=np.float64), self.codes)
        self.classes = self.model.classes_

    def __getstate__(self):
        return {"X": self.X, "codes": self.codes, "seed": self.seed}

    def __setstate__(self, state):
        self.X, self.codes, self.seed = state["X"], state["codes"], state["seed"]
        self._fit()

    def proba(self, X: np.ndarray, n_classes: int) -> np.ndarray:
        """Probabilities over all ``n_classes`` codes (0 for codes the model never saw)."""
        p = self.model.predict_proba(np.asarray(X, dtype=np.float64))
        out = np.zeros((len(p), n_classes))
        out[:, self.classes] = p
        return out


def other_class_affinity(pooled: Pooled, code: int, X: np.ndarray) -> np.ndarray:
    """How much each of a class's sampled rows ``X`` looks like the other classes.

    With several other classes, a model of the other classes alone is applied to the
    class's rows; its confidence (top probability) is the affinity. With one other class
    (binary labels) that model would have one class: instead a model of "other class or
    this one" is cross-fitted on all rows of both and the affinity is a row's
    out-of-fold probability of the other class. (Leaving a part out of the training data
    instead would teach the model that whatever makes the part distinct belongs to the
    other class.)
    """
    others = pooled.codes != code
    if len(np.unique(pooled.codes[others])) >= 2:
        k = len(pooled.labels)
        # converged tightly: the comparison rests on the model's confidence
        model = LinearModel.fit(pooled.X[others], pooled.codes[others], C=0.1, tol=1e-6, max_iter=1000)
        score = model.proba(X, k).max(axis=1)
    else:
        n_other = int(others.sum())
        Xb = np.vstack([pooled.X[others], X])
        yb = np.concatenate([np.ones(n_other, np.int64), np.zeros(len(X), np.int64)])
        fold = stratified_folds(yb, 5)
        score = np.zeros(len(X))
        for f in range(5):
            train = fold != f
            if len(np.unique(yb[train])) < 2:
                continue
            model = LinearModel.fit(Xb[train], yb[train], C=0.1, tol=1e-6, max_iter=1000)
            held = ~train[n_other:]
            if held.any():
                score[held] = model.proba(X[held], 2)[:, 1]
    return score


def affinity_test(affinity: np.ndarray, member: np.ndarray) -> tuple[tuple, float]:
    """``((mean affinity of part 0, of part 1), p)`` for a class split in two parts by
    ``member`` (0 or 1 per row); ``p`` is a one-sided Welch test that part 1 looks more
    like other classes than part 0."""
    # SciPy / scikit-learn: imported on first use, by the detectors that run
    from scipy.stats import ttest_ind

    parts = [affinity[member == j] for j in (0, 1)]
    means = tuple(float(c.mean()) if len(c) else 0.0 for c in parts)
    p = 1.0
    if len(parts[0]) > 1 and len(parts[1]) > 1:
        p = float(ttest_ind(parts[1], parts[0], equal_var=False, alternative="greater").pvalue)
        p = 1.0 if np.isnan(p) else p
    return means, p


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
    #: per class code, a log-prior shift b_c (``q = softmax(log(p) / T + b)``), or None
    #: (see ``shift`` in :meth:`fit`)
    bias: np.ndarray | None = None

    @classmethod
    def without_flips(cls, P: np.ndarray, codes: np.ndarray, shift: bool = False) -> "NoiseCalibration":
        """The temperature alone (and, with ``shift``, the log-prior shift), fitted by
        maximum likelihood with no floors: the model of the labels under "no flips",
        from which the label evidence is redrawn."""
        P = np.asarray(P, dtype=np.float64)
        if len(P) == 0 or P.shape[1] < 2:
            return cls(1.0, np.zeros(P.shape[1]))
        L = np.log(np.clip(P, 1e-300, 1.0))
        w = np.ones(len(codes))
        if not shift:
            return cls(_temperature(L, codes, w), np.zeros(P.shape[1]))
        t, b = _temperature_and_shift(L, codes, w, 1.0, np.zeros(P.shape[1]))
        return cls(t, np.zeros(P.shape[1]), b)

    @classmethod
    def fit(cls, P: np.ndarray, codes: np.ndarray, iters: int = 200, tol: float = 1e-6,
            shift: bool = False) -> "NoiseCalibration":
        """Fit by EM. With ``shift``, a log-prior shift per class is fitted with the
        temperature: for probabilities from a model fitted to other class shares than
        the sample's (a proxy's training sample against the label detectors' per-class
        sample of the same number of rows per class), whose mismatch would otherwise be
        read as flips into the classes the sample holds more of."""
        P = np.asarray(P, dtype=np.float64)
        n, k = P.shape
        if n == 0 or k < 2:
            return cls(1.0, np.zeros(k))
        L = np.log(np.clip(P, 1e-300, 1.0))
        rows = np.arange(n)
        floors = np.full(k, 0.01 / k)
        t = 1.0
        b = np.zeros(k)
        ll_prev = -np.inf
        for _ in range(iters):
            q = _softmax(L / t + b)
            lik = (1 - floors.sum()) * q[rows, codes] + floors[codes]
            ll = float(np.log(lik).sum())
            if ll - ll_prev <= tol * abs(ll):
                break
            ll_prev = ll
            w = floors[codes] / lik  # posterior that the row's label is a floor (a flip)
            floors = np.bincount(codes, weights=w, minlength=k) / n
            if shift:  # one alternation per EM step, from the last step's values
                t, b = _temperature_and_shift(L, codes, 1 - w, t, b, rounds=1)
            else:
                t = _temperature(L, codes, 1 - w, t)
        return cls(t, floors, b if shift else None)

    def clean(self, P: np.ndarray) -> np.ndarray:
        """The clean model q of rows with out-of-fold probabilities ``P``."""
        L = np.log(np.clip(np.asarray(P, dtype=np.float64), 1e-300, 1.0))
        return _softmax(L / self.temperature + (0.0 if self.bias is None else self.bias))

    def flip_log_odds(self, P: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Posterior log-odds that each row's label is a flip (> 0: more likely a flip)."""
        q = self.clean(P)
        own = q[np.arange(len(codes)), codes]
        floor = np.maximum(self.floors[codes], 1e-12)
        return np.log(floor) - np.log(np.maximum((1 - self.floors.sum()) * own, 1e-300))


def draw_labels(q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label code per row of ``q`` (rows of class probabilities), drawn from it."""
    u = rng.random(len(q))
    return np.minimum((np.cumsum(q, axis=1) < u[:, None]).sum(axis=1), q.shape[1] - 1).astype(np.int64)


def label_evidence(labels: list, P: np.ndarray, codes: np.ndarray, strong,
                   shift: bool = False) -> tuple[dict, "NoiseCalibration"]:
    """Each class's label evidence ``(rows counted, sampled rows, rows expected)`` and the
    calibration it was judged against.

    ``strong[i, c]`` (an array, or a function of the calibrated clean model q and the
    codes that gives it): row i would be a strong disagreement if its label were c.
    ``expected = sum_i q_ic strong[i, c]`` is how many rows of c would be strong
    disagreements if every sampled row's label were drawn from q. ``shift``: see
    :meth:`NoiseCalibration.fit`."""
    cal = NoiseCalibration.fit(P, codes, shift=shift)
    q = cal.clean(P)
    strong = strong(q, codes) if callable(strong) else strong
    evidence = {}
    for i, label in enumerate(labels):
        mine = codes == i
        evidence[label] = (int(strong[mine, i].sum()), int(mine.sum()), float((q[:, i] * strong[:, i]).sum()))
    return evidence, cal


def _temperature(L: np.ndarray, codes: np.ndarray, weights, start: float = 1.0) -> float:
    """The temperature maximising the ``weights``-weighted log-likelihood of the labels
    under ``softmax(L / T)``, searched in [0.02, 50].

    The negative log-likelihood is convex in s = 1/T: its derivative is
    ``-sum w (L_iy - E_q L_i)`` and its second derivative ``sum w Var_q(L_i)``. So a
    Newton search on s, kept inside a bracket that shrinks with the sign of the derivative
    (halving it in log s when a step would leave it), finds the optimum in a few steps;
    ``start`` (a temperature) is where it begins, e.g. the previous EM step's."""
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), (len(codes),))
    if len(codes) == 0 or not (w > 0).any():
        return 1.0
    Ly = L[np.arange(len(codes)), codes]
    # softmax(s L) = softmax(s D) with each row's largest entry 0: the shift is found once,
    # not per step, and each step is one exp and two weighted row sums (a scan's label
    # detectors solve this hundreds of times; twice as fast as the softmax each step)
    D = L - L.max(axis=1, keepdims=True)
    e = np.empty_like(D)
    lo, hi = 1 / 50.0, 1 / 0.02
    s = float(np.clip(1.0 / start, lo, hi))
    for _ in range(200):
        np.multiply(D, s, out=e)
        np.exp(e, out=e)  # q = e / Z
        Z = e.sum(axis=1)
        mean = np.einsum("ij,ij->i", e, L) / Z
        grad = -float(w @ (Ly - mean))
        spread = np.square(L - mean[:, None])
        curv = float(w @ (np.einsum("ij,ij->i", e, spread) / Z))
        if grad > 0:
            hi = s
        else:
            lo = s
        step = s - grad / curv if curv > 0 else np.nan
        nxt = step if lo < step < hi else float(np.sqrt(lo * hi))
        done = abs(nxt - s) <= 1e-9 * s or hi / lo - 1 <= 1e-9
        s = nxt
        if done:
            break
    return float(1.0 / s)


def _temperature_and_shift(L: np.ndarray, codes: np.ndarray, weights, t: float, b: np.ndarray,
                           rounds: int = 50) -> tuple[float, np.ndarray]:
    """The temperature and log-prior shift maximising the ``weights``-weighted
    log-likelihood of the labels under ``softmax(L / T + b)``, by alternating: the
    temperature given the shift (:func:`_temperature` on ``L + T b``, whose softmax at T
    is the same), then the shift given the temperature (its likelihood equations: each
    class's weighted count equals its weighted expected count; a few fixed-point steps,
    ``b_c += log(count_c / expected_c)``). A class with no weight keeps its shift."""
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), (len(codes),))
    k = L.shape[1]
    count = np.bincount(codes, weights=w, minlength=k)
    b = np.asarray(b, dtype=np.float64).copy()
    for _ in range(rounds):
        t_new = _temperature(L + t * b, codes, w, t)
        # keep the shift as it acts on L / T: L / t_new + b' = (L + t b) / t_new
        b = b * t / t_new
        settled = abs(t_new - t) <= 1e-6 * t
        t = t_new
        for sweep in range(20):
            expected = (w[:, None] * _softmax(L / t + b)).sum(axis=0)
            step = np.where((count > 0) & (expected > 0), np.log(np.maximum(count, 1e-300) / np.maximum(expected, 1e-300)), 0.0)
            b = b + step
            b -= b.mean()
            if np.abs(step).max() < 1e-9:
                break
        if settled and sweep == 0:  # neither moved: the optimum
            break
    return float(t), b


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    q = np.exp(z)
    return q / q.sum(axis=1, keepdims=True)


class PooledDetector(Detector):
    """Fits on all classes' samples at once; no exact statistics.

    Subclasses give, for the sampled rows, class probabilities that were not fitted to
    the row's own label (out of fold) and, per row and hypothetical label, whether that
    label would count as *strongly disputed*; :meth:`_calibrated` turns them into the
    verdicts' evidence.
    """

    per_class = False
    two_sided = False
    finds = "flipped labels"
    # :class:`Pooled`'s out-of-fold models; the affinity and excess tests' distributions
    fit_imports = ("scipy.stats", "sklearn.ensemble", "sklearn.linear_model")

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, accumulator: dict, X: np.ndarray, y: np.ndarray) -> dict:
        self._check_batch(X, y)
        return accumulator

    def merge_accumulators(self, accumulators: list) -> dict:
        return {}

    def alarm_params(self, share: float, rate: float) -> dict:
        # a family other than the group test's is held by the detector's own ``alpha``
        return {} if self.alarm_family == "groups" else {"alpha": share}

    def alarm_spent(self, group_alpha: float) -> float:
        return super().alarm_spent(group_alpha) if self.alarm_family == "groups" else self.alpha

    def _excess(self) -> ExcessTest:
        return ExcessTest(alpha=self.alpha, class_alpha=self.class_alpha, draws=self.draws)

    def _calibrated(self, state, labels: list, P: np.ndarray, codes: np.ndarray, strong, shift: bool = False):
        """Fit the label-noise calibration on the sampled rows' out-of-fold probabilities
        ``P``, record per class the evidence the verdict is made on
        (:func:`label_evidence`), and where it falls among redrawn labels
        (:meth:`ExcessTest.resample`).

        The redraws: every sampled row's label drawn from ``P`` under a temperature alone
        (:meth:`NoiseCalibration.without_flips`: the labels' model with no flips), and the
        same evidence computed on them, calibration fit included (a fit that puts natural
        label noise into the floors does so on the redraws too). ``P`` is held fixed:
        refitting the out-of-fold model on every redraw would give the redraws the noise
        of an estimated model, as the real labels have, but costs the model's fits a
        hundred times over (docs/detectors.md, "Excess test")."""
        q0 = NoiseCalibration.without_flips(P, codes, shift).clean(P)

        def redraw(rng):
            return label_evidence(labels, P, draw_labels(q0, rng), strong, shift)[0]

        evidence, cal = label_evidence(labels, P, codes, strong, shift)
        state.info["noise"] = cal
        stat = cal.flip_log_odds(P, codes)
        for i, label in enumerate(labels):
            state.calibration[label] = stat[codes == i]
        state.info["evidence"] = evidence
        state.info["resampled"] = self._excess().resample(evidence, redraw, seed=0) if evidence else {}
        state.info["temperature"] = cal.temperature
        state.info["flip_rate"] = float(cal.floors.sum())
        state.info["out_of_fold_accuracy"] = float((P.argmax(1) == codes).mean()) if len(codes) else None
        return state

    def _decide(self, state, label, class_rows):
        evidence = state.info.get("evidence") or {}
        test = self._excess()
        strong, n, expected = evidence.get(label, (0, 0, 0.0))
        resampled = (state.info.get("resampled") or {}).get(label) or Resampled(1.0, 1.0, None, 0)
        statistic = state.calibration.get(label, np.empty(0))
        if self.min_posterior is None:
            cut = f1_cut(statistic)
        else:
            cut = float(np.log(self.min_posterior / (1 - self.min_posterior)))
        disputed = Disputed(strong, expected, max(len(evidence), 1), test.spread(evidence, label), resampled)
        return test.decide(label, self.name, statistic, class_rows, cut, disputed)


def f1_cut(log_odds: np.ndarray) -> float:
    """The cut on a class's flip log-odds that maximises the expected F1 of the rows it
    flags, reading each sampled row's posterior ``pi = sigmoid(log_odds)`` as the chance
    that its label is a flip: flagging the k most likely rows is expected to find
    ``S_k = sum of their pi`` flips of ``S = sum of every pi``, an F1 of about
    ``2 S_k / (k + S)``. The best k flags every row whose posterior exceeds half the F1
    it reaches (Lipton, Elkan and Naryanaswamy, 2014), so the cut is at most a posterior
    of 1/2: where the data decide the labels well it is near 1/2, where they decide them
    weakly it is lower, as the flips are then found only among rows of modest posterior.
    Rows at the cut are flagged as the rows above it (the scan flags rows *beyond* the
    cut: the cut returned is just under the k-th largest log-odds)."""
    z = np.sort(np.asarray(log_odds, dtype=np.float64))[::-1]
    if not len(z):
        return 0.0
    pi = 1.0 / (1.0 + np.exp(-z))
    k = np.arange(1, len(z) + 1)
    f1 = 2 * np.cumsum(pi) / (k + pi.sum())
    best = int(np.argmax(f1))
    return float(np.nextafter(z[best], -np.inf))


def class_statistics(detector, state, X: np.ndarray, y) -> np.ndarray:
    """Each row's statistic under its class's fitted state (``state.classes[label]``, an
    object with ``statistic(X)``; None: 0 for the class's rows)."""
    labels = plain_labels(y)
    detector._require_fitted(state, set(labels))
    out = np.zeros(len(labels))
    for label in set(labels):
        cls = state.classes[label]
        if cls is None:
            continue
        idx = np.array([i for i, v in enumerate(labels) if v == label])
        out[idx] = cls.statistic(X[idx])
    return out


def plain_labels(y) -> list:
    return [v.item() if isinstance(v, np.generic) else v for v in y]


def fmt_label(label) -> str:
    return repr(label) if isinstance(label, str) else str(label)
