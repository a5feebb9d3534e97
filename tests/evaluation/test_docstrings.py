"""Every Example: in the evaluation, plots and report packages runs and prints what it says."""

import doctest
import inspect
import importlib
import pkgutil

import pytest

import contrastlab.evaluation
import contrastlab.plots
import contrastlab.report

MODULES = sorted(
    f"{package.__name__}.{info.name}"
    for package in (contrastlab.evaluation, contrastlab.plots, contrastlab.report)
    for info in pkgutil.iter_modules(package.__path__)
)


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} example(s) failed in {name}"


def test_exported_functions_document_args_returns_and_an_example():
    missing = []
    for package in (contrastlab.evaluation, contrastlab.plots, contrastlab.report):
        for attr in package.__all__:
            obj = getattr(package, attr)
            doc = obj.__doc__ or ""
            sections = ["Returns:" if not inspect.isclass(obj) else "Attributes:", "Example:"]
            if inspect.signature(obj).parameters:
                sections.append("Args:")
            missing += [f"{package.__name__}.{attr}: {s}" for s in sections if s not in doc]
    assert not missing


def test_every_public_callable_has_a_docstring():
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in dir(module):
            obj = getattr(module, attr)
            if attr.startswith("_") or getattr(obj, "__module__", None) != name or not callable(obj):
                continue
            assert (obj.__doc__ or "").strip(), f"{name}.{attr} has no docstring"
