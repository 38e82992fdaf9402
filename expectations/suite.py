"""Expectation suites: the defaults (``suites/default.json``), the user's, and their scopes.

Every expectation has a scope:

* ``schema`` — about the columns; checked before the scan starts (a missing column is an
  error of the run, exit code 1);
* ``row`` — about each row; a failing row is rejected, naming the expectation. The
  defaults are evaluated natively inside the Beam pipeline (vectorised, exact, merged
  across workers); the user's column-map expectations run through Great Expectations on
  pandas batches;
* ``aggregate`` — about the data set; evaluated from pass-1 statistics (the defaults) or
  on a uniform sample of rows (the user's).

Nothing here imports Great Expectations unless a user suite has to be classified.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

SUITES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "suites")


class SuiteError(ValueError):
    """A suite file cannot be read or used (a usage error)."""


@dataclass(frozen=True)
class Expectation:
    type: str
    kwargs: dict
    meta: dict = field(default_factory=dict)
    scope: str = "row"
    codes: tuple = ()
    source: str = "default"

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column")

    @property
    def name(self) -> str:
        """How rejected rows name it: ``type(column)``."""
        target = self.kwargs.get("column") or ",".join(map(str, self.kwargs.get("column_list", [])))
        if not target and "column_A" in self.kwargs:
            target = f"{self.kwargs['column_A']},{self.kwargs['column_B']}"
        return f"{self.type}({target})"

    def config(self) -> dict:
        return {"type": self.type, "kwargs": dict(self.kwargs), "meta": dict(self.meta)}


@dataclass(frozen=True)
class SuiteContext:
    """What the default suite's placeholders are filled with."""

    id_column: str
    label_column: str
    input_kind: str
    input_columns: tuple
    labels: tuple | None = None
    min_class_fraction: float | None = None
    feature_range: tuple | None = None


def default_suite(ctx: SuiteContext) -> list[Expectation]:
    with open(os.path.join(SUITES, "default.json")) as f:
        raw = json.load(f)
    out = []
    for item in raw["expectations"]:
        meta = item.get("meta", {}).get("poisonscan", {})
        kinds = meta.get("kinds")
        if kinds and ctx.input_kind not in kinds:
            continue
        needs = meta.get("needs")
        if needs == "labels" and ctx.labels is None:
            continue
        if needs == "min_class_fraction" and ctx.min_class_fraction is None:
            continue
        if needs == "feature_range" and ctx.feature_range is None:
            continue
        columns = list(ctx.input_columns) if meta.get("each_input_column") else [None]
        for col in columns:
            kwargs = _fill(item["kwargs"], ctx, col)
            kind = item["type"]
            if kind == "expect_compound_columns_to_be_unique" and len(kwargs["column_list"]) == 1:
                # GX wants two or more columns for a compound key
                kind, kwargs = "expect_column_values_to_be_unique", {"column": kwargs["column_list"][0]}
            out.append(
                Expectation(
                    kind, kwargs, item.get("meta", {}), meta.get("scope", "row"),
                    tuple(meta.get("codes", ())), "default",
                )
            )
    return out


def _fill(value: Any, ctx: SuiteContext, input_col: str | None):
    main_input = input_col or (ctx.input_columns[0] if len(ctx.input_columns) == 1 else "+".join(ctx.input_columns))
    simple = {
        "{id}": ctx.id_column,
        "{label}": ctx.label_column,
        "{input}": main_input,
        "{labels}": list(ctx.labels) if ctx.labels is not None else None,
        "{min_class_fraction}": ctx.min_class_fraction,
        "{feature_min}": ctx.feature_range[0] if ctx.feature_range else None,
        "{feature_max}": ctx.feature_range[1] if ctx.feature_range else None,
        "{dimension}": None,  # filled once the data set's vector length is known
        "{observed_labels}": None,  # filled from the data
    }
    if isinstance(value, dict):
        return {k: _fill(v, ctx, input_col) for k, v in value.items()}
    if isinstance(value, list):
        out = []
        for v in value:
            if v == "{input_columns}":
                out.extend(ctx.input_columns)
            else:
                out.append(_fill(v, ctx, input_col))
        return out
    if isinstance(value, str):
        if value in simple:
            return simple[value]
        for key, repl in (("{id}", ctx.id_column), ("{label}", ctx.label_column), ("{input}", main_input)):
            value = value.replace(key, repl)
        return value
    return value


def load_user_suite(path: str, opener=open) -> list[Expectation]:
    """A Great Expectations 1.x suite file (JSON): ``{"name", "expectations": [...]}``.

    Column-map expectations (per-row) reject failing rows; the others are evaluated on a
    uniform sample of rows. An unknown expectation type is an error.
    """
    try:
        with opener(path) as f:
            raw = json.loads(f.read())
    except (OSError, ValueError) as exc:
        raise SuiteError(f"cannot read the expectation suite {path}: {exc}") from None
    items = raw.get("expectations") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise SuiteError(f"{path}: not an expectation suite (no 'expectations' list)")
    out = []
    for i, item in enumerate(items):
        kind = item.get("type") or item.get("expectation_type")
        if not isinstance(kind, str) or not isinstance(item.get("kwargs", {}), dict):
            raise SuiteError(f"{path}: expectation {i} has no type or no kwargs")
        scope = _scope_of(kind, path)
        out.append(Expectation(kind, dict(item.get("kwargs", {})), dict(item.get("meta", {})), scope, (), "user"))
    return out


def named_columns(e: Expectation) -> list[str]:
    """The columns an expectation names in its arguments (``column``, ``column_A`` and
    ``column_B``, ``column_list``)."""
    k = e.kwargs
    cols = [k[c] for c in ("column", "column_A", "column_B") if isinstance(k.get(c), str)]
    return cols + [c for c in (k.get("column_list") or []) if isinstance(c, str)]


def _scope_of(kind: str, path: str) -> str:
    # Great Expectations: about 2 s and 240 MB to import; only where it is used
    import great_expectations  # noqa: F401  (registers the expectation types)
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )
    from great_expectations.expectations.registry import get_expectation_impl

    try:
        impl = get_expectation_impl(kind)
    except Exception:
        raise SuiteError(f"{path}: unknown expectation type {kind!r}") from None
    if issubclass(impl, (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)):
        return "row"
    return "aggregate"


def codes_to_expectations(suite: Sequence[Expectation]) -> dict[str, str]:
    """Rejection code -> the expectation name that rows with it failed."""
    out = {}
    for e in suite:
        for code in e.codes:
            out.setdefault(code, e.name)
    return out
