"""The held-out part of the benchmark matrix (see ``benchmarks/matrix.py``).

Built and run to report, never to choose: ``python benchmarks/heldout/run.py``.
"""
