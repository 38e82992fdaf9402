"""The examples in the detectors' docstrings run as written."""

import doctest

import pytest

from poisonscan.detectors import spectral, untangling


@pytest.mark.parametrize("module", [spectral, untangling], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
