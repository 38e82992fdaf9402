"""Which columns hold the input, and of what kind (features, image, text or table)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

KINDS = ("features", "image", "text", "tabular")


class InputError(ValueError):
    """The input columns do not fit the requested kind (a usage error)."""


@dataclass(frozen=True)
class InputSpec:
    kind: str
    columns: tuple[str, ...]

    @property
    def column(self) -> str:
        return self.columns[0]


def is_binary_type(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def is_string_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def is_time_or_decimal(t: pa.DataType) -> bool:
    """Dates, times, timestamps, durations and decimals: a table's numbers by another
    name (the tabular encoder reads them as seconds, or as floats)."""
    return (pa.types.is_date(t) or pa.types.is_time(t) or pa.types.is_timestamp(t) or pa.types.is_duration(t)
            or pa.types.is_decimal(t))


def _is_image_struct(t: pa.DataType) -> bool:
    return pa.types.is_struct(t) and "bytes" in [t.field(i).name for i in range(t.num_fields)]


def _is_numeric_list(t: pa.DataType) -> bool:
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        return False
    v = t.value_type
    return pa.types.is_integer(v) or pa.types.is_floating(v) or _is_numeric_list(v)


def resolve_input(schema: pa.Schema, cfg, text_format: bool = False) -> InputSpec:
    """The input kind and columns, from the flags or, without any, from the schema.

    Detection: a binary or ``{bytes, path}`` column is an image; else the only list of
    numbers is the features; else a lone string column beside id and label is text;
    else every column but id and label is tabular. In a CSV or JSONL file
    (``text_format``) a binary column is text with a byte that is not UTF-8, never an
    image.
    """
    keys = {cfg.id_column, cfg.label_column}
    given = [
        (kind, cols)
        for kind, cols in (
            ("features", (cfg.features_column,) if cfg.features_column else ()),
            ("image", (cfg.image_column,) if cfg.image_column else ()),
            ("text", (cfg.text_column,) if cfg.text_column else ()),
            ("tabular", tuple(cfg.tabular_columns or ())),
        )
        if cols
    ]
    if len(given) > 1:
        raise InputError(
            "give one input kind: --features-column, --image-column, --text-column or "
            f"--tabular-columns (got {', '.join(k for k, _ in given)})"
        )
    names = [n for n in schema.names if n not in keys]
    if given:
        kind, cols = given[0]
        return InputSpec(kind, tuple(cols))
    if text_format:
        schema = pa.schema([f.with_type(pa.string()) if is_binary_type(f.type) else f for f in schema])
    images = [n for n in names if is_binary_type(schema.field(n).type) or _is_image_struct(schema.field(n).type)]
    if len(images) == 1:
        return InputSpec("image", (images[0],))
    lists = [n for n in names if _is_numeric_list(schema.field(n).type)]
    if len(lists) == 1:
        return InputSpec("features", (lists[0],))
    if len(lists) > 1 or len(images) > 1:
        raise InputError(
            f"several candidate input columns ({', '.join(images + lists)}); choose one with "
            "--features-column or --image-column"
        )
    strings = [n for n in names if is_string_type(schema.field(n).type)]
    if len(names) == 1 and len(strings) == 1:
        return InputSpec("text", (strings[0],))
    if not names:
        raise InputError("no column besides the id and the label to scan")
    return InputSpec("tabular", tuple(names))
