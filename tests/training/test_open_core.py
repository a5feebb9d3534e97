"""The open core: methods with model parts through the one loop, your own encoders, the one normalisation switch."""

import pytest
import torch
import yaml
from torch import nn

from _train_fixtures import Clusters, FailingViews, NoisyViews, config, ensure_objectives
from contrastlab.errors import UserError
from contrastlab.training import train
from contrastlab.training.build import build_components
from contrastlab.training.checkpoint import CheckpointManager, read_checkpoint

ensure_objectives()

METHODS = {  # objective -> extra config (the fixtures' MLP has no BatchNorm in its linear head)
    "moco": {"model.queue_size": 64},
    "moco_v3": {},
    "byol": {},
    "simsiam": {},
    "siglip": {},
    "barlow_twins": {},
    "vicreg": {},
    "dcl": {},
    "dclw": {},
}


def run(tmp_path, name="run", cfg=None, views=None, **kw):
    return train(cfg, tmp_path / name, dataset=Clusters(), views=views or NoisyViews(), **kw)


def method_config(objective, **kw):
    return config(**{"objective.name": objective, "objective.options": "{}", **METHODS[objective], **kw})


@pytest.mark.parametrize("objective", sorted(METHODS))
def test_every_method_trains_through_the_one_loop_and_gets_its_model_parts(tmp_path, objective):
    cfg = method_config(objective, steps=10)
    comps = build_components(cfg, dataset=Clusters(), views=NoisyViews())
    needs = comps.spec.needs
    assert (comps.model.predictor is not None) == ("predictions" in needs)
    assert (comps.model.targets is not None) == ("targets" in needs)
    assert (comps.model.queue is not None) == ("negatives" in needs)
    assert (comps.model.logit_bias is not None) == ("logit_bias" in needs)
    result = run(tmp_path, cfg=cfg)
    assert result.step == 10 and result.loss == result.loss
    space = comps.model.output_space
    assert space == ("none" if objective in ("barlow_twins", "vicreg") else "sphere")


@pytest.mark.parametrize("objective", ["moco", "byol", "siglip"])
def test_resume_after_a_crash_keeps_targets_queue_and_learned_scale_exactly(tmp_path, objective):
    cfg = method_config(objective, steps=24, **{"checkpoint.every": 8})
    run(tmp_path, "straight", cfg=cfg)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, "crashed", cfg=cfg, views=FailingViews(at_call=19))
    run(tmp_path, "crashed", cfg=cfg, resume=True)
    a, b = (read_checkpoint(CheckpointManager(tmp_path / n / "checkpoints").path("last")).model for n in ("straight", "crashed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    parts = {"moco": ("targets.", "queue.keys"), "byol": ("targets.", "predictor."), "siglip": ("logit_bias", "temperature.")}
    for part in parts[objective]:
        assert any(k.startswith(part) for k in a), (objective, part)


def test_byol_targets_move_slower_than_the_online_tower(tmp_path):
    cfg = method_config("byol", steps=12, **{"model.momentum": 0.9, "model.momentum_schedule": "constant"})
    comps = build_components(cfg, dataset=Clusters(), views=NoisyViews())
    start = {k: v.clone() for k, v in comps.model.state_dict().items()}
    run(tmp_path, cfg=cfg)
    end = read_checkpoint(CheckpointManager(tmp_path / "run" / "checkpoints").path("last")).model
    for name in start:
        if name.startswith("targets.towers.") and name.endswith("weight"):
            online = name.removeprefix("targets.")
            assert 0 < (end[name] - start[name]).norm() < (end[online] - start[online]).norm(), name


def test_the_recorded_temperature_is_the_learned_one_and_evaluation_reads_it(tmp_path):
    cfg = config(steps=10, **{"objective.name": "nt_xent", "objective.options": "{}", "model.learnable_temperature": 0.3,
                              "optim.lr": 0.05})
    run(tmp_path, cfg=cfg)
    ckpt = read_checkpoint(CheckpointManager(tmp_path / "run" / "checkpoints").path("last"))
    learned = float(torch.exp(-ckpt.model["temperature.log_scale"]))
    assert ckpt.meta["temperature"] == pytest.approx(learned, rel=1e-6) and learned != pytest.approx(0.3, abs=1e-4)
    fixed = config(steps=4)
    run(tmp_path, "fixed", cfg=fixed)
    meta = read_checkpoint(CheckpointManager(tmp_path / "fixed" / "checkpoints").path("last")).meta
    assert meta["temperature"] == pytest.approx(0.2)


class MyNet(nn.Module):
    """A user's backbone without out_dim: contrastlab finds the width by one forward pass."""

    def __init__(self, width=12):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, width), nn.ReLU())

    def forward(self, x):
        return self.net(x)


def test_train_with_your_own_encoder_records_it_and_resume_asks_for_it(tmp_path):
    cfg = config(steps=10, **{"checkpoint.every": 5})
    torch.manual_seed(0)
    result = run(tmp_path, cfg=cfg, encoders={"x": MyNet()})
    assert result.step == 10
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["given"] == {"x": f"{MyNet.__module__}.MyNet"}
    weights = read_checkpoint(CheckpointManager(tmp_path / "run" / "checkpoints").path("last")).model
    assert weights["towers.x.backbone.module.net.0.weight"].shape == (12, 8)
    assert weights["towers.x.head.proj.weight"].shape == (8, 12)  # the head sized by the width found by a dry forward
    with pytest.raises(UserError, match=r"your own encoder for 'x' \(.*MyNet\); give it again"):
        run(tmp_path, cfg=cfg, resume=True)
    cfg20 = config(steps=20, **{"checkpoint.every": 5})
    assert run(tmp_path, cfg=cfg20, resume=True, encoders={"x": MyNet()}).step == 20


class WrongShape(nn.Module):
    def forward(self, x):
        return x[:, :, None]


@pytest.mark.parametrize(
    "encoders, message",
    [
        ({"x": WrongShape()}, r"encoders\['x'\] \(.*WrongShape\) must map a batch of 4 items to \(4, F\) floating features, got shape \(4, 8, 1\)"),
        ({"x": nn.Linear(3, 2)}, r"encoders\['x'\] \(torch.nn.modules.linear.Linear\) failed on a batch of shape \(4, 8\)"),
        ({"image": MyNet()}, r"encoders\['image'\]: no view or modality is called 'image'"),
        ({"x": "resnet"}, r"encoders\['x'\] must be a torch.nn.Module, got str"),
    ],
)
def test_a_bad_encoder_is_one_line_naming_the_key_and_nothing_is_written(tmp_path, encoders, message):
    with pytest.raises(ValueError, match=message) as info:
        run(tmp_path, cfg=config(steps=2), encoders=encoders)
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"objective.name": "byol", "objective.options": "{}", "model.predictor.name": "none"},
         "model.predictor.name: objective 'byol' reads predictions, but the predictor is 'none'"),
        ({"model.predictor.name": "mlp"}, "model.predictor.name: objective 'info_nce' reads no predictions"),
        ({"model.momentum": 0.9}, "model.momentum: objective 'info_nce' reads no momentum targets; remove model.momentum"),
        ({"objective.name": "byol", "objective.options": "{}", "model.momentum": 1.0}, "model.momentum must be in [0, 1), got 1.0"),
        ({"objective.name": "byol", "objective.options": "{}", "model.momentum": -0.1}, "model.momentum must be in [0, 1), got -0.1"),
        ({"model.logit_bias": -10}, "model.logit_bias: objective 'info_nce' reads no logit bias"),
        ({"model.normalize": "none", "objective.options": "{normalize: true}"},
         "objective.options.normalize is true (the objective would normalise onto the sphere), but model.normalize is 'none'"),
        ({"objective.name": "barlow_twins", "objective.options": "{}", "model.learnable_temperature": 0.1},
         "model.learnable_temperature: objective 'barlow_twins' takes no temperature"),
    ],
)
def test_model_parts_that_do_not_fit_the_objective_are_one_line_naming_the_key(tmp_path, overrides, message):
    with pytest.raises(ValueError) as info:
        run(tmp_path, cfg=config(steps=2, **overrides))
    assert message in str(info.value) and "\n" not in str(info.value) and not (tmp_path / "run").exists()


def test_the_objective_inherits_the_model_output_space(tmp_path):
    for space, normalizes in (("sphere", True), ("none", False), ("ball", False)):
        comps = build_components(config(**{"model.normalize": space, "objective.options": "{}"}), dataset=Clusters(), views=NoisyViews())
        assert comps.model.output_space == space and comps.objective.normalize is normalizes
    comps = build_components(config(**{"objective.options": "{normalize: false}"}), dataset=Clusters(), views=NoisyViews())
    assert comps.model.output_space == "sphere"  # already unit: the objective's own switch is consistent either way


def test_a_checkpointed_method_reloads_and_encodes_with_the_online_towers(tmp_path):
    cfg = method_config("byol", steps=6)
    run(tmp_path, cfg=cfg)
    comps = build_components(cfg, dataset=Clusters(), views=NoisyViews())
    ckpt = read_checkpoint(CheckpointManager(tmp_path / "run" / "checkpoints").path("last"))
    comps.model.load_state_dict(ckpt.model)
    comps.model.eval()
    x = {"view1": Clusters().x[:5]}
    online = comps.model(x)["view1"]
    target = comps.model.outputs(x, modalities={"view1": "x"}).targets["view1"]
    assert online.shape == target.shape == (5, 8) and not torch.equal(online, target)


@pytest.mark.parametrize("objective", ["byol", "nt_xent"])
def test_multi_crop_views_train_through_one_shared_tower(tmp_path, objective):
    from contrastlab.training.config import config_from_dict

    raw = {"data": {"name": "shapes", "options": {"n_items": 64, "image_size": 16}},
           "views": {"name": "multicrop", "options": {"n_local": 2}},
           "model": {"encoder": {"name": "convnet", "options": {"widths": [8, 16], "pool": "avg"}}, "dim": 8},
           "objective": {"name": objective}, "batch_size": 16, "steps": 3, "threads": 1,
           "log": {"every": 1, "progress": False, "tensorboard": False}}
    comps = build_components(config_from_dict(raw))
    assert list(comps.model.towers) == ["image"] and comps.loss_module().global_views == ("global1", "global2")
    assert train(config_from_dict(raw), tmp_path / "run").step == 3
    raw["model"]["encoder"]["options"]["pool"] = "flatten"  # a flattening net cannot read the smaller local crops
    with pytest.raises(ValueError, match=r"view 'local1' \(3, 8, 8\) is a crop of another size.*pool: avg"):
        build_components(config_from_dict(raw))
