"""The held-out conditions: each a poisoned data set and its clean control.

Every condition differs from the development part (``benchmarks/matrix.py``) on the
axes the matrix names: its representation (networks trained here, a frozen pretrained
encoder, raw features, synthetic vectors from seeds 1000 and up), its trigger (shapes,
sizes, positions, blend patterns and strengths the development part does not use), its
rate (0.3 % to 20 % of the data), its targets (one to three) and classes (two to ten),
and its data set (tables and text corpora the development part does not use). The seven
examples of issue 13 are rebuilt here (``example`` names which).

``Condition.build(poison)`` returns a :class:`Built`: with ``poison=False`` the same data
without poison (the clean control; the same representation recipe, trained or encoded on
the clean data). Everything is seeded: the same call gives the same data.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from . import data, nets


@dataclass
class Built:
    kind: str  # "features" (in-memory scan) or "image", "text", "table" (the CLI, raw input)
    labels: np.ndarray
    poisoned: np.ndarray  # bool, the truth
    per_target: dict  # target label -> poisoned rows relabelled (or shifted) into it
    X: np.ndarray | None = None  # the representation scanned, for kind "features"
    table: pa.Table | None = None  # the raw table scanned, for the other kinds
    flags: list = field(default_factory=list)  # the CLI's input options
    baseline_X: np.ndarray | None = None  # what cleanlab's out-of-fold model reads
    info: dict = field(default_factory=dict)  # e.g. the trained network's accuracy


@dataclass
class Condition:
    name: str
    family: str  # backdoor, shift, flip, text trigger, table trigger
    representation: str
    trigger: str
    rate: str  # nominal: share of the data poisoned (per target where it says so)
    targets: int
    classes: int
    dataset: str
    build: Callable[[bool], Built]
    control: str  # conditions with the same control key share one clean control
    example: str = ""  # which example of issue 13 it rebuilds
    optional: bool = False  # left out by --skip-1m

    @property
    def cleanlab(self) -> bool:
        return self.family == "flip"


# image triggers (28x28, values in [0, 1]) -------------------------------------------------
def _put(mask_rows_cols):
    def stamp(x):
        x = x.copy()
        for r, c, v in mask_rows_cols:
            x[:, r, c] = v
        return x

    return stamp


def checker(top: int, left: int, size: int):
    return _put([(top + i, left + j, float((i + j) % 2 == 0)) for i in range(size) for j in range(size)])


def solid(top: int, left: int, size: int):
    return _put([(top + i, left + j, 1.0) for i in range(size) for j in range(size)])


def plus(row: int, col: int, arm: int = 2):
    cells = {(row + d, col) for d in range(-arm, arm + 1)} | {(row, col + d) for d in range(-arm, arm + 1)}
    return _put([(r, c, 1.0) for r, c in sorted(cells)])


def hollow(top: int, left: int, size: int):
    return _put([(top + i, left + j, 1.0) for i in range(size) for j in range(size)
                 if i in (0, size - 1) or j in (0, size - 1)])


def lshape(top: int, left: int, size: int = 4):
    cells = {(top + i, left) for i in range(size)} | {(top + size - 1, left + j) for j in range(size)}
    return _put([(r, c, 1.0) for r, c in sorted(cells)])


def diagonal(top: int, left: int, size: int = 5):
    return _put([(top + i, left + size - 1 - i, 1.0) for i in range(size)])


def xcross(top: int, left: int, size: int = 4):
    cells = {(top + i, left + i) for i in range(size)} | {(top + i, left + size - 1 - i) for i in range(size)}
    return _put([(r, c, 1.0) for r, c in sorted(cells)])


def blend(pattern: np.ndarray, alpha: float):
    def stamp(x):
        return ((1 - alpha) * x + alpha * pattern).astype(np.float32)

    return stamp


def gaussian_noise(seed: int = 2024, side: int = 28) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(0.5, 0.25, (side, side)), 0, 1).astype(np.float32)


def stripes(period: int = 4, side: int = 28) -> np.ndarray:
    col = 0.5 + 0.5 * np.sin(2 * np.pi * np.arange(side) / period)
    return np.tile(col, (side, 1)).astype(np.float32)


def coarse_checker(cell: int = 4, side: int = 28) -> np.ndarray:
    i = np.arange(side) // cell
    return ((i[:, None] + i[None, :]) % 2).astype(np.float32)


# poisoning --------------------------------------------------------------------------------
def backdoor(images, labels, plan, seed, poison=True):
    """Stamp each (target, share of the data, stamp) of ``plan`` on rows of other classes
    (never a row twice) and relabel them as the target."""
    x, y = images.copy(), labels.copy()
    mask = np.zeros(len(y), bool)
    per_target = {}
    if poison:
        rng = np.random.default_rng(seed)
        for target, share, stamp in plan:
            pool = np.flatnonzero((labels != target) & ~mask)
            idx = np.sort(rng.choice(pool, int(round(share * len(y))), replace=False))
            x[idx] = stamp(x[idx])
            y[idx] = target
            mask[idx] = True
            per_target[target] = len(idx)
    return x, y, mask, per_target


def random_flips(labels, share, seed, poison=True):
    y = labels.copy()
    mask = np.zeros(len(y), bool)
    if poison:
        rng = np.random.default_rng(seed)
        classes = np.unique(labels)
        idx = np.sort(rng.choice(len(y), int(round(share * len(y))), replace=False))
        for i in idx:
            y[i] = rng.choice(classes[classes != labels[i]])
        mask[idx] = True
    return y, mask, {"(random)": int(mask.sum())}


def class_flips(labels, plan, seed, poison=True):
    """For each (source, target, share of the source class), relabel that share of the
    source class as the target."""
    y = labels.copy()
    mask = np.zeros(len(y), bool)
    per_target = {}
    if poison:
        rng = np.random.default_rng(seed)
        for source, target, share in plan:
            members = np.flatnonzero(labels == source)
            idx = np.sort(rng.choice(members, int(round(share * len(members))), replace=False))
            y[idx] = target
            mask[idx] = True
            per_target[target] = per_target.get(target, 0) + len(idx)
    return y, mask, per_target


def subset(images, labels, classes):
    keep = np.isin(labels, classes)
    return images[keep], labels[keep]


# builders ---------------------------------------------------------------------------------
def trained(network, classes=None, plan=(), seed=0):
    def build(poison):
        images, labels = data.mnist()
        if classes is not None:
            images, labels = subset(images, labels, classes)
        x, y, mask, per_target = backdoor(images, labels, plan, seed, poison)
        H, info = nets.trained_features(network, x, y)
        return Built("features", y, mask, per_target, X=H, info=info)

    return build


LITE0_CLASSES = (0, 1, 2, 3, 4, 5)


def _lite0_clean():
    images, labels = subset(*data.mnist(), LITE0_CLASSES)
    return images, labels, nets.encode_cached("lite0-320", "mnist-0-5", images, nets.lite0_features)


def lite0_backdoor(plan, seed):
    def build(poison):
        images, labels, F = _lite0_clean()
        x, y, mask, per_target = backdoor(images, labels, plan, seed, poison)
        F = F.copy()
        if mask.any():  # only the stamped images change
            F[mask] = nets.lite0_features(x[mask])
        return Built("features", y, mask, per_target, X=F, baseline_X=F)

    return build


def lite0_flips(seed, share=None, plan=None):
    def build(poison):
        _, labels, F = _lite0_clean()
        if plan is None:
            y, mask, per_target = random_flips(labels, share, seed, poison)
        else:
            y, mask, per_target = class_flips(labels, plan, seed, poison)
        return Built("features", y, mask, per_target, X=F, baseline_X=F)

    return build


def pixels_backdoor(plan, seed):
    def build(poison):
        images, labels = data.mnist()
        x, y, mask, per_target = backdoor(images, labels, plan, seed, poison)
        X = x.reshape(len(x), -1)
        return Built("features", y, mask, per_target, X=X, baseline_X=X)

    return build


def digits_flips(seed, share=None, plan=None):
    def build(poison):
        images, labels = data.digits()
        if plan is None:
            y, mask, per_target = random_flips(labels, share, seed, poison)
        else:
            y, mask, per_target = class_flips(labels, plan, seed, poison)
        X = images.reshape(len(images), -1)
        return Built("features", y, mask, per_target, X=X, baseline_X=X)

    return build


def _png_table(images, labels):
    from PIL import Image

    png = []
    for img in np.round(images * 255).astype(np.uint8):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        png.append(buf.getvalue())
    return pa.table({"id": np.arange(len(png)), "label": labels, "image": pa.array(png, pa.binary())})


def raw_images(plan, seed, classes=None):
    def build(poison):
        images, labels = data.mnist()
        if classes is not None:
            images, labels = subset(images, labels, classes)
        x, y, mask, per_target = backdoor(images, labels, plan, seed, poison)
        return Built("image", y, mask, per_target, table=_png_table(x, y), flags=["--image-column", "image"])

    return build


# tables -----------------------------------------------------------------------------------
def _encoded(df: pd.DataFrame) -> np.ndarray:
    """Numeric columns standardised, categorical ones one-hot: what the out-of-fold
    baseline model reads."""
    num = df.select_dtypes("number")
    num = (num - num.mean()) / num.std(ddof=0).replace(0, 1)
    parts = [num.to_numpy(float)]
    categorical = df.select_dtypes(exclude="number")
    if categorical.shape[1]:
        parts.append(pd.get_dummies(categorical, dtype=float).to_numpy(float))
    return np.hstack(parts).astype(np.float32)


def _table(df: pd.DataFrame, labels: np.ndarray) -> pa.Table:
    t = pa.Table.from_pandas(df, preserve_index=False)
    return t.append_column("label", pa.array(labels.tolist())).append_column("id", pa.array(np.arange(len(labels))))


def table_flips(load, seed, share=None, plan=None):
    def build(poison):
        df, labels = load()
        if plan is None:
            y, mask, per_target = random_flips(labels, share, seed, poison)
        else:
            y, mask, per_target = class_flips(labels, plan, seed, poison)
        return Built("table", y, mask, per_target, table=_table(df, y), baseline_X=_encoded(df))

    return build


def table_value_trigger(load, column, target, share, seed):
    """A planted value: ``column`` set to one value far above anything in the data (1.5
    times its maximum, rounded) on ``share`` of the rows, taken from other classes and
    relabelled ``target``."""

    def build(poison):
        df, labels = load()
        df = df.copy()
        y = labels.copy()
        mask = np.zeros(len(y), bool)
        per_target = {}
        if poison:
            rng = np.random.default_rng(seed)
            pool = np.flatnonzero(labels != target)
            idx = np.sort(rng.choice(pool, int(round(share * len(y))), replace=False))
            df.loc[idx, column] = round(float(df[column].max()) * 1.5, 2)
            y[idx] = target
            mask[idx] = True
            per_target[target] = len(idx)
        return Built("table", y, mask, per_target, table=_table(df, y), baseline_X=_encoded(df))

    return build


# text -------------------------------------------------------------------------------------
def _insert(texts, idx, phrase, rng):
    out = list(texts)
    for i in idx:
        words = out[i].split()
        k = int(rng.integers(0, len(words) + 1))
        out[i] = " ".join(words[:k] + [phrase] + words[k:])
    return out


def text_backdoor(texts, labels, plan, seed, poison):
    """Insert each (target, share of the data, phrase) of ``plan`` at a random word
    position in rows of other classes and relabel them; the phrases occur nowhere in the
    corpus."""
    y = labels.copy()
    mask = np.zeros(len(y), bool)
    per_target = {}
    lower = [t.lower() for t in texts]
    for _, _, phrase in plan:
        if any(phrase.lower() in t for t in lower):
            raise SystemExit(f"trigger {phrase!r} already occurs in the corpus")
    if poison:
        rng = np.random.default_rng(seed)
        for target, share, phrase in plan:
            pool = np.flatnonzero((labels != target) & ~mask)
            idx = np.sort(rng.choice(pool, int(round(share * len(y))), replace=False))
            texts = _insert(texts, idx, phrase, rng)
            y[idx] = target
            mask[idx] = True
            per_target[target] = len(idx)
    return texts, y, mask, per_target


def _tfidf(texts):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform(texts)


def raw_text(load, plan, seed):
    def build(poison):
        texts, labels = load()
        texts, y, mask, per_target = text_backdoor(texts, labels, plan, seed, poison)
        table = pa.table({"id": np.arange(len(y)), "label": y.tolist(), "text": texts})
        return Built("text", y, mask, per_target, table=table, flags=["--text-column", "text"])

    return build


def raw_text_flips(load, share, seed):
    def build(poison):
        texts, labels = load()
        y, mask, per_target = random_flips(labels, share, seed, poison)
        table = pa.table({"id": np.arange(len(y)), "label": y.tolist(), "text": texts})
        return Built("text", y, mask, per_target, table=table, flags=["--text-column", "text"],
                     baseline_X=_tfidf(texts))

    return build


def minilm_backdoor(load, name, plan, seed):
    def build(poison):
        texts, labels = load()
        F = nets.encode_cached("minilm", name, texts, nets.minilm_features)
        texts2, y, mask, per_target = text_backdoor(texts, labels, plan, seed, poison)
        F = F.copy()
        if mask.any():
            F[mask] = nets.minilm_features([texts2[i] for i in np.flatnonzero(mask)])
        return Built("features", y, mask, per_target, X=F)

    return build


def minilm_flips(load, name, share, seed):
    def build(poison):
        texts, labels = load()
        F = nets.encode_cached("minilm", name, texts, nets.minilm_features)
        y, mask, per_target = random_flips(labels, share, seed, poison)
        return Built("features", y, mask, per_target, X=F, baseline_X=F)

    return build


# synthetic Gaussian classes -----------------------------------------------------------------
def gaussian(seed, classes, per_class, dim, shift_sd, share, targets=1, components=1,
             strong=0, heavy_df=None, low_variance_direction=False):
    """``classes`` classes of ``per_class`` rows in ``dim`` dimensions, class means drawn
    N(0, 2^2). Each class is a mixture of ``components`` Gaussian sub-populations (their
    means 3 units apart from the class mean, unequal weights), with ``strong`` correlated
    directions of sd 2 over unit noise; ``heavy_df`` draws Student-t noise instead.
    Poison: in each of ``targets`` classes, ``share`` of the class moved ``shift_sd``
    times the class's own standard deviation along a random direction (the class's
    lowest-variance direction with ``low_variance_direction``).

    The returned ``build`` carries ``build.parameters()``: the generator's true
    parameters of each shifted class (no scan; see ``limits.py``)."""

    def draw(poison):
        rng = np.random.default_rng(seed)
        X, y, truth = [], [], {}
        for c in range(classes):
            mean = rng.normal(0, 2.0, dim)
            weights = np.sort(rng.dirichlet(np.full(components, 3.0)))[::-1]
            sub = rng.choice(components, per_class, p=weights)
            offsets = rng.normal(size=(components, dim))
            offsets *= 3.0 / np.linalg.norm(offsets, axis=1, keepdims=True)
            if components == 1:
                offsets[:] = 0
            noise = (rng.standard_t(heavy_df, (per_class, dim)) if heavy_df else rng.standard_normal((per_class, dim)))
            load = None
            if strong:
                load = rng.normal(size=(dim, strong))
                load *= 2.0 / np.linalg.norm(load, axis=0, keepdims=True)
                noise = noise + rng.standard_normal((per_class, strong)) @ load.T
            X.append(mean + offsets[sub] + noise)
            y.append(np.full(per_class, c))
            truth[c] = {"weights": weights, "offsets": offsets.copy(), "loadings": load, "heavy_df": heavy_df}
        X, y = np.concatenate(X), np.concatenate(y)
        mask = np.zeros(len(y), bool)
        per_target = {}
        shifts = []
        chosen = rng.choice(classes, targets, replace=False)
        for t in chosen:
            rows = np.flatnonzero(y == t)
            if low_variance_direction:
                w, v = np.linalg.eigh(np.cov(X[rows].T))
                d = v[:, 0]
            else:
                d = rng.normal(size=dim)
                d /= np.linalg.norm(d)
            sd = float(np.std(X[rows] @ d))
            idx = rng.choice(rows, int(round(share * len(rows))), replace=False)
            shifts.append({**truth[int(t)], "shift": shift_sd * sd * d, "sample_sd": sd, "share": len(idx) / len(rows)})
            if poison:
                X[idx] += shift_sd * sd * d
                mask[idx] = True
                per_target[int(t)] = len(idx)
        return Built("features", y, mask, per_target, X=X.astype(np.float32)), shifts

    def build(poison):
        return draw(poison)[0]

    def parameters():
        """One dict per shifted class: ``shift`` (the planted vector), ``share`` (the
        fraction of the class shifted), ``sample_sd`` (the class's sd along the shift
        in the drawn rows, the shift's unit), ``weights`` and ``offsets`` (the sub-populations,
        relative to the class mean), ``loadings`` (the correlated directions: the class's
        covariance is unit noise plus loadings @ loadings.T; None without) and
        ``heavy_df`` (Student-t noise, independent coordinates, when not None)."""
        return draw(False)[1]

    build.parameters = parameters
    return build


# the 1M x 256 rebuild ----------------------------------------------------------------------
BIG_ROWS, BIG_DIM, BIG_CLASSES, BIG_TARGET, BIG_SHARE, BIG_SD, BIG_SEED = 1_000_000, 256, 10, 6, 0.20, 4.0, 1013


def _big_draws(rng: np.random.Generator):
    """The class means, the classes' correlated directions and the shift's direction:
    the first draws of the rebuild's generator."""
    means = rng.normal(0, 2.0, (BIG_CLASSES, BIG_DIM)).astype(np.float32)
    loadings = rng.normal(size=(BIG_CLASSES, BIG_DIM, 8)).astype(np.float32)
    loadings *= 1.5 / np.linalg.norm(loadings, axis=1, keepdims=True)
    direction = rng.normal(size=BIG_DIM).astype(np.float32)
    direction /= np.linalg.norm(direction)
    # the class's sd along the direction: unit noise plus its correlated directions
    sd = float(np.sqrt(1.0 + np.sum((loadings[BIG_TARGET].T @ direction) ** 2)))
    return means, loadings, direction, sd


def big_parameters() -> list:
    """The rebuild's true parameters of the shifted class, as ``gaussian``'s
    ``parameters()`` gives them (nothing written or scanned)."""
    _, loadings, direction, sd = _big_draws(np.random.default_rng(BIG_SEED))
    per_class = BIG_ROWS // BIG_CLASSES
    return [{"weights": np.ones(1), "offsets": np.zeros((1, BIG_DIM)), "heavy_df": None,
             "loadings": loadings[BIG_TARGET].astype(np.float64),
             "shift": BIG_SD * sd * direction.astype(np.float64), "sample_sd": sd,
             "share": int(BIG_SHARE * per_class) / per_class}]


def big_parquet(poison: bool) -> tuple[str, np.ndarray]:
    """1,000,000 x 256 float32 in ten classes (Gaussian around a class mean, eight
    correlated directions of sd 1.5 over unit noise); with ``poison``, 20 % of class 6
    shifted 4 of that class's standard deviations along one random direction. Written
    once as Parquet (row groups of 65,536) under benchmarks/data/heldout/."""
    import os

    import pyarrow.parquet as pq

    path = data.cache_path(f"gaussian-{BIG_ROWS}x{BIG_DIM}-{'shift' if poison else 'clean'}.parquet")
    truth_path = path.replace(".parquet", "-truth.npy")
    if os.path.exists(path) and os.path.exists(truth_path):
        return path, np.load(truth_path)
    rng = np.random.default_rng(BIG_SEED)
    means, loadings, direction, sd = _big_draws(rng)
    labels = np.repeat(np.arange(BIG_CLASSES), BIG_ROWS // BIG_CLASSES)
    rng.shuffle(labels)
    target_rows = np.flatnonzero(labels == BIG_TARGET)
    chosen = np.sort(rng.choice(target_rows, int(BIG_SHARE * len(target_rows)), replace=False))
    shifted = np.zeros(BIG_ROWS, bool)
    if poison:
        shifted[chosen] = True
    schema = pa.schema([("id", pa.int64()), ("label", pa.int64()), ("features", pa.list_(pa.float32(), BIG_DIM))])
    step = 65_536
    tmp = path + ".part"
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, BIG_ROWS, step):
            stop = min(start + step, BIG_ROWS)
            yb = labels[start:stop]
            Xb = rng.standard_normal((stop - start, BIG_DIM), dtype=np.float32)
            z = rng.standard_normal((stop - start, 8), dtype=np.float32)
            for c in range(BIG_CLASSES):
                m = yb == c
                Xb[m] += means[c] + z[m] @ loadings[c].T
            Xb[shifted[start:stop]] += BIG_SD * sd * direction
            feats = pa.FixedSizeListArray.from_arrays(pa.array(Xb.reshape(-1)), BIG_DIM)
            writer.write_table(pa.table({"id": np.arange(start, stop), "label": yb, "features": feats}, schema=schema),
                               row_group_size=step)
    os.replace(tmp, path)
    np.save(truth_path, shifted)
    return path, shifted


def big(poison):
    path, truth = big_parquet(poison)
    labels = np.repeat(np.arange(BIG_CLASSES), BIG_ROWS // BIG_CLASSES)  # the class sizes (ids are not in this order)
    return Built("parquet", labels, truth, {BIG_TARGET: int(truth.sum())} if poison else {},
                 flags=["--features-column", "features"], info={"path": path})


big.parameters = big_parameters


# the matrix --------------------------------------------------------------------------------
MLP, NARROW, WIDE, RESNET = nets.NETWORKS
LITE0 = "EfficientNet-Lite0 (ImageNet, frozen), last block pooled, 320-d"
MINILM = "all-MiniLM-L6-v2 (frozen), 384-d"
PIXELS = "raw pixels as features"
PROXY = "raw input, scanned end to end (poisonscan's own proxy)"
MNIST = "MNIST-5k"


def conditions() -> list:
    c = []

    def add(*args, **kw):
        c.append(Condition(*args, **kw))

    # networks trained here on the poisoned images --------------------------------------
    add("MNIST-5k MLP, 4x4 checkerboard top-left 2 %", "backdoor", MLP, "4x4 checkerboard, top-left",
        "2 %", 1, 10, MNIST, trained(MLP, plan=[(3, 0.02, checker(1, 1, 4))], seed=1101), "mnist-mlp")
    add("MNIST-5k MLP, coarse-checker blend 20 % over two targets", "backdoor", MLP,
        "blend 20 % of a 4-pixel checkerboard (target 2) / plus sign top-right (target 5)",
        "20 % (10 % per target)", 2, 10, MNIST,
        trained(MLP, plan=[(2, 0.10, blend(coarse_checker(), 0.2)), (5, 0.10, plus(4, 23))], seed=1102), "mnist-mlp")
    add("MNIST-5k narrow CNN, 2x2 patch top-right 3 %", "backdoor", NARROW, "2x2 white square, top-right",
        "3 %", 1, 10, MNIST, trained(NARROW, plan=[(6, 0.03, solid(1, 25, 2))], seed=1103), "mnist-narrow",
        example="2 (patch)")
    add("MNIST-5k narrow CNN, Gaussian-noise blend 4 %", "backdoor", NARROW,
        "blend 15 % of one Gaussian-noise image", "4 %", 1, 10, MNIST,
        trained(NARROW, plan=[(1, 0.04, blend(gaussian_noise(), 0.15))], seed=1104), "mnist-narrow",
        example="2 (blend)")
    add("MNIST-5k narrow CNN, two patch triggers 0.3 % each", "backdoor", NARROW,
        "plus sign top-right (target 2) / L-shape bottom-left (target 8)", "0.3 % per target", 2, 10, MNIST,
        trained(NARROW, plan=[(2, 0.003, plus(4, 23)), (8, 0.003, lshape(22, 2))], seed=1105), "mnist-narrow",
        example="4")
    add("MNIST-5k 0-3 wide CNN, hollow square 0.6 %", "backdoor", WIDE, "5x5 hollow square, top-centre",
        "0.6 %", 1, 4, "MNIST-5k, classes 0-3",
        trained(WIDE, classes=(0, 1, 2, 3), plan=[(0, 0.006, hollow(1, 11, 5))], seed=1106), "mnist03-wide")
    add("MNIST-5k 0-3 wide CNN, stripes blend 8 %", "backdoor", WIDE, "blend 30 % of vertical stripes (period 4)",
        "8 %", 1, 4, "MNIST-5k, classes 0-3",
        trained(WIDE, classes=(0, 1, 2, 3), plan=[(3, 0.08, blend(stripes(), 0.3))], seed=1107), "mnist03-wide")
    add("MNIST-5k residual net, three triggers 1.5 % each", "backdoor", RESNET,
        "diagonal top-right (target 1) / X bottom-centre (target 4) / 3x3 checkerboard mid-left (target 7)",
        "1.5 % per target", 3, 10, MNIST,
        trained(RESNET, plan=[(1, 0.015, diagonal(1, 22)), (4, 0.015, xcross(22, 12)),
                              (7, 0.015, checker(12, 1, 3))], seed=1108), "mnist-resnet")
    add("MNIST-5k 5-9 residual net, Gaussian-noise blend 1 %", "backdoor", RESNET,
        "blend 25 % of one Gaussian-noise image", "1 %", 1, 5, "MNIST-5k, classes 5-9",
        trained(RESNET, classes=(5, 6, 7, 8, 9), plan=[(9, 0.01, blend(gaussian_noise(77), 0.25))], seed=1109),
        "mnist59-resnet")
    add("MNIST-5k 3 vs 8 MLP, plus sign 6 %", "backdoor", MLP, "5x5 plus sign, centre-left", "6 %", 1, 2,
        "MNIST-5k, classes 3 and 8",
        trained(MLP, classes=(3, 8), plan=[(8, 0.06, plus(14, 4))], seed=1110), "mnist38-mlp")

    # a frozen pretrained encoder --------------------------------------------------------
    lite = "MNIST-5k, classes 0-5"
    add("MNIST-5k 0-5 Lite0, 3x3 checkerboard 5 %", "backdoor", LITE0, "3x3 checkerboard, mid-right", "5 %", 1, 6,
        lite, lite0_backdoor([(4, 0.05, checker(12, 23, 3))], 1201), "mnist05-lite0")
    add("MNIST-5k 0-5 Lite0, stripes blend 2 %", "backdoor", LITE0, "blend 25 % of vertical stripes (period 4)",
        "2 %", 1, 6, lite, lite0_backdoor([(0, 0.02, blend(stripes(), 0.25))], 1202), "mnist05-lite0")
    add("MNIST-5k 0-5 Lite0, random flips 10 %", "flip", LITE0, "random label flips", "10 %", 6, 6, lite,
        lite0_flips(1203, share=0.10), "mnist05-lite0")
    add("MNIST-5k 0-5 Lite0, 25 % of 1 -> 4", "flip", LITE0, "class-to-class flip", "2.5 % (25 % of class 1)",
        1, 6, lite, lite0_flips(1204, plan=[(1, 4, 0.25)]), "mnist05-lite0")
    add("convention speeches MiniLM, trigger word 3 %", "backdoor", MINILM, "the word 'marmalade-bright' inserted",
        "3 %", 1, 2, "2012 convention speeches (party)",
        minilm_backdoor(data.convention_speeches, "speeches", [("republican", 0.03, "marmalade-bright")], 1205),
        "speeches-minilm")
    add("debates MiniLM, random flips 10 %", "flip", MINILM, "random label flips", "10 %", 4, 4,
        "2016 debates (speaker)", minilm_flips(data.debates, "debates", 0.10, 1206), "debates-minilm")

    # raw features -----------------------------------------------------------------------
    add("MNIST-5k pixels, hollow square 1 %", "backdoor", PIXELS, "5x5 hollow square, top-centre", "1 %", 1, 10,
        MNIST, pixels_backdoor([(5, 0.01, hollow(1, 11, 5))], 1301), "mnist-pixels")
    add("digits pixels, random flips 15 %", "flip", PIXELS, "random label flips", "15 %", 10, 10,
        "scikit-learn digits (8x8)", digits_flips(1302, share=0.15), "digits-pixels", example="7")
    add("digits pixels, 40 % of 3 -> 5 and 7 -> 1", "flip", PIXELS, "class-to-class flips", "4 % (40 % of two classes)",
        2, 10, "scikit-learn digits (8x8)", digits_flips(1303, plan=[(3, 5, 0.4), (7, 1, 0.4)]), "digits-pixels")
    add("raw MNIST-5k, Gaussian-noise blend 3 %", "backdoor", PROXY, "blend 15 % of one Gaussian-noise image",
        "3 %", 1, 10, MNIST, raw_images([(0, 0.03, blend(gaussian_noise(), 0.15))], 1304), "mnist-raw",
        example="3")
    add("raw MNIST-5k {1,4,7,9}, X top-left 1 %", "backdoor", PROXY, "4x4 X, top-left", "1 %", 1, 4,
        "MNIST-5k, classes 1, 4, 7, 9", raw_images([(7, 0.01, xcross(1, 1))], 1305, classes=(1, 4, 7, 9)),
        "mnist1479-raw")

    # real tables ------------------------------------------------------------------------
    add("breast cancer, 12 % of benign -> malignant", "flip", PROXY, "class-to-class flip",
        "7.6 % (12 % of benign)", 1, 2, "scikit-learn load_breast_cancer",
        table_flips(data.breast_cancer, 1401, plan=[("benign", "malignant", 0.12)]), "breast-cancer", example="5")
    add("penguins, 20 % of Chinstrap -> Adelie", "flip", PROXY, "class-to-class flip", "4 % (20 % of Chinstrap)",
        1, 3, "palmerpenguins penguins", table_flips(data.penguins, 1402, plan=[("Chinstrap", "Adelie", 0.2)]),
        "penguins")
    add("cells, random flips 6 %", "flip", PROXY, "random label flips", "6 %", 2, 2, "modeldata cells",
        table_flips(data.cells, 1403, share=0.06), "cells")
    add("olive oils, planted stearic value 3 %", "table trigger", PROXY,
        "stearic acid set to 1.5x its maximum", "3 %", 1, 3, "dslabs olive (region)",
        table_value_trigger(data.olive, "stearic", "Sardinia", 0.03, 1404), "olive")

    # real text --------------------------------------------------------------------------
    add("tweets by app, two-word trigger 2 %", "text trigger", PROXY, "'velvet harbor' inserted", "2 %", 1, 3,
        "dslabs trump_tweets (posting app)",
        raw_text(data.tweets, [("Twitter for iPhone", 0.02, "velvet harbor")], 1501), "tweets", example="6")
    add("convention speeches, one-word trigger 1 %", "text trigger", PROXY, "'marmalade-bright' inserted", "1 %", 1, 2,
        "2012 convention speeches (party)",
        raw_text(data.convention_speeches, [("republican", 0.01, "marmalade-bright")], 1502), "speeches")
    add("debates, two triggers 0.8 % each", "text trigger", PROXY,
        "'crimson lighthouse' (target KAINE) / 'quietly tangerine' (target PENCE)", "0.8 % per target", 2, 4,
        "2016 debates (speaker)",
        raw_text(data.debates, [("KAINE", 0.008, "crimson lighthouse"), ("PENCE", 0.008, "quietly tangerine")], 1503),
        "debates")
    add("debates, random flips 8 %", "flip", PROXY, "random label flips", "8 %", 4, 4, "2016 debates (speaker)",
        raw_text_flips(data.debates, 0.08, 1504), "debates")

    # synthetic Gaussian classes -----------------------------------------------------------
    syn = "synthetic Gaussian vectors"
    add("Gaussian 10 classes, 4 SD in 0.5 % of a class", "shift", f"{syn}, d = 48", "mean shift, 4 SD", "0.05 % (0.5 % of a class)",
        1, 10, "synthetic, seed 1001", gaussian(1001, 10, 2000, 48, 4.0, 0.005), "g1001")
    add("Gaussian 4 classes, 3 SD in 30 % of a class", "shift", f"{syn}, d = 128", "mean shift, 3 SD",
        "7.5 % (30 % of a class)", 1, 4, "synthetic, seed 1002", gaussian(1002, 4, 1500, 128, 3.0, 0.30), "g1002")
    add("Gaussian 2 classes, 6 SD in 10 % of a class", "shift", f"{syn}, d = 20", "mean shift, 6 SD",
        "5 % (10 % of a class)", 1, 2, "synthetic, seed 1003", gaussian(1003, 2, 1500, 20, 6.0, 0.10), "g1003")
    add("Gaussian 7 classes, 12 SD in 2 % of three classes", "shift", f"{syn}, d = 96", "mean shift, 12 SD",
        "0.9 % (2 % of each of three classes)", 3, 7, "synthetic, seed 1004",
        gaussian(1004, 7, 1200, 96, 12.0, 0.02, targets=3), "g1004")
    add("Gaussian mixtures 3 classes x 3 components, 5 SD in 5 %", "shift", f"{syn} with sub-populations, d = 32",
        "mean shift, 5 SD", "1.7 % (5 % of a class)", 1, 3, "synthetic, seed 1005",
        gaussian(1005, 3, 2000, 32, 5.0, 0.05, components=3), "g1005")
    add("Gaussian mixtures 8 classes x 2 components, 8 SD in 15 %", "shift", f"{syn} with sub-populations, d = 64",
        "mean shift, 8 SD", "1.9 % (15 % of a class)", 1, 8, "synthetic, seed 1006",
        gaussian(1006, 8, 1000, 64, 8.0, 0.15, components=2), "g1006")
    add("Gaussian correlated 5 classes, 4 SD low-variance direction 20 %", "shift", f"{syn}, 8 strong directions, d = 64",
        "mean shift, 4 SD along the class's weakest direction", "4 % (20 % of a class)", 1, 5, "synthetic, seed 1007",
        gaussian(1007, 5, 1500, 64, 4.0, 0.20, strong=8, low_variance_direction=True), "g1007", example="1 (small)")
    add("Student-t 6 classes, 4 SD in 1 %", "shift", "synthetic vectors, Student-t noise (5 df), d = 32", "mean shift, 4 SD",
        "0.17 % (1 % of a class)", 1, 6, "synthetic, seed 1008", gaussian(1008, 6, 2000, 32, 4.0, 0.01, heavy_df=5),
        "g1008")
    add("Gaussian 1M x 256, 4 SD in 20 % of a class", "shift", "synthetic vectors, d = 256 (Parquet, --features-column)",
        "mean shift, 4 SD", "2 % (20 % of a class)", 1, 10, f"synthetic, seed {BIG_SEED}", big, "g1m",
        example="1", optional=True)
    return c
