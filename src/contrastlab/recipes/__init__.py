"""Recipes: the source material's experiments as named sets of runs, with their comparison and report."""

from contrastlab.recipes.spec import Recipe, load_recipe, recipe_names

__all__ = ["Recipe", "load_recipe", "recipe_names"]
