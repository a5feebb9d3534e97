"""Every Example: in contrastlab.views's docstrings runs and prints what it says."""

import doctest
import importlib
import pkgutil

import pytest

import contrastlab.views as package

MODULES = sorted(m.name for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")
                 if not m.name.endswith(".benchmark"))


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
