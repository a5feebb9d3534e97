import pytest

from contrastlab.recipes.spec import load_recipe, recipe_names, set_dotted
from contrastlab.training import config_from_dict


def test_every_recipe_builds_a_valid_config_for_every_run_and_scale():
    assert "homework-invariance" in recipe_names()
    for name in recipe_names():
        recipe = load_recipe(name)
        for run in recipe.runs:
            for scale in ("quick", "demo", "full"):
                config_from_dict(recipe.run_config(run, scale))


def test_overrides_apply_base_then_run_then_scale():
    recipe = load_recipe("homework-invariance")
    quick = recipe.run_config("B", "quick")
    assert quick["views"]["options"]["preset"] == "B"
    assert quick["steps"] == recipe.scales["quick"]["steps"]
    assert recipe.run_config("B", "full")["batch_size"] == recipe.base["batch_size"]
    ae = recipe.run_config("autoencoder", "quick")
    assert ae["views"] == {"name": "identity", "options": {}} and ae["objective"]["name"] == "autoencoder"


def test_unknown_recipe_and_run_name_the_value():
    with pytest.raises(ValueError, match="homework-invariance"):
        load_recipe("homework-invariant")
    with pytest.raises(ValueError, match="'Z'"):
        load_recipe("homework-invariance").run_config("Z", "quick")


def test_set_dotted_creates_mappings():
    raw = {"a": {"b": 1}}
    set_dotted(raw, "a.c.d", [1, 2])
    set_dotted(raw, "e", {"f": 2})
    assert raw == {"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {"f": 2}}
