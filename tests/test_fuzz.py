"""Property-based tests: generated inputs never crash a scan, lose a row or depend on order
(the generator and the promises checked: ``tests/fuzzing.py``)."""

import pytest
from hypothesis import HealthCheck, given, settings

from .fuzzing import check, tables


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(tables())
def test_generated_inputs_never_crash_lose_a_row_or_depend_on_order(case):
    table, extra = case
    check(table, extra)
