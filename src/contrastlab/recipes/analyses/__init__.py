"""Each recipe's comparison of its runs: a plain registry from an analysis name to a function.

An analysis takes ``(recipe, outcomes, out_dir)`` — the recipe, its trained and evaluated runs
(:class:`~contrastlab.recipes.runner.RunOutcome`), and the recipe folder for figures — and returns a
:class:`~contrastlab.recipes.summary.Summary`: tables, figures, and checks of the source's predictions.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from contrastlab.recipes.summary import Summary

#: analysis name -> "module:function" inside this package (a fixed list; nothing is imported by user input).
ANALYSES: dict[str, str] = {
    "table": "table:summarize",
    "invariance": "invariance:summarize",
    "align_uniform": "align_uniform:summarize",
    "normalisation": "normalisation:summarize",
    "cmc_views": "cmc_views:summarize",
    "view_distance": "view_distance:summarize",
    "audio_visual": "audio_visual:summarize",
    "coordination": "coordination:summarize",
    "supervised": "supervised:summarize",
    "positives_only": "positives_only:summarize",
    "mnist1d_ssl": "mnist1d_ssl:summarize",
    "factorcl": "factorcl:summarize",
    "fission": "fission:summarize",
    "coordination_kernels": "coordination_kernels:summarize",
}


def run_analysis(recipe, outcomes: dict, out_dir: Path) -> Summary:
    if recipe.analysis not in ANALYSES:
        raise ValueError(f"recipe {recipe.name!r} names unknown analysis {recipe.analysis!r}; known: {', '.join(ANALYSES)}")
    module, function = ANALYSES[recipe.analysis].split(":")
    fn = getattr(import_module(f"contrastlab.recipes.analyses.{module}"), function)
    return fn(recipe, outcomes, Path(out_dir), **recipe.analysis_options)
