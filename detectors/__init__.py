"""Poisoning detectors: pure numpy algorithms behind one accumulator contract.

Nothing in this package imports Apache Beam; :mod:`poisonscan.pipelines` wires these
classes into Beam combiners, and :mod:`poisonscan.api` runs them in memory.
"""

from ._params import InvalidParameterError
from .base import (
    Detector,
    DetectorState,
    available_detectors,
    detector_class,
    make_detector,
    register,
)
from .clustering import ActivationClustering
from .decision import ClassVerdict, ExcessTest, GroupTest, budget_cap, fit_two_groups, judge_scan, select_within_budget
from .label_consistency import KnnLabel, LabelConsistency
from .spectral import SpectralSignature
from .spectre import Spectre
from .tokens import TokenTrigger, ValueTrigger
from .stats import ClassSample, MeanCov, Reservoir

__all__ = [
    "ActivationClustering",
    "ClassSample",
    "ClassVerdict",
    "Detector",
    "DetectorState",
    "ExcessTest",
    "GroupTest",
    "judge_scan",
    "InvalidParameterError",
    "KnnLabel",
    "LabelConsistency",
    "MeanCov",
    "Reservoir",
    "Spectre",
    "SpectralSignature",
    "TokenTrigger",
    "ValueTrigger",
    "available_detectors",
    "budget_cap",
    "detector_class",
    "fit_two_groups",
    "make_detector",
    "register",
    "select_within_budget",
]
