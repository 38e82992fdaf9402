"""Seeded Gaussian classes with planted poison: the tests' fixture data (also read by
benchmarks/same_outputs.py, so a refactor is checked on the same data)."""

from __future__ import annotations

import numpy as np


def _gaussian_classes(n_per_class, n_classes, dim, seed):
    """The seeded generator, class centres, labels and rows both fixtures start from."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    return rng, centers, y, centers[y] + rng.normal(size=(len(y), dim))


def planted(
    n_per_class=400,
    n_classes=4,
    dim=16,
    poison_class=1,
    n_poison=30,
    shift=12.0,
    seed=0,
    dtype=np.float32,
):
    """Gaussian classes; ``n_poison`` rows of ``poison_class`` shifted along one direction.

    Returns (X, y, poison_idx).
    """
    rng, centers, y, X = _gaussian_classes(n_per_class, n_classes, dim, seed)
    u = rng.normal(size=dim)
    u /= np.linalg.norm(u)
    in_class = np.flatnonzero(y == poison_class)
    poison = np.sort(rng.choice(in_class, n_poison, replace=False)) if n_poison else np.array([], int)
    X[poison] += shift * u
    return X.astype(dtype), y, poison


def planted_all_to_all(n_per_class=300, n_classes=6, dim=16, rate=0.05, shift=12.0, seed=0, dtype=np.float32):
    """Gaussian classes; ``rate`` of every class's rows replaced by rows of the previous
    class carrying one shared shift (the trigger), all-to-all poison.

    Returns (X, y, poison_idx).
    """
    rng, centers, y, X = _gaussian_classes(n_per_class, n_classes, dim, seed)
    u = rng.normal(size=dim)
    u /= np.linalg.norm(u)
    poison = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(y == c), int(round(rate * n_per_class)), replace=False) for c in range(n_classes)
    ]))
    source = (y[poison] - 1) % n_classes
    X[poison] = centers[source] + rng.normal(size=(len(poison), dim)) + shift * u
    return X.astype(dtype), y, poison


def planted_class_flip(n_per_class=300, n_classes=5, dim=16, source=0, target=2, share=0.3, seed=0, dtype=np.float32):
    """Gaussian classes; ``share`` of ``source``'s rows relabelled ``target`` (a
    class-to-class label flip; the rows keep their place).

    Returns (X, y, flipped_idx).
    """
    rng, centers, y, X = _gaussian_classes(n_per_class, n_classes, dim, seed)
    members = np.flatnonzero(y == source)
    flipped = np.sort(rng.choice(members, int(round(share * len(members))), replace=False))
    y = y.copy()
    y[flipped] = target
    return X.astype(dtype), y, flipped
