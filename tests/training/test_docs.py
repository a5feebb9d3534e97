import doctest
import importlib

import pytest

MODULES = ["_schema", "config", "optim", "checkpoint", "distributed", "sampler", "step", "logging", "run", "monitors"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"contrastlab.training.{name}")
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0
