"""contrastlab.plugins: user code enters through an explicit --plugin file, never through a config."""

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from contrastlab import plugins
from contrastlab.errors import UserError

ENCODER_PLUGIN = '''
from torch import nn

from contrastlab.plugins import register_encoder


class TinyMLP(nn.Module):
    def __init__(self, input_shape, *, hidden: int = 32):
        super().__init__()
        size = 1
        for n in input_shape:
            size *= n
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(size, hidden), nn.ReLU())
        self.out_dim = hidden

    def forward(self, x):
        return self.net(x.float())


register_encoder("{name}", TinyMLP)
'''

TINY_CONFIG = {
    "data": {"name": "digits"},
    "views": {"name": "simclr", "options": {"size": 8}},
    "model": {"encoder": {"name": "tiny_mlp"}, "head": {"name": "mlp", "hidden": 32}, "dim": 16},
    "objective": {"name": "nt_xent", "options": {"temperature": 0.2}},
    "batch_size": 32,
    "steps": 5,
    "seed": 0,
    "log": {"progress": False, "tensorboard": False, "every": 1},
    "checkpoint": {"every": 0},
}


@pytest.fixture(autouse=True)
def _restore_registries():
    """Each test starts and ends with contrastlab's own registries and no plugin loaded."""
    kinds = list(plugins.KINDS)
    saved = {kind: dict(plugins._registry(kind)) for kind in kinds}
    loaded, owners = list(plugins._loaded), dict(plugins._owners)
    yield
    for kind in kinds:
        registry = plugins._registry(kind)
        registry.clear()
        registry.update(saved[kind])
    plugins._loaded[:] = loaded
    plugins._owners.clear()
    plugins._owners.update(owners)


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _encoder_plugin(folder: Path, name: str = "tiny_mlp", file: str = "tiny.py") -> Path:
    return _write(folder / file, ENCODER_PLUGIN.format(name=name))


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "contrastlab", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def _one_line_error(r) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


# --- registering ----------------------------------------------------------------------------------------------


def _lin(input_shape, *, width: int = 4):
    from torch import nn

    m = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], width))
    m.out_dim = width
    return m


def test_register_encoder_is_built_by_the_registry():
    from contrastlab.encoders.registry import build_encoder

    plugins.register_encoder("lin_for_test", _lin)
    assert build_encoder("lin_for_test", (6,), width=3).out_dim == 3


def test_register_each_kind_adds_to_its_registry():
    from contrastlab.data.registry import DATASETS
    from contrastlab.objectives._spec import ObjectiveSpec
    from contrastlab.objectives.registry import OBJECTIVES, get_objective
    from contrastlab.views.registry import VIEWS

    def data(*, split, seed, n=4): ...
    def views(dataset, **options): ...
    spec = ObjectiveSpec("my_loss", lambda **o: None, "pairwise", "f(z1, z2)", "me 2025")
    plugins.register_dataset("my_data", data)
    plugins.register_views("my_views", views)
    plugins.register_objective(spec)
    assert DATASETS["my_data"] is data and VIEWS["my_views"] is views and OBJECTIVES["my_loss"] is spec
    assert get_objective("my_loss") is spec


@pytest.mark.parametrize("register, name", [
    (lambda n: plugins.register_encoder(n, _lin), "mlp"),
    (lambda n: plugins.register_dataset(n, lambda *, split, seed: None), "digits"),
    (lambda n: plugins.register_views(n, lambda dataset: None), "simclr"),
])
def test_a_name_contrastlab_registered_is_refused(register, name):
    message = rf"^\w[\w ]* '{name}' is already registered by contrastlab; choose another name$"
    with pytest.raises(ValueError, match=message):
        register(name)


def test_an_objective_name_contrastlab_registered_is_refused():
    from contrastlab.objectives._spec import ObjectiveSpec
    from contrastlab.objectives.registry import OBJECTIVES, get_objective

    before = get_objective("nt_xent")
    with pytest.raises(ValueError, match="objective 'nt_xent' is already registered by contrastlab"):
        plugins.register_objective(ObjectiveSpec("nt_xent", lambda **o: None, "pairwise", "x", "y"))
    assert OBJECTIVES["nt_xent"] is before


def test_a_name_another_plugin_registered_is_refused_naming_that_plugin(tmp_path):
    first = plugins.load_plugin(_encoder_plugin(tmp_path))
    with pytest.raises(ValueError, match=f"encoder 'tiny_mlp' is already registered by plugin {first.path}"):
        plugins.register_encoder("tiny_mlp", _lin)


def test_a_name_registered_outside_a_plugin_file_is_refused_saying_so():
    plugins.register_encoder("lin_direct", _lin)
    with pytest.raises(ValueError, match="'lin_direct' is already registered by a register call outside any plugin"):
        plugins.register_encoder("lin_direct", _lin)


@pytest.mark.parametrize("call, message", [
    (lambda: plugins.register_encoder("x1", 3), "encoder 'x1': the factory must be callable, got int"),
    (lambda: plugins.register_encoder("x2", lambda: None), "encoder 'x2': the factory must accept"),
    (lambda: plugins.register_dataset("x3", lambda dataset: None), "data set 'x3': the factory must accept"),
    (lambda: plugins.register_views("x4", lambda: None), "views 'x4': the factory must accept"),
    (lambda: plugins.register_objective("nt_xent2"), "register_objective takes an ObjectiveSpec, got str"),
    (lambda: plugins.register_encoder("has space", _lin), "encoder name must be letters, digits"),
    (lambda: plugins.register_encoder(None, _lin), "encoder name must be letters, digits"),
])
def test_bad_registrations_are_one_line_value_errors(call, message):
    from contrastlab.encoders.registry import ENCODERS

    before = set(ENCODERS)
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value)
    assert set(ENCODERS) == before


def test_an_objective_of_an_unknown_kind_is_refused():
    from contrastlab.objectives._spec import ObjectiveSpec

    with pytest.raises(ValueError, match="objective 'odd': kind must be one of 'pairwise', .*got 'sideways'"):
        plugins.register_objective(ObjectiveSpec("odd", lambda **o: None, "sideways", "x", "y"))


# --- loading files ----------------------------------------------------------------------------------------------


def test_load_plugin_records_what_the_file_registered(tmp_path):
    from contrastlab.encoders.registry import ENCODERS

    path = _write(tmp_path / "two.py", '''
        from __future__ import annotations

        from dataclasses import dataclass

        from contrastlab.plugins import register_encoder, register_views


        @dataclass
        class Options:  # dataclasses look the module up in sys.modules
            width: int = 4


        def enc(input_shape, **options):
            raise NotImplementedError


        def views(dataset, **options):
            raise NotImplementedError


        register_encoder("enc_a", enc)
        register_views("views_a", views)
    ''')
    record = plugins.load_plugin(path)
    expected = {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "registers": {"encoders": ["enc_a"], "objectives": [], "data": [], "views": ["views_a"]}}
    assert record.as_dict() == expected
    assert plugins.loaded() == [expected]
    assert yaml.safe_load(yaml.safe_dump(plugins.loaded())) == [expected]
    assert "enc_a" in ENCODERS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.py"]  # no __pycache__ next to the user's file


def test_loading_the_same_file_twice_is_a_no_op(tmp_path, monkeypatch):
    path = _encoder_plugin(tmp_path)
    first = plugins.load_plugin(path)
    monkeypatch.chdir(tmp_path)
    again = plugins.load_plugin("tiny.py")  # the same file by another name: not run again (which would refuse tiny_mlp)
    assert again is first
    assert len(plugins.loaded()) == 1


def test_a_file_edited_after_loading_is_refused_in_the_same_process(tmp_path):
    path = _encoder_plugin(tmp_path)
    plugins.load_plugin(path)
    path.write_text(path.read_text() + "\n# edited\n")
    with pytest.raises(UserError, match=f"plugin {path.resolve()} changed since it was loaded in this process"):
        plugins.load_plugin(path)


def test_a_copy_of_a_loaded_plugin_is_refused_naming_both_files(tmp_path):
    first = _encoder_plugin(tmp_path)
    copy = _encoder_plugin(tmp_path, file="copy.py")
    plugins.load_plugin(first)
    with pytest.raises(UserError) as info:
        plugins.load_plugin(copy)
    line = copy.read_text().splitlines().index('register_encoder("tiny_mlp", TinyMLP)') + 1
    assert str(info.value) == (f"plugin {copy.resolve()} failed while loading (line {line}): ValueError: encoder "
                               f"'tiny_mlp' is already registered by plugin {first.resolve()}; choose another name")


#: name -> (file name or None for a folder, its text, what the one-line error says after naming the file)
BAD_FILES = {
    "missing": ("absent.py", None, "plugin file not found: {given}"),
    "folder": (None, None, "plugin {given} is a folder; give the .py file"),
    "not_py": ("net.txt", "x = 1\n", "plugin {given} is not a Python file; give a file ending in .py"),
    "syntax": ("broken.py", "import torch\n\ndef f(:\n    pass\n", "plugin {path}: syntax error at line 3: "),
    "raises": ("raises.py", "from contrastlab.plugins import register_encoder\nx = 1\n1 / 0\n",
               "plugin {path} failed while loading (line 3): ZeroDivisionError: division by zero"),
    "missing_import": ("imports.py", "import no_such_module_for_contrastlab\n",
                       "plugin {path} failed while loading (line 1): ModuleNotFoundError: No module named "
                       "'no_such_module_for_contrastlab'"),
    "exits": ("exits.py", "import sys\nsys.exit(3)\n", "plugin {path} failed while loading (line 2): SystemExit: 3"),
    "nothing": ("empty.py", "import math\n", "plugin {path} registers nothing; call contrastlab.plugins.register_"),
}


def _bad_file(tmp_path: Path, case: str) -> tuple[Path, str]:
    name, text, message = BAD_FILES[case]
    given = tmp_path / "plugin_folder" if name is None else tmp_path / name
    if name is None:
        given.mkdir()
    elif text is not None:
        given.write_text(text)
    return given, message.format(given=given, path=given.resolve())


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_plugin_file_is_one_line_naming_it(tmp_path, case):
    given, message = _bad_file(tmp_path, case)
    with pytest.raises(UserError) as info:
        plugins.load_plugin(given)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text
    assert str(given) in text or str(given.resolve()) in text
    assert plugins.loaded() == []
    assert not (tmp_path / "__pycache__").exists()


def test_a_failing_plugin_leaves_nothing_registered(tmp_path):
    from contrastlab.encoders.registry import ENCODERS

    path = _write(tmp_path / "half.py", ENCODER_PLUGIN.format(name="half_mlp") + "\nraise RuntimeError('oops')\n")
    line = len(path.read_text().splitlines())
    with pytest.raises(UserError, match=rf"failed while loading \(line {line}\): RuntimeError: oops"):
        plugins.load_plugin(path)
    assert "half_mlp" not in ENCODERS and plugins.loaded() == []
    assert not any(name.startswith("contrastlab_plugin_half") for name in sys.modules)
    plugins.load_plugin(_encoder_plugin(tmp_path, name="half_mlp"))  # the name is free again once fixed
    assert "half_mlp" in ENCODERS


# --- require ----------------------------------------------------------------------------------------------------


def _record(path="/abs/my_net.py", sha="0" * 64, **registers):
    return {"path": path, "sha256": sha, "registers": {"encoders": [], "objectives": [], "data": [], "views": [],
                                                        **registers}}


def test_require_with_no_plugins_passes():
    plugins.require([], what="run runs/x")
    plugins.require(None, what="run runs/x")


def test_require_names_the_first_missing_plugin_and_the_flag_that_loads_it():
    records = [_record("/abs/a.py", encoders=["my_net"], views=["my_views"]), _record("/abs/b.py", encoders=["b"])]
    with pytest.raises(UserError) as info:
        plugins.require(records, what="run runs/x")
    assert str(info.value) == ("run runs/x uses plugin /abs/a.py (it registers encoder 'my_net', views 'my_views'), "
                               "which is not loaded; pass --plugin /abs/a.py")


def test_require_passes_silently_when_the_same_file_is_loaded(tmp_path, capsys):
    plugins.load_plugin(_encoder_plugin(tmp_path))
    plugins.require(plugins.loaded(), what="run runs/x")
    assert capsys.readouterr().err == ""


def test_require_warns_when_the_plugin_changed(tmp_path, capsys):
    path = _encoder_plugin(tmp_path)
    record = plugins.load_plugin(path).as_dict()
    plugins.require([{**record, "sha256": "f" * 64}], what="run runs/x")
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"contrastlab: warning: run runs/x uses plugin {record['path']} with sha256 ffffffffffff")
    assert f"encoder 'tiny_mlp' now come from plugin {record['path']}, which differs" in err


@pytest.mark.parametrize("records, message", [
    ("my_net.py", "'plugins' must be a list of {path, sha256, registers} records as contrastlab writes them, got str"),
    (["my_net.py"], "a config never loads code; pass --plugin my_net.py on the command line instead"),
    ([{"path": "/a.py", "registers": {"encoder": ["x"]}}], "'plugins' must be a list of"),
    ([{"path": "/a.py", "registers": {"encoders": "x"}}], "'plugins' must be a list of"),
])
def test_require_refuses_records_it_did_not_write(records, message):
    with pytest.raises(UserError) as info:
        plugins.require(records, what="config c.yaml")
    assert str(info.value).startswith("config c.yaml: ") and message in str(info.value)


# --- the command line ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["missing", "folder", "not_py", "syntax", "raises", "nothing"])
def test_train_with_a_bad_plugin_is_one_line_exit_2_and_writes_nothing(tmp_path, case):
    given, message = _bad_file(tmp_path, case)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG))
    before = sorted(p.name for p in tmp_path.iterdir())
    line = _one_line_error(_cli("train", config, "--plugin", given, "--out", tmp_path / "run", cwd=tmp_path))
    assert line.startswith(f"contrastlab: error: {message}")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run, no __pycache__, no runs/


@pytest.mark.parametrize("command", ["eval", "resume", "report", "recipe"])
def test_every_command_that_builds_a_model_takes_plugin(tmp_path, command):
    r = _cli(command, "--help")
    assert r.returncode == 0 and "--plugin FILE.py" in r.stdout
    line = _one_line_error(_cli(command, tmp_path, "--plugin", tmp_path / "absent.py"))
    assert line == f"contrastlab: error: plugin file not found: {tmp_path / 'absent.py'}"


def test_a_config_listing_plugins_never_loads_them(tmp_path):
    plugin = _write(tmp_path / "side_effect.py", f'''
        open({str(tmp_path / "ran")!r}, "w").close()
        from contrastlab.plugins import register_encoder
        register_encoder("tiny_mlp", lambda input_shape: None)
    ''')
    record = _record(str(plugin), encoders=["tiny_mlp"])
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TINY_CONFIG, "plugins": [record]}))
    line = _one_line_error(_cli("train", config, "--out", tmp_path / "run"))
    assert line == (f"contrastlab: error: config {config} uses plugin {plugin} (it registers encoder 'tiny_mlp'), "
                    f"which is not loaded; pass --plugin {plugin}")
    config.write_text(yaml.safe_dump({**TINY_CONFIG, "plugins": [str(plugin)]}))
    line = _one_line_error(_cli("train", config, "--out", tmp_path / "run"))
    assert f"a config never loads code; pass --plugin {plugin}" in line
    assert not (tmp_path / "ran").exists() and not (tmp_path / "run").exists()


def test_eval_of_a_run_trained_with_a_plugin_asks_for_it(tmp_path):
    """The run's recorded plugins are checked before its config (whose encoder only the plugin knows)."""
    plugin = tmp_path / "tiny.py"
    run = tmp_path / "run"
    run.mkdir()
    record = _record(str(plugin), encoders=["tiny_mlp"])
    (run / "config.yaml").write_text(yaml.safe_dump({**TINY_CONFIG, "plugins": [record]}))
    for command in ("eval", "resume"):
        line = _one_line_error(_cli(command, run))
        assert line == (f"contrastlab: error: run {run} uses plugin {plugin} (it registers encoder 'tiny_mlp'), "
                        f"which is not loaded; pass --plugin {plugin}")
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


def test_a_plugin_encoder_name_passes_the_config_check(tmp_path):
    from contrastlab.training.config import config_from_dict

    with pytest.raises(ValueError, match="unknown encoder 'tiny_mlp'"):
        config_from_dict(TINY_CONFIG)
    plugins.load_plugin(_encoder_plugin(tmp_path))
    assert config_from_dict(TINY_CONFIG).model.encoder.name == "tiny_mlp"


@pytest.mark.slow
def test_train_eval_resume_with_a_plugin_encoder(tmp_path):
    plugin = _encoder_plugin(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG))
    run = tmp_path / "run"

    r = _cli("train", config, "--plugin", plugin, "--out", run, "--set", "log.progress=false")
    assert r.returncode == 0, r.stderr
    saved = yaml.safe_load((run / "config.yaml").read_text())
    expected = _record(str(plugin.resolve()), hashlib.sha256(plugin.read_bytes()).hexdigest(), encoders=["tiny_mlp"])
    assert saved.get("plugins") == [expected], \
        "config.yaml does not record the plugin (the lead's side: TrainConfig.plugins = contrastlab.plugins.loaded())"

    r = _cli("eval", run, "--plugin", plugin, "--no-figures", "--no-baselines", "--max-items", "200",
             "--invariance-items", "50", "--threads", "1")
    assert r.returncode == 0, r.stderr
    import json

    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["encoders"]

    line = _one_line_error(_cli("eval", run))
    assert line == (f"contrastlab: error: run {run} uses plugin {plugin.resolve()} (it registers encoder 'tiny_mlp'), "
                    f"which is not loaded; pass --plugin {plugin.resolve()}")

    r = _cli("resume", run, "--plugin", plugin)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tiny.py", "tiny.yaml"]  # no __pycache__
