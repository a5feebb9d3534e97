"""A recipe: a named set of training runs, how each is evaluated, and the analysis that compares them.

A recipe is one YAML file in ``recipes/configs/`` (shipped with the package)::

    description: one line
    source: where the question comes from (the reference material)
    base: {...}                        # a training config (see contrastlab.training.config) every run shares
    scales:                            # dotted overrides per scale, applied to every run
      quick: {steps: 40, data.options.n_items: 1500}
      full: {steps: 1500}
    runs:                              # run name -> dotted overrides of base
      A: {views.options.preset: A}
    sweeps:                            # optional: runs generated from a list of values
      - {prefix: tau, key: objective.options.temperature, values: [0.05, 0.1, 0.5], base_run: sphere}
    eval: {max_items: 2000}            # options of contrastlab.evaluation.pipeline.EvalOptions
    scale_eval: {quick: {max_items: 600}}
    analysis: invariance               # a name in contrastlab.recipes.analyses.ANALYSES

Only the files listed by :func:`recipe_names` can be run, and a recipe names objectives, data sets
and views only through their registries.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from contrastlab.errors import did_you_mean

SCALES = ("quick", "demo", "full")


@dataclass
class Recipe:
    name: str
    description: str
    source: str
    base: dict[str, Any]
    runs: dict[str, dict[str, Any]]
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    scale_eval: dict[str, dict[str, Any]] = field(default_factory=dict)
    analysis: str = "table"
    analysis_options: dict[str, Any] = field(default_factory=dict)

    def run_config(self, run: str, scale: str) -> dict[str, Any]:
        """The plain training config of ``run`` at ``scale`` (base, then the run's, then the scale's overrides)."""
        if run not in self.runs:
            raise ValueError(f"recipe {self.name!r} has no run {run!r}; runs: {', '.join(self.runs)}")
        raw = copy.deepcopy(self.base)
        for key, value in self.runs[run].items():
            set_dotted(raw, key, value)
        for key, value in self.scales.get(scale, {}).items():
            set_dotted(raw, key, value)
        return raw

    def eval_options(self, scale: str) -> dict[str, Any]:
        return {**self.eval, **self.scale_eval.get(scale, {})}


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``key = "a.b"``, creating mappings on the way."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def _configs():
    return resources.files("contrastlab.recipes") / "configs"


def recipe_names() -> list[str]:
    """The recipes shipped with the package, sorted."""
    return sorted(p.name.removesuffix(".yaml") for p in _configs().iterdir() if p.name.endswith(".yaml"))


_KEYS = {"description", "source", "base", "runs", "sweeps", "scales", "eval", "scale_eval", "analysis",
         "analysis_options"}


def load_recipe(name: str) -> Recipe:
    """Read the recipe ``name``.

    Raises:
        ValueError: an unknown recipe (with a did-you-mean) or a malformed recipe file.
    """
    names = recipe_names()
    if name not in names:
        raise ValueError(f"unknown recipe {name!r}{did_you_mean(name, names)}")
    raw = yaml.safe_load((_configs() / f"{name}.yaml").read_text())
    unknown = set(raw) - _KEYS
    if unknown:
        raise ValueError(f"recipe {name!r}: unknown keys {sorted(unknown)}")
    runs = dict(raw.get("runs") or {})
    for sweep in raw.get("sweeps") or []:
        base_run = runs.get(sweep.get("base_run"), {}) if sweep.get("base_run") else {}
        for value in sweep["values"]:
            runs[f"{sweep['prefix']}={value}"] = {**base_run, **sweep.get("overrides", {}), sweep["key"]: value}
    if not runs:
        raise ValueError(f"recipe {name!r} has no runs")
    for scale in raw.get("scales") or {}:
        if scale not in SCALES:
            raise ValueError(f"recipe {name!r}: unknown scale {scale!r}; scales: {', '.join(SCALES)}")
    return Recipe(
        name=name,
        description=raw.get("description", ""),
        source=raw.get("source", ""),
        base=raw["base"],
        runs={k: dict(v or {}) for k, v in runs.items()},
        scales={k: dict(v or {}) for k, v in (raw.get("scales") or {}).items()},
        eval=dict(raw.get("eval") or {}),
        scale_eval={k: dict(v or {}) for k, v in (raw.get("scale_eval") or {}).items()},
        analysis=raw.get("analysis", "table"),
        analysis_options=dict(raw.get("analysis_options") or {}),
    )
