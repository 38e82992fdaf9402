"""poisonscan: find poisoned rows in training data before anyone trains on it.

The in-memory API (:func:`scan`, :func:`scan_table`) runs the same detectors and
decisions as the Beam pipeline behind ``poisonscan scan``. Attributes are imported on
first use so that ``import poisonscan`` (and the command line's ``--help``) stays fast.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("poisonscan")
except _metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

_LAZY = {
    "scan": ("poisonscan.pipelines.drivers.memory", "scan"),
    "scan_table": ("poisonscan.pipelines.drivers.memory", "scan_table"),
    "ScanResult": ("poisonscan.pipelines.drivers.memory", "ScanResult"),
    "ScanConfig": ("poisonscan.pipelines.config", "ScanConfig"),
    "ScanTables": ("poisonscan.pipelines.drivers.transform", "ScanTables"),
    "ScanDicts": ("poisonscan.pipelines.drivers.transform", "ScanDicts"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'poisonscan' has no attribute {name!r}")
