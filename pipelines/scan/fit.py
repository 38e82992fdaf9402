"""Pass 1 and the fit: per (class, vector length) mergeable partials (the detectors'
accumulators and a bounded uniform sample), then one fitted model per class."""

from __future__ import annotations

import importlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from poisonscan.detectors import (
    ClassVerdict,
    Detector,
    DetectorState,
    GroupTest,
    Reservoir,
    judge_scan,
)
from poisonscan.detectors._pooled import Pooled
from poisonscan.detectors.base import group_rows_by_label, input_words, label_sort_key
from poisonscan.detectors.decision import combine, strongest_group
from poisonscan.detectors.stats import ClassSample, SampleBound
from poisonscan.pipelines.config import ScanConfig, usable_cores
from poisonscan.pipelines.scan.fingerprints import priorities
from poisonscan.pipelines.scan.projection import project_class
from poisonscan.pipelines.scan.rows import Prepared


@dataclass
class RowSample:
    """A bounded uniform sample of whole rows (bottom-k by a hash of id and seed), for
    the user's aggregate expectations."""

    capacity: int
    priority: np.ndarray
    positions: np.ndarray
    table: pa.Table | None

    @classmethod
    def of(cls, prep: Prepared, capacity: int, seed: int) -> "RowSample":
        keep = np.lexsort((prep.positions, priorities(prep.ids_arrow, seed)))[:capacity]
        prio = priorities(prep.ids_arrow, seed)[keep]
        table = pa.Table.from_batches([prep.batch]).take(pa.array(keep, pa.int64()))
        return cls(capacity, prio, prep.positions[keep], table)

    def merge(self, other: "RowSample") -> "RowSample":
        if other.table is None or not len(other.positions):
            return self
        if self.table is None or not len(self.positions):
            return other
        prio = np.concatenate([self.priority, other.priority])
        pos = np.concatenate([self.positions, other.positions])
        table = pa.concat_tables([self.table, other.table], promote_options="permissive")
        keep = np.lexsort((pos, prio))[: self.capacity]
        return RowSample(self.capacity, prio[keep], pos[keep], table.take(pa.array(keep, pa.int64())))

    def frame(self):
        """The sample as a pandas DataFrame, in priority order (a hash of the ids: the
        same whatever order rows were read in; GX validates pandas)."""
        if self.table is None:
            return None
        order = np.lexsort((self.positions, self.priority))
        return self.table.take(pa.array(order, pa.int64())).to_pandas()


ROW_SAMPLE = 10_000


# views ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """How a row's vector is laid out: ``[representation | encoded input | class
    probabilities]``.

    ``encoded`` is the width of the encoded input carried for the label detectors (the
    tabular encoder's standardised and one-hot columns: what no network fitted to the
    labels has seen), 0 for other inputs. ``probabilities`` is the number of out-of-fold
    probability columns, 0 when there are none (a features input, the user's model).
    """

    probabilities: int = 0
    encoded: int = 0
    #: whether the probabilities are out of fold (a cross-fitted proxy) rather than the
    #: full network's, which was fitted to the rows' labels
    out_of_fold: bool = False

    def split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(representation, probabilities or None)."""
        d = X.shape[1]
        rep = X[:, : d - self.probabilities - self.encoded]
        if not self.probabilities:
            return rep, None
        return rep, X[:, d - self.probabilities :]

    def encoded_input(self, X: np.ndarray) -> np.ndarray | None:
        """The encoded input columns, or None when none are carried."""
        if not self.encoded:
            return None
        d = X.shape[1]
        return X[:, d - self.probabilities - self.encoded : d - self.probabilities]


def batch_rows_for(cfg: ScanConfig, kind: str) -> int:
    """Rows per record batch: smaller for raw inputs, whose encoded form is larger."""
    return cfg.batch_rows if kind == "features" else min(cfg.batch_rows, 4096)


def view(det: Detector, X: np.ndarray, layout: Layout, tokens=None):
    """What detector ``det`` reads of rows whose vectors are ``X``."""
    if det.input == "tokens":
        if tokens is None:
            raise ValueError(f"the {det.name} detector needs {input_words(det.kinds)}")
        return tokens
    rep, probs = layout.split(X)
    if det.input == "probabilities":
        if probs is None:
            raise ValueError(f"the {det.name} detector was set to read probabilities, and there are none")
        return probs
    if det.input == "unfitted":
        # label evidence must not come from a network fitted to the row's label: the
        # encoded table, else the proxy's out-of-fold probabilities, else the vectors
        # as given (a features input, the user's model)
        encoded = layout.encoded_input(X)
        if encoded is not None:
            return encoded
        if probs is not None and layout.out_of_fold:
            return probs
    return rep


def sample_view(det: Detector, sample, layout: Layout):

    X = view(det, sample.X, layout, tokens=[]) if det.input != "tokens" else sample.X
    return ClassSample(X, sample.positions, sample.ids, sample.rows)


# pass 1 ---------------------------------------------------------------------------------
@dataclass
class ClassPartial:
    """Mergeable pass-1 state of one (class, vector length)."""

    rows: int
    accumulators: dict[str, Any]
    reservoir: Reservoir

    def merge(self, other: "ClassPartial", detectors: Sequence[Detector]) -> "ClassPartial":
        by_key = {d.accumulator_key: d for d in detectors}
        return ClassPartial(
            self.rows + other.rows,
            {
                key: d.merge_accumulators([self.accumulators[key], other.accumulators[key]])
                for key, d in by_key.items()
            },
            self.reservoir.merge(other.reservoir),
        )


def class_partials(
    prep: Prepared,
    detectors: Sequence[Detector],
    cfg: ScanConfig,
    layout: Layout = Layout(),
    bounds: dict | None = None,
) -> Iterator[tuple[tuple[Any, int], ClassPartial]]:
    """Per (class, vector length) partials of one validated batch.

    ``bounds`` (one reader's, kept across its batches): each (class, length)'s
    :class:`SampleBound`, so a partial's reservoir holds only the rows that its merge
    with the reader's earlier partials can keep. The merged samples are the same.
    """
    if not prep.groups:
        return
    prio = priorities(prep.ids_arrow, cfg.seed)
    for dim, (rows, X) in prep.groups.items():
        y = prep.labels[rows]
        for label, idx in group_rows_by_label(y):
            Xl, yl, r = X[idx], y[idx], rows[idx]
            tokens = prep.tokens_of(r) if any(d.input == "tokens" for d in detectors) else None
            accs: dict = {}
            for d in detectors:  # detectors sharing statistics compute them once
                if d.accumulator_key not in accs:
                    accs[d.accumulator_key] = d.add_input(
                        d.create_accumulator(), view(d, Xl, layout, tokens), yl
                    )
            sampled, Xs = r, Xl
            if bounds is not None:
                bound = bounds.get((label, dim)) or bounds.setdefault((label, dim), SampleBound(cfg.sample_size))
                admitted = bound.admit(prio[r], prep.positions[r])
                sampled, Xs = r[admitted], Xl[admitted]
            res = Reservoir.from_batch(
                cfg.sample_size, prio[sampled], prep.positions[sampled], Xs, prep.ids[sampled]
            )
            yield (label, dim), ClassPartial(len(idx), accs, res)


def merge_partials(parts: Iterable[ClassPartial], detectors: Sequence[Detector]) -> ClassPartial | None:
    out = None
    for p in parts:
        out = p if out is None else out.merge(p, detectors)
    return out


def choose_dim(rows_by_dim: Mapping[int, int]) -> int | None:
    """The data set's vector length: the one most rows have (ties: the shortest)."""
    if not rows_by_dim:
        return None
    return min(rows_by_dim, key=lambda d: (-rows_by_dim[d], d))


# fit ------------------------------------------------------------------------------------
@dataclass
class ClassModel:
    label: Any
    rows: int
    states: dict[str, DetectorState]
    verdicts: dict[str, ClassVerdict]
    sample_rows: int
    #: uniform subsample handed to the detectors that fit across classes (dropped once
    #: the model is built, so the side input stays small)
    shared_sample: Any = None
    accumulators: dict | None = None
    #: detectors whose flags count for this class (see decision.combine)
    active: dict = field(default_factory=dict)
    #: the class's 2-D projection for the report (see projection.project_class)
    view: dict | None = None


@dataclass
class ScanModel:
    """Everything pass 2 needs: fitted detectors and per-class verdicts."""

    dim: int | None
    classes: dict[Any, ClassModel]
    small_classes: dict[Any, int]
    rows_by_dim: dict[int, int]
    states: dict[str, DetectorState] = field(default_factory=dict)
    layout: Layout = field(default_factory=Layout)

    def verdict(self, label: Any, detector: str) -> ClassVerdict:
        return self.classes[label].verdicts[detector]

    def active_for(self, detector: str) -> set:
        """Classes where the detector's flags count (judged poisoned, and confirmed)."""
        return {label for label, cm in self.classes.items() if cm.active.get(detector)}

    @property
    def scorable_classes(self) -> frozenset:
        """The classes this model can score: fitted, or known too small (rejected)."""
        return frozenset(self.classes) | frozenset(self.small_classes)

    @property
    def poisoned_classes(self) -> list:
        return [
            label
            for label in sorted(self.classes, key=label_sort_key)
            if any(self.classes[label].active.values())
        ]


def fit_class(
    label: Any,
    partial: ClassPartial,
    detectors: Sequence[Detector],
    group_test: GroupTest,
    shared_rows: int,
    layout: Layout = Layout(),
) -> ClassModel:
    """Fit the per-class detectors on one class and judge it; keep a subsample and the
    accumulators for the detectors that fit across classes."""
    sample = partial.reservoir.sample()
    sample.rows = partial.rows
    states, verdicts = {}, {}
    for det in detectors:
        if not det.per_class:
            continue
        state = det.extract_output(
            partial.accumulators[det.accumulator_key], {label: sample_view(det, sample, layout)}
        )
        states[det.name] = state
        verdicts[det.name] = det.judge(state, label, partial.rows, group_test)
    shared = partial.reservoir.head(shared_rows).sample()
    shared.rows = partial.rows
    across = {d.name: partial.accumulators[d.accumulator_key] for d in detectors if not d.per_class}

    return ClassModel(
        label, partial.rows, states, verdicts, len(sample), shared, across,
        view=project_class(partial.reservoir, layout),
    )


def build_model(
    class_models: Iterable[ClassModel],
    small_classes: Mapping[Any, int],
    rows_by_dim: Mapping[int, int],
    detectors: Sequence[Detector],
    group_test: GroupTest,
    layout: Layout = Layout(),
) -> ScanModel:
    """Join the classes; fit and apply the detectors that look across classes."""
    classes = {m.label: m for m in sorted(class_models, key=lambda m: label_sort_key(m.label))}
    states = {}
    for det in detectors:
        if det.per_class:
            per_class = [m.states[det.name] for m in classes.values()]
            states[det.name] = DetectorState.union(per_class) if per_class else DetectorState(det.name)

    def fit_across(det: Detector) -> tuple[DetectorState, dict]:
        acc = det.merge_accumulators([m.accumulators[det.name] for m in classes.values()])
        state = det.extract_output(
            acc, {label: sample_view(det, m.shared_sample, layout) for label, m in classes.items()}
        )
        return state, {label: det.judge(state, label, m.rows, group_test) for label, m in classes.items()}

    across = [det for det in detectors if not det.per_class]
    for det, (state, verdicts) in zip(across, each_at_once(fit_across, across, fit_imports(across))):
        states[det.name] = state
        for label, m in classes.items():
            m.verdicts[det.name] = verdicts[label]
    calibrated = [d for d in detectors if d.calibrated]
    if calibrated and classes:
        _judge_against_peers(classes, states, calibrated, group_test, layout)
    for det in detectors:  # a judged class's cut may move (the judgment stays)
        for label, m in classes.items():
            m.verdicts[det.name] = det.settle(states[det.name], label, m.verdicts[det.name])
    finds = {d.name: d.finds for d in detectors}
    for m in classes.values():
        m.active = strongest_group(m.verdicts, combine(m.verdicts, finds), {d.name for d in calibrated})
        m.states = {}  # the joined states below serve every class
        m.shared_sample = None
        m.accumulators = None
    return ScanModel(
        choose_dim(rows_by_dim),
        classes,
        dict(small_classes),
        dict(rows_by_dim),
        states,
        layout,
    )


#: What every detector's verdicts import on first use (the calibration's tails, from
#: scipy.special), imported before fits run side by side, with what the detectors name in
#: ``fit_imports``: two threads importing scikit-learn for the first time at once can see
#: a half-initialised module ("cannot import name 'clone' from partially initialized
#: module 'sklearn.base'", seen in test_progress's image scan).
_FIT_LIBRARIES = ("scipy.special",)


def fit_imports(detectors: Sequence[Detector]) -> tuple[str, ...]:
    """The modules to import before ``detectors`` are fitted side by side."""
    return tuple(dict.fromkeys([*_FIT_LIBRARIES, *(m for d in detectors for m in d.fit_imports)]))


def each_at_once(fn, items: Sequence, imports: Sequence[str] = _FIT_LIBRARIES) -> list:
    """``[fn(x) for x in items]``, run in threads, one per core at most.

    For fits that are independent of each other and spend their time in numpy and
    scikit-learn, which release the interpreter lock: the detectors that look across
    classes, fitted on the one worker that holds every class's sample (on the 1M-row
    benchmark, on one core, half the scan's wall time), and the classes of a bundle.
    Each fit draws its own seeded random numbers, so the results do not depend on the
    order the threads finish in; an exception in any of them is raised here, after the
    others have finished."""
    # scikit-learn's dependency: imported on first use, as by the detectors that run
    from threadpoolctl import threadpool_limits

    cores = usable_cores()
    # the libraries first: a thread pool loaded inside the limits below is not limited
    for module in imports:
        importlib.import_module(module)

    # One BLAS and one OpenMP thread per call, whether the fits run side by side or one
    # by one, in a worker given every core or a share: a reduction split over threads
    # sums in another order (k-means' centres differed by ~1e-16 between one worker with
    # two cores and two workers with one each), and a fit must give the same bits
    # whatever its worker was given. A BLAS limit holds for the process; an OpenMP limit
    # only for the thread that sets it, so each fit sets its own.
    def one(x):
        with threadpool_limits(limits=1, user_api="openmp"):
            return fn(x)

    with threadpool_limits(limits=1):
        if cores < 2 or len(items) < 2:
            return [one(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(cores, len(items)), thread_name_prefix="poisonscan-fit") as pool:
            futures = [pool.submit(one, x) for x in items]
            wait(futures)
            return [f.result() for f in futures]


def _judge_against_peers(classes: dict, states: dict, calibrated: Sequence[Detector], group_test: GroupTest, layout: Layout) -> None:
    """Each calibrated detector's verdicts, judged against the scan's other classes at
    the scan's level (``alpha / (classes x detectors)``)."""
    level = group_test.level(len(classes) * len(calibrated))
    pooled = {}

    def pooled_for(det):
        if det.input not in pooled:
            pooled[det.input] = Pooled.of(
                {label: sample_view(det, m.shared_sample, layout) for label, m in classes.items()}
            )
        return pooled[det.input]

    for det in calibrated:
        judged = judge_scan(
            {label: m.verdicts[det.name] for label, m in classes.items()},
            level,
            lambda label, verdict, det=det: det.group_affinity(states[det.name], verdict, pooled_for(det), label),
            peer_floor=det.peer_floor,
            separation_floor=det.separation_floor,
            needs_affinity=det.needs_affinity,
            alone_by_affinity=det.alone_by_affinity,
            shape=lambda label, verdict, det=det: det.group_shape(states[det.name], verdict, label),
            alone_by_shape=det.alone_by_shape,
        )
        for label, m in classes.items():
            m.verdicts[det.name] = judged[label]


def split_small(
    partials: Mapping[Any, ClassPartial], min_rows: int
) -> tuple[dict[Any, ClassPartial], dict[Any, int]]:
    """Classes big enough to judge, and the valid-row counts of the others."""
    big = {k: p for k, p in partials.items() if p.rows >= min_rows}
    small = {k: p.rows for k, p in partials.items() if p.rows < min_rows}
    return big, small


def fit_model(
    partials: Mapping[tuple[Any, int], ClassPartial],
    detectors: Sequence[Detector],
    cfg: ScanConfig,
    layout: Layout = Layout(),
) -> ScanModel:
    """Pass-1 partials (merged per key) to a fitted model, in memory."""
    rows_by_dim: Counter = Counter()
    for (_, dim), p in partials.items():
        rows_by_dim[dim] += p.rows
    dim = choose_dim(rows_by_dim)
    per_class = {label: p for (label, d), p in partials.items() if d == dim}
    big, small = split_small(per_class, cfg.min_class_rows)
    group_test = cfg.build_group_test(detectors)
    models = each_at_once(
        lambda item: fit_class(item[0], item[1], detectors, group_test, cfg.shared_sample_size, layout),
        list(big.items()),
        fit_imports(detectors),
    )
    return build_model(models, small, rows_by_dim, detectors, group_test, layout)
