"""Expectation results of a scan, in Great Expectations' result shape.

Row expectations are evaluated on every row (natively for the defaults, by GX per batch
for the user's) and rejected rows name the expectation they failed; their results here
are the merged counts. Aggregate expectations are evaluated on pass-1 statistics (the
defaults) or by GX on a uniform sample of rows (the user's).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import pyarrow as pa

from .suite import Expectation

#: Failing rows listed per expectation (as GX's partial_unexpected lists).
PARTIAL = 20


def expectation_results(
    suite: Sequence[Expectation],
    *,
    rows_read: int,
    by_error: dict,
    rejected: pa.Table,
    id_column: str,
    label_column: str,
    class_rows: dict,
    dimension: int | None,
    sample=None,
    content=None,
) -> tuple[list[Expectation], list[dict]]:
    """(the expectations as evaluated, one GX-shaped result dict each). ``content`` (the
    scan's ``ContentCheck``) says why repeated content was or was not rejected; the
    duplicate and conflict expectations carry it in ``details``."""
    done: list[Expectation] = []
    results: list[dict] = []
    codes = rejected.column("error_code").to_pylist() if rejected.num_rows else []
    ids = rejected.column(id_column).to_pylist() if id_column in rejected.column_names else [None] * len(codes)
    user_aggregate = [e for e in suite if e.scope == "aggregate" and e.source == "user"]
    sample_results = {}
    if user_aggregate and sample is not None:
        from .gx import validate_frame

        for e, r in zip(user_aggregate, validate_frame(user_aggregate, sample)):
            sample_results[id(e)] = r
    for e in suite:
        if e.scope == "schema":
            done.append(e)
            results.append({"success": True, "result": {"observed_value": "present"}})
            continue
        if e.scope == "row":
            names = set(e.codes) | ({e.name} if e.source == "user" else set())
            unexpected = sum(by_error.get(c, 0) for c in names)
            failing = [
                i for i, c in enumerate(codes) if c is not None and names & set(c.split(","))
            ][:PARTIAL]
            kwargs = dict(e.kwargs)
            if e.type == "expect_column_value_lengths_to_equal" and kwargs.get("value") is None:
                if dimension is None:
                    continue  # no valid vector: no length to expect
                kwargs["value"] = dimension
            e = Expectation(e.type, kwargs, e.meta, e.scope, e.codes, e.source)
            done.append(e)
            result = {
                "element_count": rows_read,
                "unexpected_count": unexpected,
                "unexpected_percent": 100.0 * unexpected / rows_read if rows_read else 0.0,
                "partial_unexpected_list": [_value(rejected, e.column, i) for i in failing],
                "partial_unexpected_index_list": [{id_column: _plain(ids[i])} for i in failing],
            }
            if content is not None and names & {"duplicate_content", "conflicting_labels"}:
                result["details"] = content.explain()
            results.append({"success": unexpected == 0 or _mostly_ok(e, unexpected, rows_read), "result": result})
            continue
        # aggregate
        check = e.meta.get("poisonscan", {}).get("check")
        if check == "observed_labels":
            observed = sorted(class_rows, key=lambda v: (type(v).__name__, v))
            if not observed:
                continue  # no labelled row: nothing to describe (GX wants a non-empty set)
            kwargs = dict(e.kwargs, value_set=observed)
            done.append(Expectation(e.type, kwargs, e.meta, e.scope, e.codes, e.source))
            results.append({"success": True, "result": {"observed_value": observed}})
        elif check == "class_balance":
            total = sum(class_rows.values())
            shares = {k: v / total for k, v in class_rows.items()} if total else {}
            low = float(e.kwargs.get("min_value") or 0.0)
            small = sorted((k for k, v in shares.items() if v < low), key=lambda v: (type(v).__name__, v))
            done.append(e)
            results.append(
                {
                    "success": not small,
                    "result": {
                        "element_count": len(shares),
                        "unexpected_count": len(small),
                        "unexpected_percent": 100.0 * len(small) / len(shares) if shares else 0.0,
                        "partial_unexpected_list": [
                            {label_column: _plain(k), "share": round(shares[k], 6)} for k in small[:PARTIAL]
                        ],
                        "observed_value": {str(k): round(v, 6) for k, v in sorted(shares.items(), key=lambda kv: str(kv[0]))},
                    },
                }
            )
        else:  # the user's, on a uniform sample
            r = sample_results.get(id(e))
            done.append(e)
            if r is None:
                results.append({"success": True, "result": {"observed_value": None, "details": "no rows to evaluate"}})
            else:
                r["result"]["details"] = f"evaluated on a uniform sample of {len(sample):,} rows"
                results.append(r)
    return done, results


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
