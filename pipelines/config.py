"""Settings of one scan, shared by the Beam pipeline, the in-memory API and the CLI."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from poisonscan.detectors import (
    GroupTest,
    InvalidParameterError,
    default_detectors,
    detector_class,
    make_detector,
    spent_false_alarms,
    split_false_alarms,
)
from poisonscan.detectors.base import input_words


def usable_cores() -> int:
    """The cores this process may use: those it may run on, at most what a thread count
    in the environment allows (each worker process of a multi-process run is given its
    share that way, :class:`..drivers.processes.worker_threads`; a user's own setting is
    honoured too)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) >= 1:
            cores = min(cores, int(value))
    return max(cores, 1)


class ConfigError(ValueError):
    """A setting is invalid (a usage error: exit code 2 on the command line)."""


@dataclass(frozen=True)
class ScanConfig:
    """What to scan and how.

    Attributes
    ----------
    id_column, label_column : str
        Column names.
    features_column, image_column, text_column, tabular_columns
        The input, one kind (see :mod:`.io.kinds`): a list of numbers used as the
        representation, or raw images, text or table columns that a proxy network turns
        into one. None of them: detected from the schema.
    model : UserModel or None
        Take the representation from this model instead of training a proxy.
    proxy_folds, proxy_epochs, proxy_sample_size
        The proxy: cross-fitted folds, epochs (None: the kind's default), training rows
        per class.
    proxy_threads
        torch's threads while the proxy (or the user's model) trains and is applied. The
        same input and seed give the same lists at the same count, whatever the machine;
        at another count the networks differ in their last bits (default 1).
    detectors : tuple of str
        Registered detector names to run.
    detector_params : dict
        ``{detector name: {parameter: value}}``.
    group_params : dict
        Parameters of the per-class decision (:class:`~poisonscan.detectors.GroupTest`).
    false_alarm_rate : float or None
        The chance that a scan of clean data has *any* class judged poisoned, at most:
        split between the families of evidence the scan runs
        (:func:`~poisonscan.detectors.split_false_alarms`), each detector's level set
        from its family's share unless ``detector_params`` or ``group_params`` set it.
        None (the default): each family at its own level (0.05; the group detectors'
        twice that with their step-down), whose sum the summary states.
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
    coincidence_level : float
        Tables and texts: repeated rows are rejected (``duplicate_content``,
        ``conflicting_labels``) only where chance would give even one coinciding pair
        with a probability below this, given the columns' value frequencies (texts: among
        the texts of the same length in words; see :mod:`.scan.content`). Vectors and images
        identify their row: repeats are always rejected.
    batch_rows : int
        Rows per Arrow record batch.
    write_clean : bool
        Also write the clean split.
    labels, min_class_fraction, feature_range, expectations
        Data-quality expectations (see :mod:`poisonscan.expectations`): the declared label
        set, the smallest share a class may hold, the range feature values must lie in, a
        user suite file merged with the defaults.
    data_docs : bool
        Render Great Expectations Data Docs under ``expectations/`` (Beam scans).
    report : bool
        Render ``report.html``, the review page (Beam scans; ``poisonscan report DIR``
        renders it later from the outputs).
    """

    id_column: str = "id"
    label_column: str = "label"
    features_column: str | None = None
    image_column: str | None = None
    text_column: str | None = None
    tabular_columns: tuple[str, ...] | None = None
    model: Any = None
    proxy_folds: int = 0
    proxy_epochs: int | None = None
    proxy_sample_size: int = 5000
    proxy_threads: int = 1
    detectors: tuple[str, ...] | None = None
    detector_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    group_params: Mapping[str, Any] = field(default_factory=dict)
    false_alarm_rate: float | None = None
    expected_poison_rate: float | None = None
    seed: int = 0
    sample_size: int = 4096
    shared_sample_size: int = 1024
    min_class_rows: int = 20
    coincidence_level: float = 0.01
    batch_rows: int = 65536
    write_clean: bool = False
    labels: tuple | None = None
    min_class_fraction: float | None = None
    feature_range: tuple | None = None
    expectations: str | None = None
    data_docs: bool = True
    report: bool = True

    def __post_init__(self):
        if self.tabular_columns is not None:
            object.__setattr__(self, "tabular_columns", tuple(self.tabular_columns))
        if self.detectors is not None:
            object.__setattr__(self, "detectors", tuple(self.detectors))
            if not self.detectors:
                raise ConfigError("at least one detector is needed")
        if self.detectors is not None and len(set(self.detectors)) != len(self.detectors):
            raise ConfigError(f"a detector is listed twice: {', '.join(self.detectors)}")
        cols = [self.id_column, self.label_column, self.features_column, self.image_column, self.text_column]
        named = [c for c in cols if c is not None]
        # the id may be the image column: a column of image paths names each row
        distinct = named if self.id_column != self.image_column else named[1:]
        if len(set(distinct)) != len(distinct):
            raise ConfigError(f"the id, label and input columns must differ (the id may be the image column); got {named}")
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
            ("proxy_folds", self.proxy_folds, 0),
            ("proxy_sample_size", self.proxy_sample_size, 20),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}; got {value!r}")
        fa = self.false_alarm_rate
        if fa is not None and not (isinstance(fa, (int, float)) and not isinstance(fa, bool) and 0 < fa < 1):
            raise ConfigError(f"--false-alarm-rate must be in (0, 1); got {fa!r}")
        level = self.coincidence_level
        if not (isinstance(level, (int, float)) and not isinstance(level, bool) and 0 < level < 1):
            raise ConfigError(f"--coincidence-level must be in (0, 1); got {level!r}")
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
            if not self.labels:
                raise ConfigError("--labels gave no label")
        if self.min_class_fraction is not None and not 0 <= self.min_class_fraction < 1:
            raise ConfigError(f"--min-class-fraction must be in [0, 1); got {self.min_class_fraction!r}")
        if self.feature_range is not None:
            lo, hi = self.feature_range
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ConfigError(f"--feature-range needs two finite numbers LOW < HIGH; got {self.feature_range!r}")
            object.__setattr__(self, "feature_range", (float(lo), float(hi)))
        if self.proxy_folds == 1:
            raise ConfigError("proxy_folds must be 0 (no cross-fitting) or at least 2")
        if self.proxy_epochs is not None and (not isinstance(self.proxy_epochs, int) or self.proxy_epochs < 1):
            raise ConfigError(f"proxy_epochs must be a positive integer; got {self.proxy_epochs!r}")
        if isinstance(self.proxy_threads, bool) or not isinstance(self.proxy_threads, int) or self.proxy_threads < 1:
            raise ConfigError(f"proxy_threads must be a positive integer; got {self.proxy_threads!r}")
        unknown = set(self.detector_params) - set(self.detectors or default_detectors())
        if unknown:
            raise ConfigError(
                f"parameters given for detector(s) not selected: {', '.join(sorted(unknown))}"
            )
        try:
            for name in self.detectors or ():
                make_detector(name, self.detector_params.get(name))
            for name, params in self.detector_params.items():
                make_detector(name, params)
            self.build_group_test()._validate_params()
        except InvalidParameterError as exc:
            raise ConfigError(str(exc)) from None

    def detectors_for(self, kind: str) -> tuple[str, ...]:
        """The detectors to run on an input kind: those selected, or the defaults."""
        if self.detectors is not None:
            return self.detectors
        return default_detectors(kind)

    def build_detectors(self, kind: str = "features", probability_labels: tuple = ()) -> list:
        """Detectors for ``kind``, each with the parameters it asks for that kind
        (:meth:`~poisonscan.detectors.Detector.params_for`) under the user's own."""
        out = []
        for name in self.detectors_for(kind):
            cls = detector_class(name)
            if cls.kinds is not None and kind not in cls.kinds:
                raise ConfigError(f"the {name} detector needs {input_words(cls.kinds)}")
            params = {**cls.params_for(kind, probability_labels), **(self.detector_params.get(name) or {})}
            det = make_detector(name, params)
            if kind == "features" and det.input == "tokens":  # only raw inputs are made into tokens
                own = cls.params_for(kind, probability_labels)  # what the scan sets for the kind
                hint = ", ".join(f"{k}={v!r}" for k, v in own.items())
                raise ConfigError(f"the {name} detector reads tokens, which a features input does not have"
                                  + (f"; on features it reads the vectors ({hint})" if hint else ""))
            out.append(det)
        if self.false_alarm_rate is None:
            return out
        split = split_false_alarms(self.false_alarm_rate, out)
        for det in out:
            own = self.detector_params.get(det.name) or {}
            held = det.alarm_params(split[det.alarm_family], self.false_alarm_rate)
            det.set_params(**{k: v for k, v in held.items() if k not in own})
        return out

    def false_alarms(self, detectors) -> dict:
        """The scan's bound on false alarms with ``detectors`` (built ones): the rate asked
        for (None: each family at its own level), what each family of evidence spends
        with the detectors' parameters as set, and the detectors in it; ``bound``, their
        sum."""
        spent = spent_false_alarms(detectors, self.build_group_test(detectors).alpha)
        return {
            "rate": self.false_alarm_rate,
            "bound": sum(spent.values()),
            "families": {
                family: {"share": share, "detectors": [d.name for d in detectors if d.alarm_family == family]}
                for family, share in spent.items()
            },
        }

    def build_group_test(self, detectors=None) -> GroupTest:
        """The group test; with the scan's ``detectors`` (built), its ``alpha`` is half the
        group family's share of ``false_alarm_rate`` (its step-down can spend as much
        again), unless ``group_params`` sets it."""
        params = dict(self.group_params)
        if detectors is not None and self.false_alarm_rate is not None and "alpha" not in params:
            share = split_false_alarms(self.false_alarm_rate, detectors).get("groups")
            if share:
                params["alpha"] = share / 2
        return GroupTest().set_params(**params)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["detectors"] = None if self.detectors is None else list(self.detectors)
        out["model"] = None if self.model is None else asdict(self.model)
        out["detector_params"] = {k: dict(v) for k, v in self.detector_params.items()}
        out["group_params"] = dict(self.group_params)
        return out
