"""Great Expectations data-quality suites and the code that runs them.

:func:`plan` turns a scan's settings into the suite to evaluate (the defaults in
``suites/default.json`` plus the user's ``--expectations`` file) and into what row
validation needs; :mod:`.results` evaluates and reports; :mod:`.gx` runs GX itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .suite import (
    Expectation,
    SuiteContext,
    SuiteError,
    codes_to_expectations,
    default_suite,
    load_user_suite,
    named_columns,
)

__all__ = ["ExpectationPlan", "Expectation", "SuiteError", "named_columns", "plan"]


@dataclass
class ExpectationPlan:
    suite: list
    names: list
    declared_labels: frozenset | None = None
    feature_range: tuple | None = None
    validator: Any = None  # the user's row expectations, run by GX per batch
    needs_sample: bool = False  # the user's aggregate expectations need a row sample
    code_names: dict = field(default_factory=dict)

    def names_of(self, codes: str | None) -> str | None:
        """The expectation names a rejection code list stands for."""
        if not codes:
            return None
        names = [self.code_names.get(c, c) for c in codes.split(",")]
        return "; ".join(dict.fromkeys(names))


_BOOLEAN = {"true": 1, "false": 0}


def plan(cfg, kinds, opener=open) -> ExpectationPlan:
    """The expectations of a scan (SuiteError / ValueError on unusable settings).
    ``opener`` opens the user's suite file for reading (the scan passes one that reads
    any filesystem Beam reaches)."""
    labels = None
    if cfg.labels is not None:

        want_int = pa.types.is_integer(kinds.label_type)
        try:
            # a column of booleans holds the labels 0 and 1: true and false name them
            labels = tuple(int(_BOOLEAN.get(str(v).lower(), v)) if want_int else str(v) for v in cfg.labels)
        except ValueError:
            raise SuiteError(f"the label column holds integers; --labels gave {list(cfg.labels)}") from None
    ctx = SuiteContext(
        cfg.id_column,
        cfg.label_column,
        kinds.input.kind,
        tuple(kinds.input.columns),
        labels,
        cfg.min_class_fraction,
        cfg.feature_range,
    )
    suite = default_suite(ctx)
    names = ["poisonscan_default"]
    validator = None
    needs_sample = False
    if cfg.expectations:
        user = load_user_suite(cfg.expectations, opener)
        suite += user
        names.append(cfg.expectations)
        rows = [e for e in user if e.scope == "row"]
        if rows:
            # Great Expectations: about 2 s and 240 MB to import; only where it is used
            from .gx import BatchValidator

            validator = BatchValidator(rows)
        needs_sample = any(e.scope == "aggregate" for e in user)
    code_names = codes_to_expectations(suite)
    code_names["small_class"] = "poisonscan: class too small to judge"
    code_names["not_in_reference"] = "poisonscan: class not in the reference scan"
    code_names["confirmed_poison"] = "poisonscan: confirmed as poison in an earlier review"
    return ExpectationPlan(
        suite,
        names,
        frozenset(labels) if labels is not None else None,
        tuple(cfg.feature_range) if cfg.feature_range else None,
        validator,
        needs_sample,
        code_names,
    )
