import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from poisonscan import ScanConfig, scan, scan_table
from poisonscan.pipelines.config import ConfigError

from ..conftest import as_table, planted


def counts_add_up(summary):
    assert summary["rows_read"] == summary["rows_clean"] + summary["rows_quarantined"] + summary["rows_rejected"]
    for c in summary["classes"]:
        assert c["rows_read"] == c["rows_clean"] + c["rows_quarantined"] + c["rows_rejected"]


def test_finds_the_planted_group_and_nothing_else(planted_data):
    X, y, poison = planted_data
    result = scan(X, y)
    assert sorted(result.quarantine["id"].to_pylist()) == poison.tolist()
    assert result.summary["classes_poisoned"] == [1]
    assert set(result.quarantine["label"].to_pylist()) == {1}
    counts_add_up(result.summary)
    assert result.clean.num_rows == len(y) - len(poison)
    reason = result.quarantine["reason"][0].as_py()
    assert "spectral" in reason and "class 1" in reason


def test_clean_data_quarantines_nothing_with_or_without_a_rate():
    X, y, _ = planted(n_poison=0, seed=21)
    for rate in (None, 0.05):
        result = scan(X, y, expected_poison_rate=rate)
        assert result.quarantine.num_rows == 0
        assert result.summary["classes_poisoned"] == []
        counts_add_up(result.summary)


def test_the_rate_is_a_budget_not_a_quota():
    X, y, poison = planted(n_poison=40, seed=22)
    rate = 0.01  # cap = floor(1.5 * 0.01 * 1600) = 24 < 40 flagged
    result = scan(X, y, expected_poison_rate=rate)
    q = result.quarantine
    assert q.num_rows == 24
    assert set(q["id"].to_pylist()) <= set(poison.tolist())
    full = scan(X, y)
    strongest = full.quarantine.slice(0, 24)["id"].to_pylist()  # sorted by score
    assert sorted(q["id"].to_pylist()) == sorted(strongest)
    # the flagged rows left out by the budget stay in the clean split
    assert result.clean.num_rows == len(y) - 24
    assert result.summary["budget"] == {
        "expected_poison_rate": 0.01,
        "max_rows": 24,
        "rows_flagged": 40,
        "rows_left_in_clean_by_budget": 16,
    }
    counts_add_up(result.summary)


def test_bad_rows_are_rejected_and_counted():
    X, y, _ = planted(seed=23)
    X = X.astype(np.float64)
    X[3, 0] = np.nan
    X[4, 1] = np.inf
    ids = np.arange(len(y))
    ids[10] = ids[9]
    result = scan(X, y, ids=ids)
    rej = result.rejected
    assert rej.column_names[:5] == ["error", "error_code", "expectation", "source_file", "source_row"]
    assert rej["error_code"].to_pylist() == ["nan_features", "inf_features", "duplicate_id", "duplicate_id"]
    assert rej["source_row"].to_pylist() == [3, 4, 9, 10]
    assert result.summary["rejected_by_reason"] == {"duplicate_id": 2, "inf_features": 1, "nan_features": 1}
    counts_add_up(result.summary)


def test_polars_pandas_and_arrow_inputs_agree(planted_data):
    X, y, _ = planted_data
    table = as_table(X, y, fixed=False)
    a = scan_table(table, features_column="features")
    b = scan_table(pl.from_arrow(table), features_column="features")
    c = scan_table(table.to_pandas(), features_column="features")
    for other in (b, c):
        assert other.quarantine["id"].to_pylist() == a.quarantine["id"].to_pylist()
        np.testing.assert_allclose(other.quarantine["score"].to_numpy(), a.quarantine["score"].to_numpy())


def test_string_ids_and_labels():
    X, y, poison = planted(seed=24)
    ids = np.array([f"row-{i}" for i in range(len(y))], dtype=object)
    labels = np.array(["ant", "bee", "cat", "dog"], dtype=object)[y]
    result = scan(X, labels, ids=ids)
    assert sorted(result.quarantine["id"].to_pylist()) == sorted(ids[poison].tolist())
    assert result.summary["classes_poisoned"] == ["bee"]


def test_small_classes_are_rejected_not_passed_unscanned():
    X, y, _ = planted(seed=25)
    keep = np.concatenate([np.flatnonzero(y != 3), np.flatnonzero(y == 3)[:5]])
    result = scan(X[keep], y[keep], ids=keep)
    assert result.summary["rows_rejected"] == 5
    assert set(result.rejected["error_code"].to_pylist()) == {"small_class"}
    entry = [c for c in result.summary["classes"] if c["label"] == 3][0]
    assert entry["status"].startswith("too few valid rows")
    counts_add_up(result.summary)


def test_empty_and_all_invalid_inputs():
    empty = as_table(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    result = scan_table(empty)
    assert result.summary["rows_read"] == 0 and result.quarantine.num_rows == 0
    X = np.full((30, 4), np.nan)
    result = scan(X, np.zeros(30, int))
    assert result.summary["rows_rejected"] == 30
    counts_add_up(result.summary)


def test_same_seed_same_lists_other_seed_same_verdict(planted_data):
    X, y, _ = planted_data
    a, b = scan(X, y, seed=1), scan(X, y, seed=1)
    assert a.quarantine.equals(b.quarantine)
    c = scan(X, y, seed=2)
    assert c.summary["classes_poisoned"] == a.summary["classes_poisoned"]


def test_invalid_settings_are_usage_errors():
    with pytest.raises(ConfigError, match="expected-poison-rate"):
        ScanConfig(expected_poison_rate=1.5)
    with pytest.raises(ConfigError, match="Unknown detector"):
        ScanConfig(detectors=("nope",))
    with pytest.raises(ConfigError, match="'alpha' parameter of GroupTest"):
        ScanConfig(group_params={"alpha": 0})
    with pytest.raises(ConfigError, match="Unknown parameter"):
        ScanConfig(group_params={"min_separation": 6})
    for threads in (0, 1.5, True):
        with pytest.raises(ConfigError, match="proxy_threads must be a positive integer"):
            ScanConfig(proxy_threads=threads)
