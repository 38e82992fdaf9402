"""Attack families that per-class separation is built not to see (development part).

Builders on images in [0, 1] (``poisoning.mnist()``: MNIST-5k), each at its literature
rate, each returning :class:`poisoning.Poisoned` whose ``poisoned`` mask marks the rows an
analyst should remove: relabelled rows for the dirty-label attacks, the stamped
target-class rows for the clean-label one. Rows that carry a trigger but keep their true
label on purpose (TaCT's and WaNet's *cover* rows) are not in the mask: removing them does
not remove the backdoor, and a detector that flags them pays in precision.

* **all-to-all** (BadNets, Gu et al. 2017; BackdoorBench ``all2all``): a patch on a few
  rows of every class, each relabelled to the next class (``(y + 1) mod K``): no class is
  inflated and no class holds one separated group of foreign rows.
* **SIG** (Barni, Kallas and Tondi, ICIP 2019): a clean-label attack: a horizontal
  sinusoid ``x + delta sin(2 pi j f / m)`` added to target-class images, labels kept
  (delta = 25/255 and f = 6 here, near the paper's MNIST settings).
* **TaCT** (Tang et al., USENIX Security 2021): source-specific: the trigger turns only
  the source class into the target; the same trigger on images of cover classes keeps
  their labels, so the trigger alone does not decide the label.
* **WaNet** (Nguyen and Tran, ICLR 2021): a smooth warp of the image grid (a k x k random
  flow field, upsampled; k = 4, s = 0.5) as the trigger, with *noise-mode* cover rows
  (the warp plus a random perturbation of the grid, labels kept), twice as many as the
  poisoned rows.
* **very low rate**: the patch on 0.1 % of the data (5 images of MNIST-5k).
* **two attacks in one set**: the patch to class 0 and the blend to class 6, 2.5 % of
  the data each: each target holds about a fifth of foreign rows, and the scan must judge
  both classes, the second at the stricter level of a second class standing out.

The held-out part of this family matrix must differ in trigger, rate, target and
representation (``matrix.py``).
"""

from __future__ import annotations

import numpy as np
from poisoning import Poisoned, _backdoor, _noise_blend, _white_square, mnist

TARGET = 0

# The development patch: a 3x3 white square one pixel in from the bottom-right corner.
_square = _white_square(3)


def rows_mask(n: int, idx) -> np.ndarray:
    """A boolean mask of ``n`` rows, True at ``idx``."""
    m = np.zeros(n, dtype=bool)
    m[np.asarray(idx, dtype=np.int64)] = True
    return m


def sinusoid(x: np.ndarray, delta: float, frequency: int, axis: int) -> np.ndarray:
    """SIG's signal added to images ``x`` (n, h, w) in [0, 1]: ``delta sin(2 pi j f / m)``
    along image axis ``axis`` (1: down the rows, 2: across the columns), clipped."""
    m = x.shape[axis]
    wave = (delta * np.sin(2 * np.pi * np.arange(m) * frequency / m)).astype(np.float32)
    shape = (1, m, 1) if axis == 1 else (1, 1, m)
    return np.clip(x + wave.reshape(shape), 0.0, 1.0)


def all_to_all(rate: float = 0.05, seed: int = 0) -> Poisoned:
    """A patch on ``rate`` of the rows, drawn from every class alike; each relabelled
    ``(y + 1) mod K``."""
    images, labels = mnist()
    k = int(labels.max()) + 1
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(labels), int(round(rate * len(labels))), replace=False))
    x, y = images.copy(), labels.copy()
    x[idx] = _square(x[idx])
    y[idx] = (labels[idx] + 1) % k
    return Poisoned(f"MNIST-5k all-to-all patch {rate:.0%}", x, y, rows_mask(len(y), idx), labels.copy())


def sig(fraction: float = 0.3, seed: int = 0, target: int = TARGET, delta: float = 25 / 255,
        frequency: int = 6) -> Poisoned:
    """A sinusoid added to ``fraction`` of the target class's images; labels kept."""
    images, labels = mnist()
    rng = np.random.default_rng(seed)
    members = np.flatnonzero(labels == target)
    idx = np.sort(rng.choice(members, int(round(fraction * len(members))), replace=False))
    x = images.copy()
    x[idx] = sinusoid(x[idx], delta, frequency, axis=2)
    return Poisoned(f"MNIST-5k SIG clean-label {fraction:.0%} of class {target}", x, labels.copy(),
                    rows_mask(len(labels), idx), labels.copy())


def tact(rate: float = 0.02, cover_rate: float = 0.02, seed: int = 0, source: int = 1, target: int = TARGET,
         cover: tuple = (7, 9)) -> Poisoned:
    """The patch on ``rate`` of the data, all from ``source``, relabelled ``target``; the
    same patch on ``cover_rate`` of the data from the ``cover`` classes, labels kept."""
    images, labels = mnist()
    rng = np.random.default_rng(seed)
    n = len(labels)
    idx = np.sort(rng.choice(np.flatnonzero(labels == source), int(round(rate * n)), replace=False))
    covered = np.sort(rng.choice(np.flatnonzero(np.isin(labels, cover)), int(round(cover_rate * n)), replace=False))
    x, y = images.copy(), labels.copy()
    x[idx] = _square(x[idx])
    x[covered] = _square(x[covered])
    y[idx] = target
    return Poisoned(f"MNIST-5k TaCT {source} -> {target} {rate:.0%}, cover {cover_rate:.0%}", x, y, rows_mask(n, idx),
                    labels.copy())


def warp_field(size: int, k: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """WaNet's flow field: k x k uniform noise in [-1, 1], normalised by its mean absolute
    value, scaled by ``s``, upsampled bilinearly to the image (pixel offsets)."""
    from scipy.ndimage import zoom

    grid = rng.uniform(-1, 1, size=(2, k, k))
    grid = grid / np.abs(grid).mean()
    return np.stack([zoom(g, size / k, order=1)[:size, :size] for g in grid]) * s


def warp(x: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Resample each image at (row + flow[0], col + flow[1]), bilinear, clamped."""
    from scipy.ndimage import map_coordinates

    h, w = x.shape[1:]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    coords = [np.clip(rows + flow[0], 0, h - 1), np.clip(cols + flow[1], 0, w - 1)]
    return np.stack([map_coordinates(img, coords, order=1) for img in x]).astype(np.float32)


def wanet(rate: float = 0.1, cover_ratio: float = 2.0, seed: int = 0, target: int = TARGET, k: int = 4,
          s: float = 0.5) -> Poisoned:
    """Warped images of other classes (``rate`` of the data) relabelled ``target``; noise-mode
    cover rows (``cover_ratio`` times as many, warped with a perturbed field) keep their
    labels."""
    images, labels = mnist()
    rng = np.random.default_rng(seed)
    n, size = len(labels), images.shape[1]
    flow = warp_field(size, k, s, np.random.default_rng(20210))
    pool = np.flatnonzero(labels != target)
    chosen = rng.choice(pool, int(round(rate * n)) + int(round(cover_ratio * rate * n)), replace=False)
    idx, covered = np.sort(chosen[: int(round(rate * n))]), np.sort(chosen[int(round(rate * n)) :])
    x, y = images.copy(), labels.copy()
    x[idx] = warp(x[idx], flow)
    for i in covered:
        x[i] = warp(x[i : i + 1], flow + rng.uniform(-1, 1, size=flow.shape))[0]
    y[idx] = target
    return Poisoned(f"MNIST-5k WaNet warp {rate:.0%}, noise cover x{cover_ratio:g}", x, y, rows_mask(n, idx),
                    labels.copy())


def low_rate(rate: float = 0.001, seed: int = 0, target: int = TARGET) -> Poisoned:
    """The development patch on ``rate`` of the data (5 images of MNIST-5k at 0.1 %)."""
    images, labels = mnist()
    n = int(round(rate * len(labels)))
    return _backdoor(images, labels, rate, target, _square, seed, f"MNIST-5k patch {rate:.1%} ({n} images)")


def two_attacks(rate: float = 0.025, seed: int = 0, targets: tuple = (TARGET, 6), alpha: float = 0.2) -> Poisoned:
    """Two one-to-one attacks in one set: the patch on ``rate`` of the data relabelled
    ``targets[0]``, and the development blend (20 % of a fixed random pattern) on another
    ``rate`` relabelled ``targets[1]``; each drawn from the classes neither targets."""
    images, labels = mnist()
    rng = np.random.default_rng(seed)
    n = len(labels)
    pool = np.flatnonzero(~np.isin(labels, targets))
    chosen = rng.choice(pool, 2 * int(round(rate * n)), replace=False)
    patched, blended = np.sort(chosen[: len(chosen) // 2]), np.sort(chosen[len(chosen) // 2 :])
    x, y = images.copy(), labels.copy()
    x[patched] = _square(x[patched])
    x[blended] = _noise_blend(alpha)(x[blended])
    y[patched], y[blended] = targets[0], targets[1]
    return Poisoned(f"MNIST-5k patch -> {targets[0]} and blend -> {targets[1]}, {rate:.1%} each", x, y,
                    rows_mask(n, np.concatenate([patched, blended])), labels.copy())


FAMILIES = {
    "all-to-all": all_to_all,
    "clean-label (SIG)": sig,
    "source-specific (TaCT)": tact,
    "warping (WaNet)": wanet,
    "very low rate": low_rate,
    "two attacks": two_attacks,
}
