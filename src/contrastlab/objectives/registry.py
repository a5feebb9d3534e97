"""The plain registry of objectives: a name -> :class:`ObjectiveSpec`.

Each objective module declares ``SPECS``; this module collects them from a fixed list of modules, so
a config can only ever name an objective that is listed here (no arbitrary imports).
"""

from __future__ import annotations

from importlib import import_module

from contrastlab.errors import check_flags, did_you_mean
from contrastlab.objectives._spec import ObjectiveSpec

_MODULES: tuple[str, ...] = (
    "info_nce",
    "nce",
    "triplet",
    "hinge",
    "align_uniform",
    "combined",
    "multiview",
    "supcon",
    "cca",
    "reconstruction",
    "methods",
    "fission",
    "factorcl",
)


def _collect() -> dict[str, ObjectiveSpec]:
    specs: dict[str, ObjectiveSpec] = {}
    for module in _MODULES:
        for spec in import_module(f"contrastlab.objectives.{module}").SPECS:
            if spec.name in specs:
                raise RuntimeError(f"objective {spec.name!r} registered twice")
            specs[spec.name] = spec
    return specs


OBJECTIVES: dict[str, ObjectiveSpec] = _collect()


def get_objective(name: str) -> ObjectiveSpec:
    """The spec registered under ``name``; ``ValueError`` with a did-you-mean otherwise."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}{did_you_mean(name, OBJECTIVES)}") from None


def build_objective(name: str, **options):
    """Build the objective module ``name`` with its keyword options."""
    spec = get_objective(name)
    check_flags(spec.factory, options, f"objective {name!r}")
    try:
        return spec.factory(**options)
    except TypeError as err:  # unknown option names
        raise ValueError(f"bad options for objective {name!r}: {err}") from None
