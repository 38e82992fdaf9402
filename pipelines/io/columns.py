"""The columns of a scan's files: which hold the id, the label and the input, and
whether their types agree across files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pyarrow as pa

from poisonscan.pipelines.config import ConfigError
from poisonscan.pipelines.io.kinds import (
    InputError,
    InputSpec,
    is_time_or_decimal,
    resolve_input,
)
from poisonscan.pipelines.io.sources import SourceError, SourceFile


@dataclass(frozen=True)
class ColumnKinds:
    """What the scan needs to know about the columns, agreed across files."""

    id_type: pa.DataType
    label_type: pa.DataType
    input: "InputSpec"
    features_kind: str  # features input: "list", or "text" (numbers written in a string)
    fixed_dim: int | None

    @property
    def features_column(self) -> str | None:
        return self.input.column if self.input.kind == "features" else None

    @property
    def input_columns(self) -> tuple[str, ...]:
        return self.input.columns


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _key_kind(t: pa.DataType) -> str | None:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        # floats: whole numbers (pandas writes integers with a gap as floats); booleans: 0, 1
        return "integer"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "string"  # binary: text with a byte that is not UTF-8 (rows.undecodable)
    if pa.types.is_null(t):
        return "null"
    return None


def check_columns(files: Sequence[SourceFile], schemas: Sequence[pa.Schema], cfg) -> ColumnKinds:
    """Check that every file has the key and input columns with usable, agreeing types."""
    nonempty = [(src, schema) for src, schema in zip(files, schemas) if len(schema)]
    for src, schema in nonempty:
        _check_names(src, schema)
    first_src, first_schema = nonempty[0] if nonempty else (files[0], schemas[0])
    try:
        spec = resolve_input(first_schema, cfg, text_format=first_src.format != "parquet")
    except InputError as exc:
        raise SourceError(f"{first_src.path}: {exc}") from None
    if getattr(cfg, "model", None) is not None and spec.kind != "image":
        raise ConfigError(
            f"--model applies to image inputs; this input is {spec.kind} "
            + ("(its vectors are the representation, used as given)" if spec.kind == "features"
               else "(poisonscan trains its own proxy for it)")
        )
    kinds: dict[str, str] = {}
    fixed_dims: set = set()
    features_kind = None
    for src, schema in nonempty:
        _check_keys(src, schema, spec, cfg, kinds)
        for col in spec.columns:
            kind = _check_input(src, schema, spec, col, fixed_dims)
            if kind is not None and (features_kind or kind) != kind:
                # the outputs keep each row's own columns: one column cannot hold both
                raise SourceError(
                    f"{src.path}: the features column {col!r} holds {_FEATURES_AS[kind]} here but "
                    f"{_FEATURES_AS[features_kind]} in other files; write every file the same way"
                )
            features_kind = kind or features_kind
    type_of = {"integer": pa.int64(), "string": pa.string()}
    return ColumnKinds(
        id_type=type_of.get(kinds.get("id"), pa.int64()),
        label_type=type_of.get(kinds.get("label"), pa.int64()),
        input=spec,
        features_kind=features_kind or "list",
        fixed_dim=fixed_dims.pop() if len(fixed_dims) == 1 else None,
    )


def _check_names(src: SourceFile, schema: pa.Schema) -> None:
    """Every column has a name of its own: a name given twice leaves it unknown which
    column the scan, the checks and the outputs mean."""
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(schema.names):
        seen.setdefault(name, []).append(i + 1)
    twice = {name: at for name, at in seen.items() if len(at) > 1}
    if twice:
        what = "; ".join(f"{name!r} names columns {', '.join(map(str, at))}" for name, at in twice.items())
        raise SourceError(f"{src.path}: a column name is given more than once ({what}); give each column its own name")


def _check_keys(src: SourceFile, schema: pa.Schema, spec: InputSpec, cfg, kinds: dict) -> None:
    """Every column is there; the id and label hold integers or strings, the same in
    every file (``kinds`` collects what the files so far hold)."""
    roles = [("id", cfg.id_column), ("label", cfg.label_column)]
    roles += [(f"{spec.kind} input", c) for c in spec.columns]
    for role, col in roles:
        if col not in schema.names:
            raise SourceError(
                f"{src.path}: no {role} column {col!r} (columns: {', '.join(schema.names)})"
                + ("; name the column that identifies each row with --id-column NAME" if role == "id" else "")
                + (" (a column of image paths may be the id too)" if role == "id" and spec.kind == "image" else "")
            )
    for role, col in (("id", cfg.id_column), ("label", cfg.label_column)):
        t = schema.field(col).type
        kind = _key_kind(t)
        if kind is None:
            raise SourceError(
                f"{src.path}: the {role} column {col!r} must hold integers or strings; it holds {t}"
            )
        if kind == "null":
            continue
        if kinds.setdefault(role, kind) != kind:
            raise SourceError(
                f"{src.path}: the {role} column {col!r} holds {kind}s here but "
                f"{kinds[role]}s in other files"
            )


def _check_input(src: SourceFile, schema: pa.Schema, spec: InputSpec, col: str, fixed_dims: set) -> str | None:
    """The input column's type can hold its kind; for features, whether they are written
    as lists or as text (None for other kinds, or a column of nulls)."""
    t = schema.field(col).type
    if pa.types.is_dictionary(t):
        t = t.value_type
    problem = _input_type_problem(spec.kind, t)
    if problem:
        raise SourceError(f"{src.path}: the {spec.kind} column {col!r} {problem}; it holds {t}")
    if spec.kind != "features" or pa.types.is_null(t):
        return None
    if pa.types.is_fixed_size_list(t):
        fixed_dims.add(t.list_size)
    return "list" if _is_list(t) else "text"


_FEATURES_AS = {"list": "lists of numbers", "text": "numbers written as text"}


def _input_type_problem(kind: str, t: pa.DataType) -> str | None:
    """Why a column of type ``t`` cannot hold ``kind`` input (None when it can)."""
    if pa.types.is_null(t):
        return None
    string = pa.types.is_string(t) or pa.types.is_large_string(t)
    if kind == "features":
        # binary: numbers written as text in a CSV or JSONL column with a byte that is not
        # UTF-8; a value that does not decode is that row's problem (bad_number)
        binary = pa.types.is_binary(t) or pa.types.is_large_binary(t)
        if (_is_list(t) and (_is_number(t.value_type) or pa.types.is_null(t.value_type))) or string or binary:
            return None
        return "must be a list of numbers (or numbers in a string, as in CSV)"
    if kind == "image":
        ok = (
            pa.types.is_binary(t)
            or pa.types.is_large_binary(t)
            or (pa.types.is_struct(t) and any(t.field(i).name == "bytes" for i in range(t.num_fields)))
            or _is_list(t)
            or string  # paths of image files
        )
        return None if ok else (
            "must hold image bytes, a {bytes, path} struct, paths of image files or an array of numbers"
        )
    if kind == "text":
        # binary: a CSV or JSONL column with a byte that is not UTF-8; each value is
        # decoded, and one that does not decode is that row's problem (bad_text)
        ok = string or pa.types.is_binary(t) or pa.types.is_large_binary(t)
        return None if ok else "must hold strings"
    if kind == "tabular":
        ok = (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or string
              or is_time_or_decimal(t))
        return None if ok else "must hold numbers, booleans, dates, times or strings"
    return f"is of unknown input kind {kind!r}"
