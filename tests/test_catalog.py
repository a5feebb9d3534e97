"""contrastlab.catalog: ``contrastlab list data|views|encoders|objectives`` reads every option from the code."""

import inspect
import json
import os
import subprocess
import sys
import textwrap

import pytest

from contrastlab import catalog as cat
from contrastlab._docstrings import parse_args_section
from contrastlab.data.registry import DATASETS, dataset_options
from contrastlab.encoders.registry import ENCODERS
from contrastlab.objectives.registry import OBJECTIVES
from contrastlab.views.registry import VIEWS, view_options

PLUGIN = '''
from torch import nn

from contrastlab.plugins import register_encoder


class CatalogNet(nn.Module):
    """A plugin encoder for the catalogue test.

    Args:
        input_shape: passed by contrastlab.
        hidden (int): the hidden width.
    """

    def __init__(self, input_shape, *, hidden: int = 24):
        super().__init__()
        self.out_dim = hidden


register_encoder("catalog_net", CatalogNet)
'''

# every command line run of this file, started at once (each pays the import of torch)
COMMANDS = {
    "data": ("list", "data"),
    "nt_xent": ("list", "objectives", "nt_xent"),
    "json": ("list", "views", "--json"),
    "plugin": ("list", "encoders", "--plugin", "{plugin}"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    plugin = tmp_path_factory.mktemp("plugin") / "catalog_net.py"
    plugin.write_text(PLUGIN, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
    started = {key: subprocess.Popen([sys.executable, "-m", "contrastlab", *(a.format(plugin=plugin) for a in args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for key, args in COMMANDS.items()}
    done = {}
    for key, proc in started.items():
        out, err = proc.communicate(timeout=120)
        done[key] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    done["plugin_path"] = str(plugin.resolve())
    return done


def _names(entry):
    return [o.name for o in entry.options]


def _params(factory, skip=()):
    return [p.name for p in inspect.signature(factory).parameters.values()
            if p.name not in skip and p.kind is not inspect.Parameter.VAR_POSITIONAL]


# -- the options are the factories' own -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_data_options_are_what_the_registry_accepts(name):
    entry = cat.entry("data", name)
    assert _names(entry) == list(dataset_options(name)) == _params(DATASETS[name], ("split", "seed"))


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_view_options_are_what_the_registry_accepts(name):
    assert [o.name for o in cat.entry("views", name).options if not o.variadic] == list(view_options(name))


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoder_options_leave_out_the_input_shape(name):
    assert _names(cat.entry("encoders", name)) == _params(ENCODERS[name])[1:]


@pytest.mark.parametrize("name", sorted(set(OBJECTIVES) - {"byol"}))
def test_objective_options_are_the_factory_signature(name):
    names = [o.name.lstrip("*") for o in cat.entry("objectives", name).options]
    assert names == _params(OBJECTIVES[name].factory)


def test_a_module_without_its_own_init_has_no_options():
    assert cat.entry("objectives", "byol").options == ()  # not nn.Module's (*args, **kwargs)


def test_defaults_required_and_types_come_from_the_signature():
    folder = cat.entry("data", "image_folder")
    signature = inspect.signature(DATASETS["image_folder"]).parameters
    assert folder.option("root").required
    for option in folder.options[1:]:
        assert not option.required and option.default == signature[option.name].default
    temperature = cat.entry("objectives", "nt_xent").option("temperature")
    assert temperature.default == inspect.signature(OBJECTIVES["nt_xent"].factory).parameters["temperature"].default
    assert "float" in temperature.type


def test_descriptions_come_from_the_args_section():
    assert cat.entry("data", "image_folder").option("root").description  # the class/function's own Args
    simclr = cat.entry("views", "simclr")
    assert simclr.option("flip_p").description  # forwarded to SimCLRAugment: described by its docstring
    assert simclr.option("contrast").description == simclr.option("brightness").description  # "a, b: text"
    cmc = cat.entry("objectives", "cmc_core_view")  # a small function: its returned class documents the options
    assert cmc.option("**pairwise_options").variadic and cmc.option("**pairwise_options").description


def test_parse_args_section_is_robust():
    doc = textwrap.dedent('''\
        Do it.

        Args:
            a (int): first
                line, ``markup`` and :class:`~pkg.mod.Thing`.
            b:
                on the next line.

            c, d: shared.
            **options: more.

        Returns:
            x: not an option.
        ''')
    assert parse_args_section(doc) == {"a": "first line, markup and Thing.", "b": "on the next line.",
                                           "c": "shared.", "d": "shared.", "options": "more."}
    assert parse_args_section("No sections here.") == {}


def test_options_training_fills_in_are_real_options():
    for kind, supplied in cat._SUPPLIED.items():
        for option in supplied:
            assert any(option in _names(e) for e in cat.catalog(kind)), (kind, option)


def test_unknown_kind_or_name_is_a_value_error_with_a_hint():
    with pytest.raises(ValueError, match="did you mean 'objectives'"):
        cat.catalog("objective")
    with pytest.raises(ValueError, match="did you mean 'nt_xent'"):
        cat.entry("objectives", "nt_xnet")


def test_json_holds_every_default():
    entry = cat.entry("data", "shapes").as_dict()
    json.dumps(entry)  # tuples, None: all JSON-safe
    assert {o["name"]: o.get("default") for o in entry["options"]}["shapes"][0] == "circle"


def test_module_examples_run():
    import doctest

    assert doctest.testmod(cat).failed == 0


def test_objectives_command_is_list_objectives(capsys):
    from contrastlab.cli import main

    assert main(["objectives"]) == 0
    alone = capsys.readouterr().out
    assert main(["list", "objectives"]) == 0
    assert capsys.readouterr().out == alone and "nt_xent" in alone


# -- the command line ---------------------------------------------------------------------------------


def test_list_data_names_every_data_set_within_100_columns(runs):
    r = runs["data"]
    assert r.returncode == 0, r.stderr
    for name in DATASETS:
        assert f"\n{name} " in r.stdout
    assert "root (required)" in r.stdout
    assert max(map(len, r.stdout.splitlines())) <= 100


def test_list_one_objective_in_full(runs):
    r = runs["nt_xent"]
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("nt_xent (objective)")
    assert "temperature: float | Tensor = 0.5" in r.stdout and "arXiv" in r.stdout


def test_list_json_parses(runs):
    r = runs["json"]
    assert r.returncode == 0, r.stderr
    entries = json.loads(r.stdout)
    assert [e["name"] for e in entries] == sorted(VIEWS)
    simclr = next(e for e in entries if e["name"] == "simclr")
    assert {"name", "type", "default", "required", "description"} <= set(simclr["options"][0])


@pytest.mark.parametrize("args, hint", [(["list", "encoder"], "did you mean 'encoders'?"),
                                        (["list", "data", "imagefolder"], "did you mean 'image_folder'?"),
                                        (["objectives", "nt_xnet", "--json"], "did you mean 'nt_xent'?")])
def test_unknown_kind_or_name_is_one_line_exit_2(capsys, args, hint):
    from contrastlab.cli import main

    assert main(args) == 2  # what `python -m contrastlab` exits with; anything unexpected would raise here
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and hint in err


def test_a_plugin_entry_is_listed_and_marked(runs):
    r = runs["plugin"]
    assert r.returncode == 0, r.stderr
    block = r.stdout[r.stdout.index("\ncatalog_net "):]
    assert f"plugin: {runs['plugin_path']}" in block and "hidden=24" in block
    assert "plugin:" not in r.stdout[:r.stdout.index("\ncatalog_net ")]  # contrastlab's own are not marked
