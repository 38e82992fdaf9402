"""Generated inputs for the property-based tests and the fuzz benchmark.

Hypothesis generates tables of every input kind with odd values (NaN, infinities, huge
and tiny magnitudes, constant and repeated vectors, one class or several, integer and
string labels, ids with markup, control characters and formula prefixes, empty and long
texts). For each, ``scan_table`` either finishes with every row accounted for and the
same lists for the rows reversed, or refuses the input with a clear one-line error.
``tests/test_fuzz.py`` runs a few dozen in CI; ``benchmarks/fuzz.py`` runs the same
generator at a larger count, through the Python API and the CLI.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
from hypothesis import strategies as st

from poisonscan import scan_table
from poisonscan.pipelines.config import ConfigError
from poisonscan.pipelines.io.kinds import InputError
from poisonscan.pipelines.io.sources import SourceError

#: the refusals a user gets for an input that cannot be scanned (a one-line message)
CLEAR = (ConfigError, SourceError, InputError)

ODD_TEXT = ["<script>x()</script>", "=1+1", "+cmd", "-2", "@SUM(A1)", "\t=x", "a\x00b", "é\u202ez", "", " "]
SPECIAL = [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, 0.0, 1e20, -1e39, 5e-324]


@st.composite
def tables(draw):
    """(table, settings) for scan_table."""
    n = draw(st.integers(1, 160))
    kind = draw(st.sampled_from(["features", "features", "tabular", "text"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = draw(st.integers(1, 5))
    string_labels = draw(st.booleans())
    pool = [draw(st.sampled_from(ODD_TEXT)) + f"c{j}" if string_labels else j for j in range(k)]
    y = [pool[i] for i in rng.integers(0, k, n)]
    if draw(st.booleans()):
        ids = [draw(st.sampled_from(ODD_TEXT)) + f"#{i}" for i in range(n)]
    else:
        ids = list(range(n))
    if n > 3 and draw(st.booleans()):
        ids[1] = ids[0]  # a duplicated id
    special_share = draw(st.sampled_from([0.0, 0.01, 0.1]))
    scale = draw(st.sampled_from([1e-12, 1.0, 1e6]))

    def numbers(shape):
        X = rng.normal(size=shape) * scale
        mask = rng.random(shape) < special_share
        X[mask] = rng.choice(SPECIAL, int(mask.sum()))
        return X

    if kind == "features":
        dim = draw(st.integers(1, 6))
        X = numbers((n, dim))
        if draw(st.integers(0, 3)) == 0:  # pixel values: an 8 x 8 grey image of 17 levels
            X = rng.integers(0, 17, size=(n, 64)) * scale
            mask = rng.random(X.shape) < special_share
            X[mask] = rng.choice(SPECIAL, int(mask.sum()))
        if draw(st.booleans()):
            X[np.array(y, dtype=object) == pool[0]] = 0.25  # a class of one constant vector
        if n > 10 and draw(st.booleans()):
            X[5:10] = X[0]  # repeated vectors
        table = pa.table({"id": ids, "label": y, "features": [list(r) for r in X]})
        return table, {}
    if kind == "tabular":
        cols = {}
        for j in range(draw(st.integers(1, 4))):
            if draw(st.booleans()):
                cols[f"x{j}"] = numbers(n)
            else:
                cols[f"c{j}"] = [draw(st.sampled_from(ODD_TEXT)) + str(v) for v in rng.integers(0, 3, n)]
        return pa.table({"id": ids, "label": y, **cols}), {"tabular_columns": list(cols)}
    words = ["alpha", "beta", "gamma", "<b>", "=x", "delta", "\u00e9t\u00e9"]
    texts = []
    for _ in range(n):
        length = int(rng.choice([0, 1, 3, 12, 600]))
        texts.append(None if rng.random() < 0.03 else " ".join(rng.choice(words, length)))
    return pa.table({"id": ids, "label": y, "text": texts}), {"text_column": "text"}


def _lists(r):
    q = sorted(zip(map(str, r.quarantine["id"].to_pylist()), r.quarantine["score"].to_pylist()))
    j = sorted(zip(map(str, r.rejected["id"].to_pylist()), r.rejected["error_code"].to_pylist()))
    return q, j


def check(table: pa.Table, extra: dict) -> str:
    """Scan ``table`` (and its rows reversed); raise AssertionError on a broken promise.
    Returns "scanned" or "refused"."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            r = scan_table(table, proxy_epochs=1, **extra)
        except CLEAR as exc:
            text = str(exc)
            assert text and "\n" not in text.strip() and "Traceback" not in text, text
            return "refused"
        s = r.summary
        counts = (s["rows_read"], s["rows_clean"], s["rows_quarantined"], s["rows_rejected"])
        assert s["rows_clean"] + s["rows_quarantined"] + s["rows_rejected"] == s["rows_read"] == table.num_rows, (
            f"rows do not add up: read, clean, quarantined, rejected = {counts} of {table.num_rows}"
        )
        assert r.quarantine.num_rows == s["rows_quarantined"] and r.rejected.num_rows == s["rows_rejected"], (
            f"lists differ from the counts: {r.quarantine.num_rows} quarantined, {r.rejected.num_rows} rejected; {counts}"
        )
        if table.num_rows < 60 or "text_column" in extra:
            return "scanned"  # the reversed scan below costs a second scan: kept to vectors and tables
        back = scan_table(table.take(pa.array(np.arange(table.num_rows)[::-1])), proxy_epochs=1, **extra)
    a, b = _lists(r), _lists(back)
    assert a == b, f"rows reversed give other lists: {_difference(a, b)}"
    return "scanned"


def _difference(a, b) -> str:
    """What differs between two (quarantine, rejected) lists, in one line."""
    parts = []
    for name, x, y in (("quarantined", a[0], b[0]), ("rejected", a[1], b[1])):
        only_x, only_y = sorted(set(x) - set(y)), sorted(set(y) - set(x))
        if only_x or only_y:
            parts.append(f"{name}: {len(only_x)} only in file order {only_x[:3]}, {len(only_y)} only reversed {only_y[:3]}")
    return "; ".join(parts)
