"""A scan's fitted state: saved with its outputs, merged across daily scans, read safely."""

from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest

from poisonscan import ScanConfig, scan_table
from poisonscan.pipelines.drivers.run import run_scan
from poisonscan.pipelines.io.outputs import open_read
from poisonscan.pipelines.scan.state import (
    STATE_FILE,
    StateError,
    dumps,
    loads,
    merge_states,
    read_state,
    scan_state,
)

from ..conftest import as_table, permuted_samples
from ..planted import planted

CFG = ScanConfig(features_column="features", data_docs=False, report=False)


def _same(a, b, path="state", rel=1e-5):
    """Equal structure; arrays and floats equal up to summation order (``rel``)."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            if f.name in ("positions", "priority"):  # where a row sat in its own scan's input
                continue
            if f.name == "view":  # the report's projection, its points in input order
                assert sorted(map(repr, a.view["ids"])) == sorted(map(repr, b.view["ids"])), path
                continue
            _same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}", rel)
    elif isinstance(a, dict):
        assert sorted(map(repr, a)) == sorted(map(repr, b)), path
        for k in a:
            if k != "positions":
                _same(a[k], b[k], f"{path}[{k!r}]", rel)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]", rel)
    elif isinstance(a, np.ndarray) and a.dtype.kind in "fc":
        # float32 sums in another order: equal to ``rel`` of the largest entry
        scale = float(np.nanmax(np.abs(b))) if b.size and np.isfinite(b).any() else 1.0
        np.testing.assert_allclose(a, b, rtol=rel, atol=rel * max(scale, 1e-6), err_msg=path)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=rel, abs=1e-9, nan_ok=True), path
    else:
        assert a == b, path


def _same_verdicts(a, b):
    assert sorted(a.classes) == sorted(b.classes) and a.small_classes == b.small_classes
    for label, cm in a.classes.items():
        other = b.classes[label]
        assert cm.rows == other.rows and cm.active == other.active, label
        for det, v in cm.verdicts.items():
            w = other.verdicts[det]
            assert v.poisoned == w.poisoned, (label, det)
            for name in ("p_value", "cut", "group_fraction", "separation", "level"):
                x, y = getattr(v, name), getattr(w, name)
                if isinstance(x, float) and isinstance(y, float):
                    assert x == pytest.approx(y, rel=1e-3, abs=1e-9, nan_ok=True), (label, det, name)


def test_daily_states_merge_into_the_state_of_one_scan_of_their_union():
    X, y, poison = planted(n_per_class=400, seed=1)
    table = as_table(X, y)
    rng = np.random.default_rng(0)
    day = rng.integers(0, 3, table.num_rows)  # three days, rows of every class each day
    days = [table.filter(day == d) for d in range(3)]
    states = [scan_table(t, CFG).state for t in days]
    union = scan_table(table, CFG)
    detectors = CFG.build_detectors("features", ())
    merged = merge_states(states, CFG, detectors)
    assert merged.rows == union.state.rows == table.num_rows
    # the partials: counts, accumulators and reservoir samples (the same rows, by id)
    for key, part in union.state.partials.items():
        other = merged.partials[key]
        assert other.rows == part.rows
        assert sorted(other.reservoir.ids.tolist()) == sorted(part.reservoir.ids.tolist())
        # each day's rows keep distinct positions (days numbered one after another)
        assert len(set(other.reservoir.positions.tolist())) == len(other.reservoir.positions)
        _same(other.accumulators, part.accumulators, f"accumulators{key}")
    # and the model fitted from them: the same verdicts, their statistics equal to 1e-3
    # (fits on float32 sums taken in another order; eigenvectors may flip sign)
    _same_verdicts(merged.model, union.state.model)
    assert merged.model.poisoned_classes == union.model.poisoned_classes == [1]
    # a day on its own holds about 10 of the 30 planted rows: its verdict is its own
    assert [s.rows for s in states] == [int((day == d).sum()) for d in range(3)]


def test_a_scan_saves_its_state_with_its_outputs(tmp_path):
    X, y, poison = planted(n_per_class=300, seed=4)
    src = tmp_path / "data.parquet"
    pq.write_table(as_table(X, y), src, row_group_size=400)
    run_scan([str(src)], str(tmp_path / "out"), CFG)
    state = read_state(str(tmp_path / "out"), open_read)
    assert state.rows == len(y) and state.kind == "features" and state.dim == X.shape[1]
    assert state.model.poisoned_classes == [1]
    assert state.settings["features_column"] == "features"
    # the same state as the in-memory scan of the same rows
    mem = scan_table(as_table(X, y), CFG).state
    _same_verdicts(state.model, mem.model)


def test_a_saved_state_does_not_depend_on_the_order_classes_and_sample_rows_arrived_in():
    # with several workers the classes' partials arrive in another order, and a sample
    # merged in another order holds its rows in another order: the same state
    X, y, _ = planted(n_per_class=200, seed=2)
    state = scan_table(as_table(X, y), CFG).state
    permuted = permuted_samples(state.partials, 0)
    shuffled = {key: permuted[key] for key in reversed(list(permuted))}
    assert list(shuffled) != list(state.partials)

    def saved(partials):
        return dumps(scan_state(state.kind, partials, state.model, CFG, state.layout))

    assert saved(shuffled) == saved(state.partials)
    assert list(loads(saved(shuffled)).partials) == sorted(state.partials)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch ran-code",))


def test_a_state_file_holds_data_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / STATE_FILE).write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(StateError, match=r"may hold data only; it names (posix|os)\.system"):
        read_state(str(folder), open_read)
    assert not (tmp_path / "ran-code").exists()
    (folder / STATE_FILE).write_bytes(b"\x80\x05garbage")
    with pytest.raises(StateError, match="not a poisonscan state"):
        read_state(str(folder), open_read)
    with pytest.raises(StateError, match="no state.pkl"):
        read_state(str(tmp_path), open_read)
    with pytest.raises(StateError, match="holds a dict"):
        loads(pickle.dumps({"a": 1}))
