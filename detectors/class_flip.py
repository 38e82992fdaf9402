"""ClassFlip: rows of one class relabelled as another (a class-to-class label flip).

A targeted flip relabels a large share of one *source* class as one *target* class
(Biggio, Nelson and Laskov, ICML 2012, on label-flip poisoning; Xiao et al., ECAI 2012).
The per-row label detectors (:mod:`.label_consistency`, :mod:`.knn_label`) cannot see
it: their models are fitted to the flipped labels and learn the flip as uncertainty (a
third of the source's look-alikes labelled with the target is what the model then
predicts there), and their null (labels drawn from that model) holds the flip too.

What a flip leaves that natural confusion does not is *one pair of classes* standing out:
many rows of the target class whose nearest neighbours are the source class's rows,
while every other ordered pair of classes of the same scan shows the few look-alikes
that natural confusion gives. So the evidence is per ordered pair (target <- source),
judged against the scan's other pairs, and the rows flagged are the target's rows that
the source's neighbourhood claims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from numbers import Real
from typing import Any, Mapping

import numpy as np

from ._params import Interval
from ._pooled import Pooled, PooledDetector, fmt_label, plain_labels
from .base import DetectorState, register
from .decision import ClassVerdict
from .excess import _robust_location
from .knn_label import _KnnState, neighbour_counts, project, reference_set
from .stats import ClassSample

#: Fewer classes give too few other pairs to judge a pair against (two classes: one).
MIN_CLASSES = 3


@dataclass
class _FlipState:
    refs: _KnnState  # the references kept: the judged pairs' rows left out
    sources: dict  # target class code -> judged source codes
    pairs: list  # per ordered pair with look-alikes: a dict of its evidence


@register
class ClassFlip(PooledDetector):
    """Class-to-class flips: one pair of classes with far more look-alikes than the others.

    The references are up to ``rows_per_class`` sampled rows of every class of what the
    scan has that was not fitted to the labels (the encoded table, the user's vectors),
    standardised and projected on ``components`` principal directions, as for
    :class:`~.knn_label.KnnLabel`. A sampled row labelled c is *taken for* class j when
    more than half of its ``k`` nearest references (itself excluded) carry label j.

    **Evidence, per ordered pair (c <- j).** x, the sampled rows of c taken for j, of n_c.
    Natural confusion varies from pair to pair (some classes look alike), so a pair is
    judged against the *other* pairs of the scan: a beta-binomial distribution fitted by
    maximum likelihood to the other pairs' counts (their spread included) gives the
    probability of at least x look-alikes of n_c. A pair is judged when that probability
    is below ``alpha / (K (K - 1))`` (Bonferroni over the ordered pairs: in a scan whose
    pairs all follow one such distribution, the chance that any pair is judged is at most
    ``alpha``) *and* the flip is large: of the rows that look like j (those taken for j
    plus class j's own rows, weighed to the input's rows), the share labelled c exceeds
    the reverse share (of the rows that look like c, the share labelled j) by at least
    ``min_share``. A flip moves rows one way; two classes that overlap by nature show
    look-alikes both ways. (The fit leaves out the pair it judges only where the pair is
    large enough to be judged; a smaller pair's p-value, reported for the reviewer, is
    against all pairs, itself included: one fit, where K (K - 1) fits would cost too much
    with many classes.) With fewer than three classes there are no other pairs to
    judge against, and no class is judged.

    **Rows.** In a judged target class, the references are counted again without the rows
    taken for the judged source (so the flipped rows no longer vouch for each other, and
    the source's neighbourhood is its own again; repeated until nothing changes, at most
    three times), and a row is flagged when more than half of its nearest references
    carry the judged source's label. The row statistic is that share (higher = more
    suspicious); the cut is one half.

    Parameters
    ----------
    k, rows_per_class, components
        Neighbours, references per class, principal directions.
    alpha : float, default=0.05
        Family-wise error over the ordered pairs of a scan (see above). A scan given a
        false-alarm rate sets it to this detector's share (:func:`~.base.split_false_alarms`).
    min_share : float, default=0.1
        Smallest flip reported: the share of the rows that look like the source class
        carrying the target's label, beyond the reverse share. Below it, the pair is left
        to the per-row label detectors (a flip of a few rows is a few strong
        disagreements).
    min_rows : int, default=3
        Fewest sampled rows taken for the source that can make a pair judged.

    References
    ----------
    B. Biggio, B. Nelson, P. Laskov. Poisoning Attacks against Support Vector Machines.
    ICML 2012. H. Xiao, H. Xiao, C. Eckert. Adversarial Label Flips Attack on Support
    Vector Machines. ECAI 2012.
    """

    name = "class_flip"
    finds = "class-to-class flip"
    alarm_family = "class_flip"
    default_kinds = frozenset({"features", "tabular"})
    default_rank = 9
    statistic_name = "share of the nearest neighbours carrying the source class's label"
    _parameter_constraints = {
        "k": [Interval(int, 1, None)],
        "rows_per_class": [Interval(int, 10, None)],
        "components": [Interval(int, 1, None)],
        "alpha": [Interval(Real, 0, 1, closed="neither")],
        "min_share": [Interval(Real, 0, 1, closed="neither")],
        "min_rows": [Interval(int, 1, None)],
    }

    input = "unfitted"

    def __init__(
        self,
        *,
        k: int = 10,
        rows_per_class: int = 512,
        components: int = 32,
        alpha: float = 0.05,
        min_share: float = 0.1,
        min_rows: int = 3,
    ):
        self.k = k
        self.rows_per_class = rows_per_class
        self.components = components
        self.alpha = alpha
        self.min_share = min_share
        self.min_rows = min_rows

    def extract_output(self, accumulator: dict, samples: Mapping[Any, ClassSample]) -> DetectorState:
        self._validate_params()
        pooled = Pooled.of(samples, self.rows_per_class)
        state = DetectorState(self.name)
        labels = pooled.labels
        K = len(labels)
        for i, label in enumerate(labels):
            state.classes[label] = i
        state.info["classes"] = K
        if not labels:
            return state
        n = np.bincount(pooled.codes, minlength=K)
        # input rows each sampled row stands for, per class
        weight = np.array([(samples[v].rows or len(samples[v])) / max(n[i], 1) for i, v in enumerate(labels)])
        knn = reference_set(pooled, self.components)
        counts = neighbour_counts(knn, knn.refs, self.k, pooled.positions)
        taken = self._taken(counts, pooled.codes)
        x = np.zeros((K, K), dtype=np.int64)
        has = taken >= 0
        np.add.at(x, (pooled.codes[has], taken[has]), 1)
        pairs = self._judge_pairs(x, n, weight) if K >= MIN_CLASSES else []
        sources: dict = {}
        for p in pairs:
            if p["judged"]:
                sources.setdefault(p["target"], []).append(p["source"])
        keep = np.ones(len(pooled.codes), dtype=bool)
        if sources:
            # count again without the suspects (the flipped rows then no longer vouch for
            # each other) until the suspects stay the same, at most three times
            suspect = self._suspects(taken, pooled.codes, sources)
            for _ in range(3):
                keep = ~suspect
                counts = neighbour_counts(_subset(knn, keep), knn.refs, self.k, pooled.positions)
                again = self._suspects(self._taken(counts, pooled.codes), pooled.codes, sources)
                if (again == suspect).all():
                    break
                suspect = again
            if (keep != ~suspect).any():  # the last count was of the suspects before
                keep = ~suspect
                counts = neighbour_counts(_subset(knn, keep), knn.refs, self.k, pooled.positions)
            # the judged pairs' size and share as counted last (the first count, which
            # judged them, is the smaller)
            final = self._taken(counts, pooled.codes)
            for p in pairs:
                if p["judged"]:
                    c, j = p["target"], p["source"]
                    rows = int(((pooled.codes == c) & (final == j)).sum())
                    p["rows_flagged"] = rows
                    p["share"] = float(rows * weight[c] / (rows * weight[c] + n[j] * weight[j]))
        refs = _subset(knn, keep)
        state.info["flip"] = _FlipState(refs, {c: sorted(js) for c, js in sources.items()}, pairs)
        state.info["level"] = self._level(K)
        stat = self._statistic(state.info["flip"], counts, pooled.codes)
        for i, label in enumerate(labels):
            state.calibration[label] = stat[pooled.codes == i]
        return state

    def _level(self, K: int) -> float:
        return self.alpha / max(K * (K - 1), 1)

    def _taken(self, counts: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Per row, the class code more than half of its neighbours carry when that is
        not its own label; -1 otherwise."""
        other = counts.copy()
        other[np.arange(len(codes)), codes] = -1
        j = other.argmax(axis=1) if other.shape[1] else np.zeros(len(codes), np.int64)
        k = np.maximum(counts.sum(axis=1), 1)
        majority = (2 * counts[np.arange(len(codes)), j] > k) & (j != codes)
        return np.where(majority, j, -1)

    @staticmethod
    def _suspects(taken: np.ndarray, codes: np.ndarray, sources: dict) -> np.ndarray:
        out = np.zeros(len(codes), dtype=bool)
        for c, js in sources.items():
            out |= (codes == c) & np.isin(taken, js)
        return out

    def _judge_pairs(self, x: np.ndarray, n: np.ndarray, weight: np.ndarray) -> list:
        K = len(n)
        off = ~np.eye(K, dtype=bool)
        # every ordered pair as (count, size), the equal ones pooled with a weight: the
        # fits cost what the distinct pairs cost, not K (K - 1)
        combos, mult = np.unique(np.stack([x[off], np.broadcast_to(n[:, None], (K, K))[off]], 1), axis=0,
                                 return_counts=True)
        everyone = beta_binomial_fit(combos[:, 0], combos[:, 1], mult)
        # share[c, j]: of the input rows that look like j, the share labelled c
        moved = x * weight[:, None]
        own = (n * weight)[None, :]
        share = np.divide(moved, moved + own, out=np.zeros((K, K)), where=(moved + own) > 0)
        level = self._level(K)
        out = []
        for c, j in zip(*np.nonzero(x * off)):
            c, j = int(c), int(j)
            xs, ns = int(x[c, j]), int(n[c])
            excess = share[c, j] - share[j, c]
            eligible = excess >= self.min_share and xs >= self.min_rows
            a, b = everyone
            if eligible:
                # judged against the *other* pairs: this one left out of the fit
                left = mult - ((combos[:, 0] == xs) & (combos[:, 1] == ns))
                a, b = beta_binomial_fit(combos[:, 0], combos[:, 1], left)
            p = math.exp(beta_binomial_logsf(xs, ns, a, b))
            out.append({
                "target": c, "source": j, "rows": xs, "sample_rows": ns,
                "share": float(share[c, j]), "reverse_share": float(share[j, c]), "p_value": float(p),
                "level": level, "others_mean": float(a / (a + b)),
                "judged": bool(eligible and p < level),
            })
        out.sort(key=lambda d: (d["p_value"], d["target"], d["source"]))
        return out

    def _statistic(self, flip: _FlipState, counts: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Per row labelled c: the share of its neighbours carrying a judged source of c
        (the largest other label's share where c has none judged)."""
        k = np.maximum(counts.sum(axis=1), 1).astype(np.float64)
        other = counts.astype(np.float64)
        other[np.arange(len(codes)), codes] = -1
        out = other.max(axis=1) / k if other.shape[1] > 1 else np.zeros(len(codes))
        for c, js in flip.sources.items():
            rows = codes == c
            out[rows] = counts[np.ix_(rows, js)].max(axis=1) / k[rows]
        return np.maximum(out, 0.0)

    def score(self, state: DetectorState, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        X, y = self._check_batch(X, y)
        self._require_fitted(state, set(plain_labels(y)))
        flip: _FlipState | None = state.info.get("flip")
        if flip is None:
            return np.zeros(len(y))
        codes = np.array([state.classes[v] for v in plain_labels(y)], dtype=np.int64)
        return self._statistic(flip, neighbour_counts(flip.refs, project(flip.refs, X), self.k, own_codes=codes), codes)

    def judge(self, state, label, class_rows, group_test) -> ClassVerdict:
        stat = np.asarray(state.calibration.get(label, np.empty(0)), dtype=np.float64)
        flip: _FlipState | None = state.info.get("flip")
        K = int(state.info.get("classes", 0))
        base = dict(label=label, detector=self.name, class_rows=int(class_rows), sample_rows=len(stat))
        if K < MIN_CLASSES or flip is None:
            return ClassVerdict(poisoned=False, note=f"{K} classes: a class-to-class flip is judged against the other "
                                f"pairs of classes, which needs at least {MIN_CLASSES} classes", **base)
        code = state.classes[label]
        mine = [p for p in flip.pairs if p["target"] == code]
        level = float(state.info["level"])
        cut = 0.5
        center, scale = _robust_location(stat[stat <= cut] if (stat <= cut).any() else stat)
        if not mine:
            return ClassVerdict(poisoned=False, note="no row of the class is taken for another class by most of its "
                                "nearest neighbours", p_value=1.0, level=level, center=center, scale=scale, **base)
        judged = [p for p in mine if p["judged"]]
        best = judged[0] if judged else mine[0]
        labels = sorted(state.classes, key=lambda v: state.classes[v])
        src = fmt_label(labels[best["source"]])
        again = (
            f"; counted again without them vouching for each other, {best['rows_flagged']}"
            if "rows_flagged" in best else ""
        )
        note = (
            f"{best['rows']} of {best['sample_rows']} sampled rows are taken for class {src} by most of their "
            f"{self.k} nearest neighbours{again} ({best['share']:.0%} of the rows that look like class {src}; "
            f"the other way {best['reverse_share']:.0%}); the other "
            f"pairs of classes show {best['others_mean']:.1%} on average, and at least this many with p = "
            f"{best['p_value']:.1e}"
        )
        if judged:
            note += f" (< {level:.1e}; {self.min_share:.0%} or more beyond the other way)"
        else:
            why = []
            if best["p_value"] >= level:
                why.append(f"level {level:.1e}")
            if best["share"] - best["reverse_share"] < self.min_share:
                why.append(f"smallest flip reported: {self.min_share:.0%} more than the other way")
            note += f" ({'; '.join(why) or 'too few rows'})"
        return ClassVerdict(
            poisoned=bool(judged), note=note, cut=cut if judged else None, side=1, center=center, scale=scale,
            group_fraction=best["rows"] / max(best["sample_rows"], 1), p_value=best["p_value"], level=level,
            extra={"source": labels[best["source"]], "share_of_source_look_alikes": best["share"],
                   "sources_judged": [labels[p["source"]] for p in judged]},
            **base,
        )

    def describe(self, state, X, y, statistic, strength) -> list[str]:
        flip: _FlipState = state.info["flip"]
        labels = sorted(state.classes, key=lambda v: state.classes[v])
        codes = np.array([state.classes[v] for v in plain_labels(y)], dtype=np.int64)
        counts = neighbour_counts(flip.refs, project(flip.refs, X), self.k, own_codes=codes)
        out = []
        for label, code, row in zip(plain_labels(y), codes, counts):
            js = flip.sources.get(int(code)) or [int(np.argmax(np.where(np.arange(len(row)) == code, -1, row)))]
            j = max(js, key=lambda s: row[s])
            pair = next((p for p in flip.pairs if p["target"] == code and p["source"] == j), None)
            share = (
                f"; of the rows that look like class {fmt_label(labels[j])}, {pair['share']:.0%} carry label "
                f"{fmt_label(label)}, far more than between other pairs of classes" if pair else ""
            )
            out.append(
                f"label {fmt_label(label)}, but {int(row[j])} of its {int(row.sum())} nearest neighbours carry label "
                f"{fmt_label(labels[j])}{share}"
            )
        return out


def _subset(knn: _KnnState, keep: np.ndarray) -> _KnnState:
    return replace(knn, refs=knn.refs[keep], ref_codes=knn.ref_codes[keep], ref_positions=knn.ref_positions[keep])


def beta_binomial_fit(x: np.ndarray, n: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """Maximum-likelihood (a, b) of a beta-binomial distribution for counts ``x`` of
    ``n`` (each pair ``weights`` times), each count taken half a row higher and each size
    one row higher. Counts with no spread beyond the binomial's give a large a + b (the
    binomial)."""
    # SciPy / scikit-learn: imported on first use, by the detectors that run
    from scipy import optimize, special

    # half a row added to every count (and one to every size): counts that are all zero
    # would otherwise put the mean at zero and make a single look-alike improbable
    x = np.asarray(x, dtype=np.float64) + 0.5
    n = np.asarray(n, dtype=np.float64) + 1.0
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    m = float((w * x).sum() / (w * n).sum())

    def nll(t):
        a, b = math.exp(t[0]), math.exp(t[1])
        return -float(np.sum(w * (special.betaln(x + a, n - x + b) - special.betaln(a, b))))

    start = np.log([m * 10.0, (1 - m) * 10.0])
    res = optimize.minimize(nll, start, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 4000})
    a, b = (math.exp(v) for v in np.clip(res.x, -30.0, 30.0))
    return a, b


def beta_binomial_logsf(x: int, n: int, a: float, b: float) -> float:
    """log P(X >= x) for X beta-binomial(n, a, b)."""
    # SciPy / scikit-learn: imported on first use, by the detectors that run
    from scipy import special

    if x <= 0:
        return 0.0
    ks = np.arange(x, n + 1, dtype=np.float64)
    log_pmf = (
        special.gammaln(n + 1) - special.gammaln(ks + 1) - special.gammaln(n - ks + 1)
        + special.betaln(ks + a, n - ks + b) - special.betaln(a, b)
    )
    return float(min(0.0, special.logsumexp(log_pmf)))
