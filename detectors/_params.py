"""Declarative parameter validation for detectors and decision rules.

Modelled on scikit-learn's ``_parameter_constraints``: each estimator declares, per
parameter, what values it accepts; validation happens at fit time and every failure has
one error type and one message form::

    The 'min_separation' parameter of SpectralSignature must be a float in (0, inf).
    Got -1 instead.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Mapping


class InvalidParameterError(ValueError):
    """A detector or decision parameter has an invalid value or an unknown name."""


@dataclass(frozen=True)
class Interval:
    """A numeric interval; ``kind`` is ``int`` or ``float``."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"  # "both", "left", "right", "neither"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int:
            if not isinstance(value, Integral):
                return False
        elif not isinstance(value, Real):
            return False
        if isinstance(value, float) and math.isnan(value):
            return False
        low_ok = (
            self.low is None
            or value > self.low
            or (value == self.low and self.closed in ("both", "left"))
        )
        high_ok = (
            self.high is None
            or value < self.high
            or (value == self.high and self.closed in ("both", "right"))
        )
        return low_ok and high_ok

    def describe(self) -> str:
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        low = "-inf" if self.low is None else _fmt(self.low)
        high = "inf" if self.high is None else _fmt(self.high)
        name = "an int" if self.kind is int else "a float"
        return f"{name} in {left}{low}, {high}{right}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple

    def accepts(self, value: Any) -> bool:
        return value in self.values

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class OfType:
    """An instance of a type (``None`` allowed only when listed separately)."""

    kind: type
    label: str

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) and self.kind is not bool:
            return False
        return isinstance(value, self.kind)

    def describe(self) -> str:
        return self.label


NONE = Options((None,))
BOOL = OfType(bool, "a bool")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def validate_params(owner: str, params: Mapping[str, Any], constraints: Mapping[str, list]) -> None:
    """Check every parameter against its constraints.

    Raises
    ------
    InvalidParameterError
        For the first parameter whose value no constraint accepts.
    """
    for name, value in params.items():
        options = constraints[name]
        if any(c.accepts(value) for c in options):
            continue
        wanted = " or ".join(c.describe() for c in options)
        raise InvalidParameterError(
            f"The '{name}' parameter of {owner} must be {wanted}. Got {value!r} instead."
        )


class ParamsMixin:
    """``get_params``/``set_params`` over the keyword-only ``__init__`` signature.

    Unknown names are an error (never silently ignored).
    """

    _parameter_constraints: dict[str, list] = {}

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind is p.KEYWORD_ONLY
        ]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any):
        known = self._param_names()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise InvalidParameterError(
                f"Unknown parameter(s) {', '.join(map(repr, unknown))} for "
                f"{type(self).__name__}; known parameters: {', '.join(known)}."
            )
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def _validate_params(self) -> None:
        validate_params(type(self).__name__, self.get_params(), self._parameter_constraints)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
