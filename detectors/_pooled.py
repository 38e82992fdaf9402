"""Helpers for detectors that look across classes: pooled samples, a linear classifier."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .base import label_sort_key
from .stats import ClassSample


@dataclass
class Pooled:
    """The class samples side by side: X, label indices, labels, positions."""

    X: np.ndarray
    codes: np.ndarray
    labels: list
    positions: np.ndarray

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


def stratified_folds(codes: np.ndarray, positions: np.ndarray, folds: int) -> np.ndarray:
    """Fold of each row: within each class, rows in position order dealt round-robin."""
    out = np.empty(len(codes), dtype=np.int64)
    for c in np.unique(codes):
        idx = np.flatnonzero(codes == c)
        idx = idx[np.argsort(positions[idx], kind="stable")]
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
