"""Expectation results of a scan, in Great Expectations' result shape.

Row expectations are evaluated on every row (natively for the defaults, by GX per batch
for the user's) and rejected rows name the expectation they failed; their results here
are the merged counts. Aggregate expectations are evaluated on pass-1 statistics (the
defaults) or by GX on a uniform sample of rows (the user's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import pyarrow as pa

from .suite import Expectation

#: Failing rows listed per expectation (as GX's partial_unexpected lists).
PARTIAL = 20


@dataclass
class ScanFacts:
    """What the scan counted and kept that the expectations are evaluated on."""

    rows_read: int
    by_error: dict
    rejected: pa.Table
    id_column: str
    label_column: str
    class_rows: dict
    dimension: int | None
    #: a uniform sample of rows (pandas), for the user's aggregate expectations
    sample: Any = None
    #: the scan's ``ContentCheck``: why repeated content was or was not rejected
    content: Any = None


def expectation_results(suite: Sequence[Expectation], facts: ScanFacts) -> tuple[list[Expectation], list[dict]]:
    """(the expectations as evaluated, one GX-shaped result dict each). The duplicate and
    conflict expectations carry the content check's explanation in ``details``."""
    done: list[Expectation] = []
    results: list[dict] = []
    rejected = facts.rejected
    codes = rejected.column("error_code").to_pylist() if rejected.num_rows else []
    ids = rejected.column(facts.id_column).to_pylist() if facts.id_column in rejected.column_names else [None] * len(codes)
    user_aggregate = [e for e in suite if e.scope == "aggregate" and e.source == "user"]
    sample_results = {}
    if user_aggregate and facts.sample is not None:
        # Great Expectations: about 2 s and 240 MB to import; only where it is used
        from .gx import validate_frame

        for e, r in zip(user_aggregate, validate_frame(user_aggregate, facts.sample)):
            sample_results[id(e)] = r
    for e in suite:
        if e.scope == "schema":
            out = e, {"success": True, "result": {"observed_value": "present"}}
        elif e.scope == "row":
            out = _row_result(e, facts, codes, ids)
        else:
            out = _aggregate_result(e, facts, sample_results.get(id(e)))
        if out is not None:
            done.append(out[0])
            results.append(out[1])
    return done, results


def _row_result(e: Expectation, facts: ScanFacts, codes: list, ids: list) -> tuple | None:
    """A row expectation: the rows rejected under its codes (None: nothing to expect)."""
    names = set(e.codes) | ({e.name} if e.source == "user" else set())
    unexpected = sum(facts.by_error.get(c, 0) for c in names)
    failing = [i for i, c in enumerate(codes) if c is not None and names & set(c.split(","))][:PARTIAL]
    kwargs = dict(e.kwargs)
    if e.type == "expect_column_value_lengths_to_equal" and kwargs.get("value") is None:
        if facts.dimension is None:
            return None  # no valid vector: no length to expect
        kwargs["value"] = facts.dimension
    e = Expectation(e.type, kwargs, e.meta, e.scope, e.codes, e.source)
    rows_read = facts.rows_read
    result = {
        "element_count": rows_read,
        "unexpected_count": unexpected,
        "unexpected_percent": 100.0 * unexpected / rows_read if rows_read else 0.0,
        "partial_unexpected_list": [_value(facts.rejected, e.column, i) for i in failing],
        "partial_unexpected_index_list": [{facts.id_column: _plain(ids[i])} for i in failing],
    }
    if facts.content is not None and names & {"duplicate_content", "conflicting_labels"}:
        result["details"] = facts.content.explain()
    return e, {"success": unexpected == 0 or _mostly_ok(e, unexpected, rows_read), "result": result}


def _aggregate_result(e: Expectation, facts: ScanFacts, sampled: dict | None) -> tuple | None:
    """An aggregate expectation: the observed labels, the class balance, or the user's
    evaluated on a uniform sample (``sampled``)."""
    check = e.meta.get("poisonscan", {}).get("check")
    if check == "observed_labels":
        observed = sorted(facts.class_rows, key=lambda v: (type(v).__name__, v))
        if not observed:
            return None  # no labelled row: nothing to describe (GX wants a non-empty set)
        kwargs = dict(e.kwargs, value_set=observed)
        return Expectation(e.type, kwargs, e.meta, e.scope, e.codes, e.source), {"success": True, "result": {"observed_value": observed}}
    if check == "class_balance":
        return e, _class_balance(e, facts)
    if check == "distinct_labels":
        return e, _distinct_labels(facts)
    if sampled is None:
        return e, {"success": True, "result": {"observed_value": None, "details": "no rows to evaluate"}}
    sampled["result"]["details"] = f"evaluated on a uniform sample of {len(facts.sample):,} rows"
    return e, sampled


def _class_balance(e: Expectation, facts: ScanFacts) -> dict:
    total = sum(facts.class_rows.values())
    shares = {k: v / total for k, v in facts.class_rows.items()} if total else {}
    low = float(e.kwargs.get("min_value") or 0.0)
    small = sorted((k for k, v in shares.items() if v < low), key=lambda v: (type(v).__name__, v))
    return {
        "success": not small,
        "result": {
            "element_count": len(shares),
            "unexpected_count": len(small),
            "unexpected_percent": 100.0 * len(small) / len(shares) if shares else 0.0,
            "partial_unexpected_list": [
                {facts.label_column: _plain(k), "share": round(shares[k], 6)} for k in small[:PARTIAL]
            ],
            "observed_value": {str(k): round(v, 6) for k, v in sorted(shares.items(), key=lambda kv: str(kv[0]))},
        },
    }


def label_variants(labels) -> list[list]:
    """Sets of two or more text labels that are the same once the white space at their
    ends is cut ('cat', 'cat ', ' cat'), each sorted, in the order of their first member.
    Letter case is not folded: it can tell classes apart ('a' and 'A' of handwritten
    letters)."""
    groups: dict = {}
    for v in labels:
        if isinstance(v, str):
            groups.setdefault(v.strip(), []).append(v)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def _distinct_labels(facts: ScanFacts) -> dict:
    """Labels that differ only in white space at their ends: one result entry per set of
    such labels, with each label's rows (the counts are of labels)."""
    variants = label_variants(facts.class_rows)
    unexpected = sum(len(g) for g in variants)
    return {
        "success": not variants,
        "result": {
            "element_count": len(facts.class_rows),
            "unexpected_count": unexpected,
            "unexpected_percent": 100.0 * unexpected / len(facts.class_rows) if facts.class_rows else 0.0,
            "partial_unexpected_list": [
                {facts.label_column: [_plain(v) for v in g], "rows": [int(facts.class_rows[v]) for v in g]}
                for g in variants[:PARTIAL]
            ],
            "observed_value": len(variants),
        },
    }


def statistics(results: Sequence[dict]) -> dict:
    n = len(results)
    ok = sum(1 for r in results if r["success"])
    return {
        "evaluated_expectations": n,
        "successful_expectations": ok,
        "unsuccessful_expectations": n - ok,
        "success_percent": 100.0 * ok / n if n else 100.0,
    }


def summary_block(suite: Sequence[Expectation], results: Sequence[dict], names: Sequence[str]) -> dict:
    """The expectation results as summary.json carries them."""
    return {
        "suites": list(names),
        "success": all(r["success"] for r in results),
        "statistics": statistics(results),
        "results": [
            {
                "expectation": e.name,
                "type": e.type,
                "kwargs": _plain(e.kwargs),
                "scope": e.scope,
                "source": e.source,
                "success": r["success"],
                "result": _plain(r["result"]),
            }
            for e, r in zip(suite, results)
        ],
    }


def _mostly_ok(e: Expectation, unexpected: int, rows: int) -> bool:
    mostly = e.kwargs.get("mostly")
    return mostly is not None and rows > 0 and (rows - unexpected) / rows >= float(mostly)


def _value(table: pa.Table, column: str | None, i: int) -> Any:
    if column and column in table.column_names:
        v = table.column(column)[i].as_py()
        if isinstance(v, (bytes, bytearray)):
            return f"<{len(v)} bytes>"
        if isinstance(v, (list, dict)):
            text = str(v)
            return text if len(text) <= 80 else text[:77] + "..."
        return _plain(v)
    return None


def _plain(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v
