"""Settings of one scan, shared by the Beam pipeline, the in-memory API and the CLI."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from poisonscan.detectors import GroupTest, InvalidParameterError, make_detector


class ConfigError(ValueError):
    """A setting is invalid (a usage error: exit code 2 on the command line)."""


DEFAULT_DETECTORS = ("spectral", "spectre", "activation_clustering", "label_consistency", "knn_label")


@dataclass(frozen=True)
class ScanConfig:
    """What to scan and how.

    Attributes
    ----------
    id_column, label_column, features_column : str
        Column names. ``features_column`` holds a list (or fixed-size list) of numbers per
        row: the representation the detectors see.
    detectors : tuple of str
        Registered detector names to run.
    detector_params : dict
        ``{detector name: {parameter: value}}``.
    group_params : dict
        Parameters of the per-class decision (:class:`~poisonscan.detectors.GroupTest`).
    expected_poison_rate : float or None
        Expected share of poisoned rows in the whole data set. A budget: at most
        ``floor(1.5 * rate * rows)`` rows are quarantined. Never a quota.
    seed : int
        Seed of every random choice (samples); same input and seed give the same lists.
    sample_size : int
        Rows per class kept in the uniform sample the decision is calibrated on.
    shared_sample_size : int
        Rows per class (a uniform subsample) given to the detectors that fit across
        classes (clustering, label consistency).
    min_class_rows : int
        Classes with fewer valid rows cannot be judged; their rows are rejected.
    batch_rows : int
        Rows per Arrow record batch.
    write_clean : bool
        Also write the clean split.
    """

    id_column: str = "id"
    label_column: str = "label"
    features_column: str | None = None
    detectors: tuple[str, ...] = DEFAULT_DETECTORS
    detector_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    group_params: Mapping[str, Any] = field(default_factory=dict)
    expected_poison_rate: float | None = None
    seed: int = 0
    sample_size: int = 4096
    shared_sample_size: int = 1024
    min_class_rows: int = 20
    batch_rows: int = 65536
    write_clean: bool = False

    def __post_init__(self):
        object.__setattr__(self, "detectors", tuple(self.detectors))
        if not self.detectors:
            raise ConfigError("at least one detector is needed")
        if len(set(self.detectors)) != len(self.detectors):
            raise ConfigError(f"a detector is listed twice: {', '.join(self.detectors)}")
        cols = [self.id_column, self.label_column, self.features_column]
        named = [c for c in cols if c is not None]
        if len(set(named)) != len(named):
            raise ConfigError(f"the id, label and features columns must differ; got {named}")
        rate = self.expected_poison_rate
        if rate is not None and not (
            isinstance(rate, (int, float)) and math.isfinite(rate) and 0 < rate < 1
        ):
            raise ConfigError(f"--expected-poison-rate must be in (0, 1); got {rate!r}")
        for name, value, low in (
            ("sample_size", self.sample_size, 50),
            ("shared_sample_size", self.shared_sample_size, 20),
            ("min_class_rows", self.min_class_rows, 3),
            ("batch_rows", self.batch_rows, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}; got {value!r}")
        unknown = set(self.detector_params) - set(self.detectors)
        if unknown:
            raise ConfigError(
                f"parameters given for detector(s) not selected: {', '.join(sorted(unknown))}"
            )
        try:
            self.build_detectors()
            self.build_group_test()._validate_params()
        except InvalidParameterError as exc:
            raise ConfigError(str(exc)) from None

    def build_detectors(self) -> list:
        return [make_detector(name, self.detector_params.get(name)) for name in self.detectors]

    def build_group_test(self) -> GroupTest:
        return GroupTest().set_params(**dict(self.group_params))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["detectors"] = list(self.detectors)
        out["detector_params"] = {k: dict(v) for k, v in self.detector_params.items()}
        out["group_params"] = dict(self.group_params)
        return out
