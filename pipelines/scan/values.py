"""Values as JSON and people read them: numpy scalars as Python values, labels as text."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds; anything else as it is."""
    return value.item() if isinstance(value, np.generic) else value


def fmt_label(label: Any) -> str:
    """A label as a reader expects it: 7 or 'cat'."""
    label = plain(label)
    return repr(label) if isinstance(label, str) else str(label)


def finite(value: Any) -> float | None:
    """A number as a float, or None where it is missing or not finite (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
