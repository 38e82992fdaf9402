"""The scan: files in and out, representations, the scan core, its drivers, the report
and the command line, in layers (docs/architecture.md, "Layers").

Only :mod:`.drivers` imports Beam (and :mod:`.io`, for Beam's filesystems on non-local
paths, imported lazily), so the in-memory path (:mod:`.drivers.memory`) and the scan
core (:mod:`.scan`) run without it.
"""
