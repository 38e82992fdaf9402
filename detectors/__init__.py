"""Poisoning detectors: pure numpy algorithms behind one accumulator contract.

Nothing in this package imports Apache Beam; :mod:`poisonscan.pipelines` wires these
classes into Beam combiners, and :mod:`poisonscan.pipelines.drivers.memory` runs them in
memory. Each detector declares what it reads and where it runs
(:class:`~.base.Detector`'s ``kinds``, ``default_kinds``, ``input``); the scan asks.
"""

from ._params import InvalidParameterError
from .base import (
    Detector,
    DetectorState,
    available_detectors,
    default_detectors,
    detector_class,
    make_detector,
    register,
    spent_false_alarms,
    split_false_alarms,
)
from .class_flip import ClassFlip
from .clustering import ActivationClustering
from .decision import (
    ClassVerdict,
    GroupTest,
    budget_cap,
    fit_two_groups,
    judge_scan,
    select_within_budget,
)
from .excess import ExcessTest
from .graph_clustering import GraphClustering
from .knn_label import KnnLabel
from .label_consistency import LabelConsistency
from .shared import SharedGroup
from .spectral import RelativeSpectral, SpectralSignature
from .spectre import Spectre
from .stats import ClassSample, MeanCov, Reservoir
from .tokens import PixelTrigger, TokenTrigger, ValueTrigger
from .untangling import Untangling

__all__ = [
    "ActivationClustering",
    "ClassFlip",
    "ClassSample",
    "ClassVerdict",
    "Detector",
    "DetectorState",
    "ExcessTest",
    "GraphClustering",
    "GroupTest",
    "judge_scan",
    "InvalidParameterError",
    "KnnLabel",
    "LabelConsistency",
    "MeanCov",
    "Reservoir",
    "SharedGroup",
    "Spectre",
    "RelativeSpectral",
    "SpectralSignature",
    "spent_false_alarms",
    "split_false_alarms",
    "PixelTrigger",
    "TokenTrigger",
    "Untangling",
    "ValueTrigger",
    "available_detectors",
    "default_detectors",
    "budget_cap",
    "detector_class",
    "fit_two_groups",
    "make_detector",
    "register",
    "select_within_budget",
]
