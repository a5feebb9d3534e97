import pytest
import yaml

from _train_fixtures import ensure_objectives
from contrastlab.training._schema import set_dotted
from contrastlab.training.config import TrainConfig, config_from_dict, config_to_dict, load_config

ensure_objectives()

BASE = """
data: {name: digits}
views: {name: simclr}
objective: {name: nt_xent, options: {temperature: 0.5}}
model:
  encoder: {name: convnet, options: {widths: [8, 16]}}
  head: {name: mlp, hidden: 64}
optim: {name: sgd, lr: 1e-3}
batch_size: 64
steps: 100
"""


def write(tmp_path, text=BASE):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_load_typed_config_and_defaults(tmp_path):
    cfg = load_config(write(tmp_path))
    assert isinstance(cfg, TrainConfig)
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)  # "1e-3" is a number, not a string
    assert cfg.model.head.hidden == 64 and cfg.model.dim == 128 and cfg.precision == "fp32"
    assert cfg.objective.options == {"temperature": 0.5}
    assert cfg.optim.betas == (0.9, 0.999)


def test_precision_and_speed_options(tmp_path):
    cfg = load_config(write(tmp_path))
    assert (cfg.precision, cfg.tf32, cfg.model.compile, cfg.model.channels_last, cfg.data.pin_memory) == \
        ("fp32", False, False, False, None)
    cfg = load_config(write(tmp_path), ["precision=fp16", "tf32=true", "model.compile=true", "model.channels_last=true",
                                        "data.pin_memory=false"])
    assert (cfg.precision, cfg.tf32, cfg.model.compile, cfg.model.channels_last, cfg.data.pin_memory) == \
        ("fp16", True, True, True, False)
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(config_to_dict(cfg)))) == cfg


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(write(tmp_path))
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(config_to_dict(cfg))))
    assert again == cfg


def test_overrides_with_dotted_keys_and_yaml_values(tmp_path):
    cfg = load_config(
        write(tmp_path),
        ["optim.lr=0.05", "model.encoder.options.widths=[4, 4]", "objective.options.temperature=2e-1", "epochs=3", "steps=null"],
    )
    assert cfg.optim.lr == 0.05
    assert cfg.model.encoder.options["widths"] == [4, 4]
    assert cfg.objective.options["temperature"] == 0.2
    assert cfg.epochs == 3 and cfg.steps is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=0.1", "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
        ("batch_sise=3", "unknown config key 'batch_sise'; did you mean 'batch_size'?"),
        ("optim.lr=fast", "optim.lr: expected a number, got 'fast' (str)"),
        ("batch_size=2.5", "batch_size: expected an integer, got 2.5 (float)"),
        ("model.normalize=1", "model.normalize: expected true or false or one of 'auto', 'sphere', 'ball', 'none', got 1"),
        ("model.normalize=Sphere", "model.normalize: expected true or false or one of 'auto', 'sphere', 'ball', 'none', "
                                   "got 'Sphere'"),
        ("precision=fp8", "precision: expected one of 'fp32', 'bf16', 'fp16', got 'fp8'"),
        ("tf32=fast", "tf32: expected true or false, got 'fast' (str)"),
        ("model.compile=inductor", "model.compile: expected true or false, got 'inductor' (str)"),
        ("model.channels_last=1", "model.channels_last: expected true or false, got 1 (int)"),
        ("optim.lr=0", "optim.lr must be > 0, got 0.0"),
        ("optim.lr=-1", "optim.lr must be > 0, got -1.0"),
        ("batch_size=0", "batch_size must be > 0, got 0"),
        ("objective.options.temperature=0", "objective.options.temperature must be a number > 0, got 0"),
        ("objective.options.temperature=-0.1", "objective.options.temperature must be a number > 0, got -0.1"),
        ("epochs=2", "give exactly one of epochs and steps"),
        ("objective.name=nt_xnet", "objective.name: unknown objective 'nt_xnet'; did you mean 'nt_xent'?"),
        ("model.encoder.name=resnet", "model.encoder.name: unknown encoder 'resnet'; did you mean 'resnet18'?"),
        ("model.encoders.audio.name=conv2d", "model.encoders.audio.name: unknown encoder 'conv2d'"),
        ("optim.name=adam", "optim.name: expected one of 'adamw', 'sgd', 'lars', got 'adam'; did you mean 'adamw'?"),
        ("optim.betas=[0.9]", "optim.betas: expected a list of 2 values"),
        ("schedule.min_lr_ratio=2", "schedule.min_lr_ratio must be in [0, 1], got 2.0"),
        ("optim.lr=.inf", "optim.lr: expected a finite number, got inf"),
        ("seed=-1", "seed must be in [0, 2**63), got -1"),
        ("seed=9223372036854775808", "seed must be in [0, 2**63), got 9223372036854775808"),
        ("threads=0", "threads must be in [1, 1024], got 0"),
        ("threads=4096", "threads must be in [1, 1024], got 4096"),
    ],
)
def test_errors_name_the_key_and_the_allowed(tmp_path, override, message):
    with pytest.raises(ValueError) as info:
        load_config(write(tmp_path), [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value, kept", [("true", True), ("false", False), ("sphere", "sphere"), ("ball", "ball"),
                                         ("none", "none")])
def test_normalize_is_a_bool_or_an_output_space(tmp_path, value, kept):
    cfg = load_config(write(tmp_path), [f"model.normalize={value}"])
    assert cfg.model.normalize == kept and type(cfg.model.normalize) is type(kept)
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(config_to_dict(cfg)))) == cfg


def test_check_refuses_a_bad_normalize_set_in_code(tmp_path):
    from contrastlab.training.config import check_config

    cfg = load_config(write(tmp_path))
    cfg.model.normalize = "cube"
    with pytest.raises(ValueError, match="model.normalize must be true, false, 'auto', 'sphere', 'ball' or 'none', got 'cube'"):
        check_config(cfg)


def test_unknown_key_lists_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError, match=r"allowed: name, lr, weight_decay, momentum"):
        load_config(write(tmp_path), ["optim.zzz=1"])


def test_missing_required_and_malformed(tmp_path):
    with pytest.raises(ValueError, match=r"objective.name: required key is missing \(a string\)"):
        load_config(write(tmp_path, "data: {name: digits}\nviews: {name: simclr}\nsteps: 3\n"))
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_config(write(tmp_path, "data: [unclosed\n"))
    with pytest.raises(ValueError, match="must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match=f"config {tmp_path} is a folder, not a YAML file"):
        load_config(tmp_path)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"data: {name: caf\xe9}\n")
    with pytest.raises(ValueError, match=f"config file {latin} is not UTF-8 text .* at byte 16"):
        load_config(latin)


def test_set_dotted_rejects_bad_assignments():
    with pytest.raises(ValueError, match="key=value"):
        set_dotted({}, "optim.lr")
    with pytest.raises(ValueError, match="optim is not a mapping"):
        set_dotted({"optim": 3}, "optim.lr=1")
    raw = {}
    set_dotted(raw, "a.b.c=[1, 2]")
    assert raw == {"a": {"b": {"c": [1, 2]}}}
