"""Pixel values as tokens: the grey grid a stamped trigger is found on.

A patch or blend backdoor puts the same values at the same place in every image it is
stamped on. :func:`pixel_tokens` turns images into the tokens ``pixel_trigger`` counts;
:class:`VectorImages` reads feature vectors that are pixel values (a flat grey image of
side x side values, as raw MNIST or the scikit-learn digits come, or a colour one of
3 x side x side) as such images.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np

#: Grey levels of the token grid: 16 (a level is 16 of the 256 grey values).
PIXEL_LEVELS = 16
#: The token grid's side is at most this: larger images are averaged over square blocks.
PIXEL_GRID = 32


def pixel_levels(x: np.ndarray) -> np.ndarray:
    """The token grid of encoded images ``x`` (n, channels, side, side), uint8: grey
    (the channels' mean), averaged over f x f blocks to a side of at most
    :data:`PIXEL_GRID`, in :data:`PIXEL_LEVELS` levels."""
    grey = x.astype(np.float32).mean(axis=1) if x.shape[1] > 1 else x[:, 0].astype(np.float32)
    side = grey.shape[-1]
    f = -(-side // PIXEL_GRID)
    if f > 1:
        g = side // f
        grey = grey[:, : g * f, : g * f].reshape(len(grey), g, f, g, f).mean(axis=(2, 4))
    return np.minimum(np.floor(grey * (PIXEL_LEVELS / 256.0)), PIXEL_LEVELS - 1).astype(np.uint8)


def pixel_tokens(x: np.ndarray, modes: bytes) -> list[list[str]]:
    """Each image's pixel values as tokens, for the ``pixel_trigger`` detector.

    A stamped trigger puts the same values at the same place in every image it is on.
    On the token grid (:func:`pixel_levels`), a cell whose level is not its most common
    one (``modes``, fitted on the sample) is a token ``px r,c=level``, and every 2 x 2
    block holding such a cell is a token ``blk r,c=l1.l2.l3.l4`` (its four levels, row
    by row): a pattern is rarer than any one of its values. Cells at their usual level
    (a plain background) make no token."""
    lv = pixel_levels(x)
    n, g, _ = lv.shape
    mode = np.frombuffer(modes, dtype=np.uint8)
    if mode.size != g * g:
        raise ValueError(f"{mode.size} fitted levels for a {g} x {g} token grid")
    if n == 0:  # a batch whose images all failed to decode
        return []
    off = lv != mode.reshape(g, g)
    code = (lv[:, :-1, :-1].astype(np.int32) << 12) | (lv[:, :-1, 1:].astype(np.int32) << 8) \
        | (lv[:, 1:, :-1].astype(np.int32) << 4) | lv[:, 1:, 1:]
    block = off[:, :-1, :-1] | off[:, :-1, 1:] | off[:, 1:, :-1] | off[:, 1:, 1:]
    # the strings come from tables (a cell's token for each level, a block's name, a
    # block's four levels): formatting each token anew cost a third of a raw image scan
    cells, blocks, patterns = _token_tables(g)
    flat, flat_off = lv.reshape(n, -1), off.reshape(n, -1)
    bcode, bflat = code.reshape(n, -1), block.reshape(n, -1)
    px = np.flatnonzero(flat_off)  # over the batch, image by image
    bk = np.flatnonzero(bflat)
    px_tokens = cells[(px % (g * g)) * PIXEL_LEVELS + flat.reshape(-1)[px]].tolist()
    bk_cell = (bk % ((g - 1) ** 2)).tolist()
    bk_code = bcode.reshape(-1)[bk].tolist()
    bk_tokens = [blocks[a] + patterns[w] for a, w in zip(bk_cell, bk_code)]
    px_end = np.searchsorted(px, np.arange(1, n + 1) * (g * g)).tolist()
    bk_end = np.searchsorted(bk, np.arange(1, n + 1) * ((g - 1) ** 2)).tolist()
    out, p0, b0 = [], 0, 0
    for p1, b1 in zip(px_end, bk_end):
        out.append(px_tokens[p0:p1] + bk_tokens[b0:b1])
        p0, b0 = p1, b1
    return out


@functools.lru_cache(maxsize=4)
def _token_tables(g: int) -> tuple[np.ndarray, list, list]:
    """For a g x g grid: each cell's token at each level (``px r,c=level``, indexed
    cell x levels + level), each 2 x 2 block's prefix (``blk r,c=``) and each code of four
    levels' suffix (``l1.l2.l3.l4``, the code's 4-bit fields from the highest)."""
    cells = np.array(
        [f"px {r},{c}={w}" for r in range(g) for c in range(g) for w in range(PIXEL_LEVELS)], dtype=object
    )
    blocks = [f"blk {r},{c}=" for r in range(g - 1) for c in range(g - 1)]
    patterns = [f"{w >> 12}.{(w >> 8) & 15}.{(w >> 4) & 15}.{w & 15}" for w in range(1 << 16)]
    return cells, blocks, patterns


#: The intensities of one 8-bit grey scale: a row whose values are all among this many
#: most common values of the sample is on the scale.
MAX_PIXEL_VALUES = 256
#: Rows of the class samples the reader is fitted on (as many from each class as fit),
#: and at most so many values in all (the test sorts them).
GATE_ROWS = 16384
GATE_VALUES = 1 << 23
#: Smallest side of a square grey image read from a vector (64 values: the 8 x 8 digits).
MIN_VECTOR_SIDE = 8


@dataclass(frozen=True)
class VectorImages:
    """How feature vectors of pixel values are read as images: ``side * side`` grey
    values, or ``3 * side * side`` colour values (``layout`` "chw": the three channels
    one after another, as torch keeps them; "hwc": each pixel's three values together,
    as numpy and image files do). Each value less ``low`` times ``scale`` (the
    sample's smallest value becomes 0 and its largest 255, so intensities of 0..1,
    0..16 and 0..255, and intensities standardised by one mean and deviation, read
    alike), rounded, then :func:`pixel_tokens` (grey, the channels' mean) with the
    token grid's most common levels ``modes``."""

    side: int
    scale: float
    modes: bytes
    low: float = 0.0
    channels: int = 1
    layout: str = "chw"

    def images(self, X: np.ndarray) -> np.ndarray:
        """Vectors ``X`` (n, side * side) as uint8 images (n, 1, side, side); values
        beyond the fitted range are clipped, a value that is not finite reads as ``low``."""
        X = np.asarray(X, dtype=np.float64)
        size = self.channels * self.side * self.side
        if X.ndim != 2 or X.shape[1] != size:
            raise ValueError(f"vectors of {size} pixel values expected; got shape {X.shape}")
        X = np.where(np.isfinite(X), X, self.low)
        pixels = np.clip(np.rint((X - self.low) * self.scale), 0, 255).astype(np.uint8)
        if self.layout == "hwc":
            return np.moveaxis(pixels.reshape(len(X), self.side, self.side, self.channels), -1, 1)
        return pixels.reshape(len(X), self.channels, self.side, self.side)

    def tokens(self, X: np.ndarray) -> list[list[str]]:
        return pixel_tokens(self.images(X), self.modes)

    @classmethod
    def fit(cls, X) -> tuple["VectorImages | None", str]:
        """``(reader, "")`` when the vectors ``X`` (a sample of the input) are pixel
        values, else ``(None, why not)``: a square number of values a row, or three times
        one (colour; the layout whose neighbouring pixels differ least), a side of at
        least :data:`MIN_VECTOR_SIDE`, every value finite, not all one value, and at
        least half of the rows holding only intensities of one 8-bit scale (every value
        among the :data:`MAX_PIXEL_VALUES` most common values of the sample). A network's
        features or a table's measurements have values that occur once; a blend stamped
        on some images gives them values off the scale, and leaves the others on it."""
        if isinstance(X, (list, tuple)):  # one array per class: read up to GATE_ROWS, spread over them
            arrays = [np.asarray(x) for x in X if len(x)]
            width = max((a.shape[1] for a in arrays if a.ndim == 2), default=1)
            X = _spread(arrays, min(GATE_ROWS, max(1024, GATE_VALUES // max(width, 1))))
        X = np.asarray(X)
        if X.ndim != 2 or len(X) == 0:
            return None, "no vectors to read"
        d = X.shape[1]
        channels = 1 if math.isqrt(d) ** 2 == d else 3
        side = math.isqrt(d // channels)
        if channels * side * side != d or side < MIN_VECTOR_SIDE:
            return None, (f"{d} values a row, not a square grey image (side x side values) or a colour one "
                          f"(3 x side x side) of at least {MIN_VECTOR_SIDE} x {MIN_VECTOR_SIDE} pixels")
        if not np.isfinite(X).all():
            return None, "values that are not finite"
        low, top = float(X.min()), float(X.max())
        if top <= low:
            return None, f"every value is {low:.4g}"
        values, counts = np.unique(X, return_counts=True)
        scale = values[np.sort(np.argsort(-counts, kind="stable")[:MAX_PIXEL_VALUES])]
        on_scale = np.isin(X, scale).all(axis=1).mean()
        if on_scale < 0.5:
            return None, (f"{values.size:,} distinct values, and only {on_scale:.0%} of the rows hold nothing but "
                          f"the {MAX_PIXEL_VALUES} most common: not the intensities of pixels")
        reader = cls(side, 255.0 / (top - low), b"", low, channels)
        if channels == 3:  # the layout whose neighbouring pixels differ least
            reader = min((replace(reader, layout=lay) for lay in ("chw", "hwc")), key=lambda r: _roughness(r, X))
        lv = pixel_levels(reader.images(X)).reshape(len(X), -1)
        modes = [int(np.bincount(lv[:, j], minlength=PIXEL_LEVELS).argmax()) for j in range(lv.shape[1])]
        return replace(reader, modes=bytes(modes)), ""


def _roughness(reader: VectorImages, X: np.ndarray) -> float:
    """Mean absolute difference of neighbouring pixels (across and down) of up to 1,024
    rows read by ``reader``: a photograph read in the wrong layout is scrambled."""
    x = reader.images(X[:1024]).astype(np.float32)
    return float(np.abs(np.diff(x, axis=-1)).mean() + np.abs(np.diff(x, axis=-2)).mean())


def _spread(arrays: list[np.ndarray], rows: int) -> np.ndarray:
    """Up to ``rows`` rows in all, as many from each array as they allow, spread evenly
    over each array (a sample kept in input order is read from end to end)."""
    if not arrays:
        return np.empty((0, 0))
    take = [0] * len(arrays)
    left = rows
    while left > 0:
        open_ = [i for i, a in enumerate(arrays) if take[i] < len(a)]
        if not open_:
            break
        each = max(1, left // len(open_))
        for i in open_:
            k = min(each, len(arrays[i]) - take[i], left)
            take[i] += k
            left -= k
            if left == 0:
                break
    return np.concatenate([a[np.linspace(0, len(a) - 1, k).round().astype(np.int64)] for a, k in zip(arrays, take) if k])
