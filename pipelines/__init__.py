"""Beam wiring, sources, validation, outputs and the command line.

Modules that import Beam: :mod:`.beam_scan` (the pipeline) and :mod:`.sources` (file
matching through Beam's filesystems, imported lazily). The rest is plain Python so the
in-memory path (:mod:`.memory`) runs without Beam.
"""
