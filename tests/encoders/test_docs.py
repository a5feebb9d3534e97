import doctest
import importlib

import pytest

MODULES = ["_checks", "mlp", "convnet", "resnet", "conv1d", "text", "heads", "decoders", "registry", "model", "build"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"contrastlab.encoders.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
