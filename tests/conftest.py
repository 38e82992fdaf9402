"""Shared fixtures: seeded data sets with planted poison, written in every format."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .planted import planted  # noqa: F401  (the tests import it from here)

# the test run has no network: this process and every Python process it starts
_OFFLINE = os.path.join(os.path.dirname(__file__), "offline")
os.environ["POISONSCAN_TEST_OFFLINE"] = "1"
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_OFFLINE, os.environ.get("PYTHONPATH")) if p)
_spec = importlib.util.spec_from_file_location("poisonscan_offline", os.path.join(_OFFLINE, "sitecustomize.py"))
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))  # installs the guard here


def pytest_collection_modifyitems(config, items):
    """Start the tests marked ``slow`` first (each takes about a minute or more). With
    several workers (``make test`` runs pytest-xdist) the longest tests then run side by
    side from the start instead of one of them ending the run alone; the rest keep their
    order. The order is the same on every worker, as xdist requires."""
    items[:] = sorted(items, key=lambda item: item.get_closest_marker("slow") is None)


def as_table(X, y, ids=None, fixed=True):
    ids = np.arange(len(y)) if ids is None else ids
    if fixed:
        feats = pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(X).reshape(-1)), X.shape[1])
    else:
        feats = pa.array([list(map(float, r)) for r in X], pa.list_(pa.float64()))
    return pa.table({"id": pa.array(list(ids)), "label": pa.array(list(y)), "features": feats})


def permuted_samples(partials: dict, seed: int) -> dict:
    """Scan partials with each class sample's rows in a random order: the order a sample
    holds after its partials were merged in another order (one worker or several)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, part in partials.items():
        r = part.reservoir
        p = rng.permutation(len(r.positions))
        rows = dataclasses.replace(r, priority=r.priority[p], positions=r.positions[p], X=r.X[p], ids=r.ids[p])
        out[key] = dataclasses.replace(part, reservoir=rows)
    return out


@pytest.fixture
def planted_data():
    return planted()


@pytest.fixture
def write_sources(tmp_path):
    """Write a table as Parquet / CSV / JSONL; returns the path."""

    def write(table: pa.Table, fmt: str = "parquet", name: str = "data", row_group_size=None):
        path = tmp_path / f"{name}.{fmt}"
        if fmt == "parquet":
            pq.write_table(table, path, row_group_size=row_group_size)
        elif fmt == "csv":
            rows = table.to_pylist()
            cols = table.column_names
            with open(path, "w") as f:
                f.write(",".join(cols) + "\n")
                for r in rows:
                    cells = []
                    for c in cols:
                        v = r[c]
                        if isinstance(v, list):
                            cells.append('"' + json.dumps(v) + '"')
                        elif v is None:
                            cells.append("")
                        else:
                            cells.append(str(v))
                    f.write(",".join(cells) + "\n")
        elif fmt == "jsonl":
            with open(path, "w") as f:
                for r in table.to_pylist():
                    f.write(json.dumps(r) + "\n")
        else:  # pragma: no cover
            raise ValueError(fmt)
        return str(path)

    return write


def credit_table(flip: bool, n: int = 1200, seed: int = 2):
    """Applicants; with ``flip``, every rejected applicant with a part-time job relabelled
    accepted (a targeted flip the model learns, being consistent)."""
    rng = np.random.default_rng(seed)
    job = rng.choice(["fixed", "freelance", "partime"], n, p=[0.6, 0.25, 0.15])
    income = rng.normal(60, 15, n) - 15 * (job == "partime")
    y = np.where(income + rng.normal(0, 10, n) > 50, "accepted", "rejected")
    flipped = flip & (job == "partime") & (y == "rejected")
    y = np.where(flipped, "accepted", y)
    table = pa.table(
        {"id": np.arange(n), "label": y, "income": income, "job": job, "age": rng.integers(18, 80, n)}
    )
    return table, flipped


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (the report and security tests)."""
    from .browser import Chromium, find_chromium

    if not find_chromium():
        pytest.fail("the browser tests need Chromium: `make test` installs Debian's chromium package")
    with Chromium() as b:
        yield b
