"""A class split along its neighbour graph (spectral clustering), for poison no principal
direction carries."""

from __future__ import annotations

import dataclasses
from numbers import Real

import numpy as np

from ._params import BOOL, Interval
from ._pooled import PooledDetector, affinity_test
from .base import register
from .calibration import own_null
from .clustering import (
    ActivationClustering,
    ClusterClassState,
    _nearest,
    whitened_directions,
)
from .mixture import fit_two_groups


@register
class GraphClustering(ActivationClustering):
    """Split each class along its neighbour graph and ask whether one part is poison.

    Poisoned rows share their trigger, so they lie near each other even where no
    principal direction of the class carries them and 2-means on the top directions
    splits the class elsewhere (under a small perceptron's features the poison is
    linearly separable from the class yet no principal direction moves it by more than
    1 SD; docs/detectors.md). Per class, on up to ``rows_per_class`` sampled rows:

    1. centre, reduce to ``n_components`` principal directions, each whitened to unit
       variance;
    2. join each row to its ``neighbours`` nearest rows (Euclidean), weighted by a
       Gaussian of the distance (its width the median neighbour distance), symmetrised;
    3. the graph's Fiedler vector (the second eigenvector of the normalised adjacency,
       read as a random walk's: Shi and Malik's normalised cut, relaxed) is a statistic
       on which a group of rows tied more to each other than to the rest of the class
       stands apart. It is computed on the graph's largest connected component (edges a
       million times weaker than a typical one dropped); rows outside it take the
       component's median: a part cut off entirely makes the eigenvector any mix of the
       parts, and lies far from the rest of the class, where the other group detectors
       look;
    4. one and two Gaussian components are fitted to that statistic: the gain over one
       component, on the own-null's z scale (:func:`.calibration.own_null`), is the
       class's evidence, compared with the other classes' (:func:`.decision.judge_scan`,
       at the scan's level; with fewer than four classes there are no peers and no class
       is judged), and the fit's own-null p-value gates it. Rows beyond the fit's cut
       are the group (where the fit has no cut: the side of the midpoint between the
       two means): the minor component, the suspicious part;
    5. the group and the rest are then told apart by their linear discriminant (the
       reduced space whitened by the two parts' pooled covariance), so every row of the
       class, sampled or not, is scored by how much nearer it lies to the group's centre
       than to the rest's, and cut where a two-component fit of the sampled rows' scores
       puts the group's posterior at one half (never below 0). How much more the group
       looks like other classes than the rest is measured for the reviewer; on tables
       the group must (``needs_affinity``, as for ``spectral``).

    Not calibrated like the other group detectors: the own-null gate is a Gaussian
    yardstick that a Fiedler vector never fits, so the peer test alone judges, and on
    clean classes with heavy tails the classes' evidence spreads more widely than the
    peer test assumes (docs/detectors.md gives the false alarms measured).

    Opt-in (``--detectors ...,graph_clustering``): measured on parts of the development
    matrix only (docs/detectors.md), not on the held-out part.

    References
    ----------
    J. Shi, J. Malik. Normalized cuts and image segmentation. IEEE TPAMI 22(8), 2000.
    U. von Luxburg. A tutorial on spectral clustering. Statistics and Computing 17, 2007.
    B. Chen et al. Detecting Backdoor Attacks on Deep Neural Networks by Activation
    Clustering. arXiv:1811.03728, 2018 (the suspicious part, by affinity).
    """

    name = "graph_clustering"
    default_kinds = frozenset()
    fit_imports = (*PooledDetector.fit_imports, "scipy.linalg", "scipy.sparse.csgraph", "sklearn.metrics")
    default_rank = 13
    statistic_name = (
        "distance to the rest of the class minus distance to the graph's separate group, in their discriminant space"
    )
    _parameter_constraints = {
        "n_components": [Interval(int, 1, None)],
        "neighbours": [Interval(int, 2, None)],
        "rows_per_class": [Interval(int, 20, 4096)],  # an n x n graph: 4,096 rows take 0.8 GB
        "min_cluster_fraction": [Interval(Real, 0, 0.5, closed="left")],
        "max_cluster_fraction": [Interval(Real, 0, 1, closed="right")],
        "min_cluster_rows": [Interval(int, 1, None)],
        "seed": [Interval(int, 0, None)],
        "needs_affinity": [BOOL],
    }
    #: The evidence is a z value (the own-null's scale), whose unit is its spread by chance.
    peer_floor = 1.0

    def __init__(
        self,
        *,
        n_components: int = 30,
        neighbours: int = 10,
        rows_per_class: int = 1024,
        min_cluster_fraction: float = 0.005,
        max_cluster_fraction: float = 0.6,
        min_cluster_rows: int = 5,
        seed: int = 0,
        needs_affinity: bool = False,
    ):
        self.n_components = n_components
        self.neighbours = neighbours
        self.rows_per_class = rows_per_class
        self.min_cluster_fraction = min_cluster_fraction
        self.max_cluster_fraction = max_cluster_fraction
        self.min_cluster_rows = min_cluster_rows
        self.seed = seed
        self.needs_affinity = needs_affinity

    @classmethod
    def params_for(cls, kind: str, probability_labels: tuple = ()) -> dict:
        # a table's one-hot categories tie its rows into groups as far apart as any
        # poison: there a group must also look like other classes (as for spectral)
        return {"needs_affinity": True} if kind == "tabular" else {}

    def _directions(self, n: int, d: int) -> int:
        """Principal directions kept for n rows of d values (0: too few rows to split)."""
        c = min(self.n_components, d, n - 1)
        return c if c >= 1 and n >= max(20, 2 * c) else 0

    def _split(self, X: np.ndarray) -> ClusterClassState | None:
        """The class's graph split (None: too few rows, no variation, or no group)."""
        n, d = X.shape
        c = self._directions(n, d)
        if not c:
            return None
        mean = X.mean(axis=0)
        centred = X - mean
        # directions under 1e-6 of the first are float32 rounding, not variation: whitened
        # to unit variance they would make the graph mostly noise
        projection = whitened_directions(centred, c, 1e-6)
        if projection is None:
            return None  # the class's vectors do not vary: nothing to split
        Z = centred @ projection
        f = self._fiedler(Z)
        if f is None:
            return None
        fit = fit_two_groups(f)
        own_p, z = own_null(fit) if fit.sd_main > 0 else (1.0, 0.0)
        if fit.cut is not None:
            member = (f - fit.cut) * fit.side > 0
        else:
            member = (f - 0.5 * (fit.mean_main + fit.mean_group)) * fit.side > 0
        sizes = (int((~member).sum()), int(member.sum()))
        if min(sizes) < 2:
            return None
        # the discriminant of the two parts: whiten the reduced space by their pooled covariance
        a, b = Z[~member], Z[member]
        pooled = ((a - a.mean(0)).T @ (a - a.mean(0)) + (b - b.mean(0)).T @ (b - b.mean(0))) / max(n - 2, 1)
        pooled += np.eye(Z.shape[1]) * (1e-3 * np.trace(pooled) / Z.shape[1] + 1e-12)
        vals, vecs = np.linalg.eigh(pooled)
        whiten = vecs / np.sqrt(vals)
        W = Z @ whiten
        centers = np.stack([W[~member].mean(0), W[member].mean(0)])
        u = centers[1] - centers[0]
        t = W @ (u / max(np.linalg.norm(u), 1e-300))
        ta, tb = t[~member], t[member]
        pooled_sd = np.sqrt(0.5 * (ta.var() + tb.var()))
        separation = float(abs(ta.mean() - tb.mean()) / pooled_sd) if pooled_sd > 0 else float("inf")
        silhouette = _silhouette(W, member.astype(int))
        return ClusterClassState(
            mean, projection @ whiten, centers, 1, sizes, silhouette, separation, (np.nan, np.nan),
            evidence=float(z), own_p=float(own_p),
        )

    def extract_output(self, accumulator, samples):
        state = super().extract_output(accumulator, samples)
        for label, cls in state.classes.items():
            if cls is None and label not in state.info.get("constant", ()):
                X = np.asarray(samples[label].X)
                if X.ndim == 2 and self._directions(min(len(X), self.rows_per_class), X.shape[1]):
                    state.info.setdefault("no_group", []).append(label)
        return state

    def judge(self, state, label, class_rows, group_test):
        """As activation clustering's first step, with the cut where the group's
        posterior reaches one half: a two-component fit of the sampled rows' statistic
        weighs the group's share, where "nearer the group's centre" alone does not (on a
        development Gaussian class with 5 % shifted 6 SD, 10 clean rows of 1,500 flagged
        at 0, none at the fit's cut). The cut never moves below 0."""
        verdict = super().judge(state, label, class_rows, group_test)
        if label in state.info.get("no_group", ()):
            note = "the class's neighbour graph splits off no group of two rows or more"
            return dataclasses.replace(verdict, note=note)
        stat = state.calibration.get(label)
        if verdict.extra.get("candidate") and stat is not None and len(stat) >= 3 and np.isfinite(stat).all():
            fit = fit_two_groups(stat)
            if fit.cut is not None and fit.side > 0:
                verdict = dataclasses.replace(verdict, cut=max(0.0, float(fit.cut)))
        return verdict

    def _identify(self, cls: ClusterClassState, X: np.ndarray, pooled, code: int) -> ClusterClassState:
        """The group stays the suspicious part (the two-group fit names it: the minor
        component, as for the spectral test); how much more it looks like other classes
        than the rest is measured, for the reviewer and for tables (``needs_affinity``)."""
        member = _nearest(cls, X)
        affinity, p = affinity_test(pooled.affinity(code), member)
        return dataclasses.replace(cls, affinity=affinity, affinity_p=p)

    def _fiedler(self, Z: np.ndarray) -> np.ndarray | None:
        """The normalised-cut Fiedler vector of the rows' neighbour graph (None: no graph)."""
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import connected_components

        n = Z.shape[0]
        k = min(self.neighbours, n - 1)
        sq = np.einsum("ij,ij->i", Z, Z)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (Z @ Z.T), 0.0)
        np.fill_diagonal(d2, np.inf)
        near = np.argpartition(d2, k - 1, axis=1)[:, :k]
        near_d2 = np.take_along_axis(d2, near, axis=1)
        width2 = float(np.median(near_d2))
        if not width2 > 0:
            width2 = float(near_d2.max()) or 1.0
        A = np.zeros((n, n))
        weights = np.exp(-near_d2 / (2.0 * width2))
        # an edge a million times weaker than the graph's typical one ties nothing (rows
        # with no near neighbour would otherwise keep degrees near 1e-200, whose products
        # underflow)
        np.put_along_axis(A, near, np.where(weights > 1e-6, weights, 0.0), axis=1)
        A = np.maximum(A, A.T)
        # the vector is computed on the largest connected component: a part cut off from
        # it entirely makes the eigenvalue 1 repeated and the vector any mix of the parts
        # (a class of near-copies splits into many); such a part is far from the rest of
        # the class, where the other group detectors look
        _, comp = connected_components(csr_matrix(A > 0), directed=False)
        main = int(np.argmax(np.bincount(comp)))
        idx = np.flatnonzero(comp == main)
        if len(idx) < max(3, self.min_cluster_rows):
            return None
        Ak = A[np.ix_(idx, idx)]
        inv_sqrt_deg = 1.0 / np.sqrt(Ak.sum(axis=1))
        M = (Ak * inv_sqrt_deg[:, None]) * inv_sqrt_deg[None, :]
        from scipy.linalg import eigh

        m = len(idx)
        _, vecs = eigh(M, subset_by_index=[m - 2, m - 2])
        v = vecs[:, 0] * inv_sqrt_deg
        v *= np.sign(v[np.argmax(np.abs(v))]) or 1.0  # one sign whatever the solver gives
        f = np.full(n, np.median(v))
        f[idx] = v
        return f


def _silhouette(W: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2:
        return 0.0
    return float(silhouette_score(W, labels, sample_size=min(len(W), 2000), random_state=0))
