"""From raw rows to vectors: the training sample, the encoder, the proxy, applying them.

For a raw input (images, text, table columns) a scan first gathers a bounded uniform
sample per class of the raw values (:func:`raw_sample`), fits an encoder and trains the
proxy network on it (:func:`fit_representer`, on the driver: CPU, or a GPU when there is
one), and then represents every row with :class:`Representer` — in process for the
in-memory path, through Beam's RunInference in the pipeline. Plain Python, no Beam.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
import pyarrow as pa

from poisonscan.detectors.base import group_rows_by_label, label_sort_key
from poisonscan.detectors.stats import ClassSample, Reservoir
from poisonscan.pipelines.io.columns import ColumnKinds
from poisonscan.pipelines.io.kinds import InputError, InputSpec
from poisonscan.pipelines.io.sources import encode_position
from poisonscan.pipelines.represent.encoders import (
    ImageEncoder,
    TabularEncoder,
    TextEncoder,
    located,
    mostly_image_paths,
    mostly_numbers,
)
from poisonscan.pipelines.scan.cells import key_values, normalize_key
from poisonscan.pipelines.scan.content import coincidence_probability, text_coincidence
from poisonscan.pipelines.scan.fingerprints import fingerprints, priorities
from poisonscan.pipelines.scan.fit import Layout
from poisonscan.pipelines.scan.rows import Prepared, attach, duplicated_ids


def raw_sample(
    batch: pa.RecordBatch, file_index: int, first_row: int, kinds: ColumnKinds, cfg,
    duplicates: Mapping | None = None, folder: str | None = None,
) -> Iterator[tuple[Any, Reservoir]]:
    """(label, reservoir of raw values) for one batch: the proxy's training sample.
    Images given by a relative path keep ``folder``, the folder of the batch's file,
    which the path is read from (:func:`~..represent.encoders.located`).

    Rows without an id or a label, and rows whose id pass 0 found more than once
    (``duplicates``), are left out: they are rejected later, and copies of one id share
    a sampling priority, so only their read order would tell them apart. Values that
    do not decode are left to the encoder.
    """
    n = batch.num_rows
    names = batch.schema.names
    if cfg.id_column not in names or cfg.label_column not in names:
        return
    ids_arr = normalize_key(batch.column(cfg.id_column), kinds.id_type)
    labels_arr = normalize_key(batch.column(cfg.label_column), kinds.label_type)
    id_null = ids_arr.is_null().to_numpy(zero_copy_only=False)
    ok = ~(id_null | labels_arr.is_null().to_numpy(zero_copy_only=False))
    if duplicates:
        ok[[i for i, _ in duplicated_ids(fingerprints(ids_arr), duplicates, id_null)]] = False
    if not ok.any():
        return
    rows = np.flatnonzero(ok)
    positions = encode_position(file_index, first_row + np.arange(n, dtype=np.int64))
    prio = priorities(ids_arr, cfg.seed)
    labels = key_values(labels_arr)
    ids = key_values(ids_arr)
    for label, idx in group_rows_by_label(labels[rows]):
        r = rows[idx]
        keep = np.lexsort((positions[r], prio[r]))[: cfg.proxy_sample_size]
        r = r[keep]
        values = _raw_values(batch.take(pa.array(r, pa.int64())), kinds.input)
        if kinds.input.kind == "image":
            for j, v in enumerate(values):  # one by one: a list of numbers stays one value
                values[j] = located(v, folder)
        yield label, Reservoir.from_batch(cfg.proxy_sample_size, prio[r], positions[r], values, ids[r])


def _raw_values(batch: pa.RecordBatch, spec: InputSpec) -> np.ndarray:
    if spec.kind == "tabular":
        present = [c for c in spec.columns if c in batch.schema.names]
        values = batch.select(present).to_pylist()
    else:
        values = batch.column(spec.column).to_pylist() if spec.column in batch.schema.names else [None] * batch.num_rows
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _sample_table(values: list, columns) -> pa.Table:
    """The sampled rows (dicts) of a table as a table; a column whose files hold it as
    numbers in one and as text in another (a typo made pyarrow read it as text) is text
    here, its numbers written as text: the encoder decides what the column is."""
    if not values:
        return pa.table({c: pa.nulls(0) for c in columns})
    try:
        return pa.Table.from_pylist(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    out = {}
    for c in columns:
        cells = [row.get(c) for row in values]
        try:
            out[c] = pa.array(cells)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            out[c] = pa.array([None if v is None else str(v) for v in cells], pa.string())
    return pa.table(out)


@dataclass
class Representer:
    """Turns encoded rows into ``[representation | probabilities]`` vectors."""

    kind: str
    encoder: Any = None
    proxy: Any = None  # representations.Proxy
    user_model: Any = None  # representations.UserModel
    info: dict = field(default_factory=dict)
    #: ``{stratum: (share, probability that two rows coincide, steps)}`` for tables and
    #: texts (see :mod:`.content`); None where the content identifies the row
    coincidence: dict | None = None
    #: torch's threads while the network is applied (``--proxy-threads``)
    threads: int = 1
    _module: Any = field(default=None, repr=False, compare=False)

    @property
    def layout(self) -> Layout:
        probs = len(self.proxy.labels) if self.proxy is not None else 0
        # a table's encoded columns travel with the representation (rows.label_input)
        encoded = self.encoder.width if self.kind == "tabular" else 0
        return Layout(probs, encoded, bool(self.proxy is not None and self.proxy.out_of_fold))

    @property
    def probability_labels(self) -> tuple:
        """Labels of the out-of-fold probability columns (none without cross-fitting)."""
        return tuple(self.proxy.labels) if self.proxy is not None and self.proxy.out_of_fold else ()

    def example(self, prep: Prepared) -> dict:
        """The model input of a batch's encoded rows (numpy), with their fold."""
        # torch: heavy to import; only scans of raw inputs need it
        from poisonscan.pipelines.represent.proxy import fold_column

        inputs = dict(prep.encoded.inputs)
        if self.proxy is not None:
            inputs["fold"] = fold_column(prep.positions[prep.encoded.rows], self.proxy.fold_of)
        return inputs

    def module(self):
        if self._module is None:
            self._module = self.proxy.module() if self.proxy is not None else self.user_model.load()
        return self._module

    def apply(self, example: dict) -> tuple[np.ndarray, np.ndarray | None]:
        # torch: heavy to import; only scans of raw inputs need it
        import torch

        from poisonscan.pipelines.represent.proxy import apply_proxy, layer_output

        if self.proxy is not None:
            fold = example["fold"]
            return apply_proxy(self.module(), {k: v for k, v in example.items() if k != "fold"}, fold,
                               threads=self.threads)
        x = torch.from_numpy(np.ascontiguousarray(example["x"]))
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        h = layer_output(self.module(), x, self.user_model.layer, self.threads)
        return h.reshape(len(x), -1).numpy().astype(np.float32), None

    def represent(self, prep: Prepared) -> Prepared:
        """In process: encode-ready rows -> vectors (the in-memory path)."""
        if len(prep.encoded.rows) == 0:
            return attach(prep, np.zeros((0, 0), np.float32), None)
        rep, probs = self.apply(self.example(prep))
        return attach(prep, rep, probs)

    def __getstate__(self):  # the loaded module is rebuilt where it is used
        state = self.__dict__.copy()
        state["_module"] = None
        return state


def fit_representer(cfg, kinds: ColumnKinds, samples: Mapping[Any, Reservoir], progress: str | None = None) -> Representer:
    """Fit the encoder and train the proxy (or load the user's model) on the sample;
    ``progress`` is how the training shows itself (:class:`~..represent.proxy.Progress`)."""
    spec = kinds.input
    labels = sorted(samples, key=label_sort_key)
    values, codes, positions = [], [], []
    for i, label in enumerate(labels):
        s: ClassSample = samples[label].sample()
        values.extend(s.X.tolist())
        codes.extend([i] * len(s))
        positions.extend(s.positions.tolist())
    codes_arr = np.array(codes, dtype=np.int64)
    pos_arr = np.array(positions, dtype=np.int64)
    if spec.kind == "image":
        encoder = ImageEncoder.fit(values)
        enc = encoder.encode(values)
    elif spec.kind == "text":
        if not cfg.text_column:
            _not_numbers(values, spec.column)
        encoder = TextEncoder()
        enc = encoder.encode(values)
    elif spec.kind == "tabular":
        table = _sample_table(values, spec.columns)
        encoder = TabularEncoder.fit(table, spec.columns)
        enc = encoder.encode(table.combine_chunks().to_batches()[0] if table.num_rows else pa.record_batch([]))
    else:
        raise ValueError(f"no representer for input kind {spec.kind!r}")
    if cfg.model is not None:
        if spec.kind not in ("image",):
            raise ValueError("--model applies to image inputs; for text and "
                             "tabular inputs poisonscan trains its own proxy")
        return Representer(spec.kind, encoder, None, cfg.model, {"model": cfg.model.path}, threads=cfg.proxy_threads)
    usable = np.unique(codes_arr[enc.rows])
    if len(usable) < 2:
        found = ", ".join(str(labels[i]) for i in usable) or "none"
        raise InputError(
            f"a {spec.kind} input needs at least two classes with usable rows to train the proxy "
            f"that represents it; found {len(usable)} ({found})"
        )
    # torch: heavy to import; only scans of raw inputs need it
    from poisonscan.pipelines.represent.proxy import TrainingSample, train_proxy

    kept = enc.rows
    params = _params(spec.kind, encoder, len(labels))
    proxy = train_proxy(
        spec.kind, params, TrainingSample(enc.inputs, codes_arr[kept], pos_arr[kept], labels),
        folds=cfg.proxy_folds, epochs=cfg.proxy_epochs, seed=cfg.seed, progress=progress,
        threads=cfg.proxy_threads,
    )
    info = dict(proxy.info, kind=spec.kind, params=params)
    coincidence = _coincidence(samples, spec) if spec.kind in ("tabular", "text") else None
    return Representer(spec.kind, encoder, proxy, None, info, coincidence, cfg.proxy_threads)


def _not_numbers(values: list, column: str) -> None:
    """A text input told from the schema (no flag) whose sampled values are numbers
    written as text (at least :data:`.encoders.NUMBER_SHARE` of those present, the table
    encoder's rule) or images (names of image files, base64): an error that names both
    ways to scan it. Scanned as words, a column of measurements gets its numbers taken
    for trigger words, and a column of images is scanned for its strings, not its
    pictures."""
    if mostly_image_paths(values):
        raise InputError(
            f"the only column besides the id and the label, {column!r}, was taken for text, but its sampled "
            f"values are mostly images (names of image files, or images written in base64): scan the "
            f"images with --image-column {column} (image_column in Python; a relative path is read from the "
            f"folder of the input file), or the strings as text with --text-column {column} (text_column in "
            f"Python)"
        )
    col = pa.array([v if isinstance(v, str) else None for v in values], pa.string())
    if mostly_numbers(col):
        raise InputError(
            f"the only column besides the id and the label, {column!r}, was taken for text, but its sampled "
            f"values are mostly numbers written as text: scan it as a table of numbers (--tabular-columns "
            f"{column}; tabular_columns in Python) or as text (--text-column {column}; text_column in Python)"
        )


def _coincidence(samples: Mapping[Any, Reservoir], spec) -> dict:
    """How likely two rows are to hold the same content (:mod:`.content`), estimated on a
    uniform sample of all rows: one stratum for a table, one per length for texts.

    Every class's reservoir keeps its rows of lowest priority under one hash of the id,
    so the union holds the lowest-priority rows of the whole input: merged to one
    reservoir of the same capacity, they are a uniform sample of every row.
    """
    merged = None
    for label in sorted(samples, key=label_sort_key):
        merged = samples[label] if merged is None else merged.merge(samples[label])
    rows = merged.sample().X.tolist() if merged is not None else []
    if spec.kind == "text":
        return text_coincidence(rows)
    p, steps = coincidence_probability(rows, list(spec.columns))
    return {0: (1.0, p, steps)}


BASE = 32


def _params(kind: str, encoder, classes: int) -> dict:
    if kind == "image":
        return {"size": encoder.size, "channels": encoder.channels, "classes": classes, "base": BASE}
    if kind == "text":
        return {"buckets": encoder.buckets, "classes": classes}
    return {"inputs": encoder.width, "classes": classes}
