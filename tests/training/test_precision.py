"""Precision and speed options of the loop: fp16 with a gradient scaler, channels_last, torch.compile, TF32."""

import functools
import time

import pytest
import torch

from _train_fixtures import Clusters, FailingViews, NoisyViews, config, ensure_objectives
from contrastlab.training import config_from_dict, train
from contrastlab.training.build import build_components, compile_towers
from contrastlab.training.checkpoint import CheckpointManager, read_checkpoint
from contrastlab.training.logging import read_metrics
from contrastlab.training.loop import autocast_options, image_layout, set_tf32
from contrastlab.training.run import load_run
from contrastlab.training.step import LossModule

ensure_objectives()


def run(tmp_path, name="run", cfg=None, views=None, **kw):
    return train(cfg or config(), tmp_path / name, dataset=Clusters(), views=views or NoisyViews(), **kw)


def final_checkpoint(run_dir):
    return read_checkpoint(CheckpointManager(run_dir / "checkpoints").path("last"))


@pytest.fixture
def eager_scaler(monkeypatch):
    """A gradient scaler that starts far too high and grows after 2 good steps: steps overflow and are skipped,
    the scale falls and rises again within a short run, so its state matters for what a resumed run does."""
    monkeypatch.setattr(torch.amp, "GradScaler",
                        functools.partial(torch.amp.GradScaler, init_scale=2.0**20, growth_interval=2))


def test_autocast_options_per_precision():
    cpu = torch.device("cpu")
    assert autocast_options("fp32", cpu)["enabled"] is False
    assert autocast_options("bf16", cpu) == {"device_type": "cpu", "dtype": torch.bfloat16, "enabled": True}
    assert autocast_options("fp16", cpu) == {"device_type": "cpu", "dtype": torch.float16, "enabled": True}


def test_the_objective_reads_float32_embeddings_with_autocast_off_under_fp16():
    cfg = config()
    comps = build_components(cfg, dataset=Clusters(), views=NoisyViews())
    seen = {}

    def objective(z1, z2):
        seen["dtypes"] = (z1.dtype, z2.dtype)
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        return (z1 - z2).pow(2).sum(1).mean()

    module = LossModule(comps.model, objective, reader="pairwise", view_names=["view1", "view2"])
    batch = Clusters().get(torch.arange(8))
    views = NoisyViews()(batch, torch.Generator().manual_seed(0))
    with torch.autocast(**autocast_options("fp16", torch.device("cpu"))):
        loss, out = module(views)
    assert out.embeddings["view1"].dtype == torch.float16  # the towers did run in half precision
    assert seen == {"dtypes": (torch.float32, torch.float32), "autocast": False}
    assert loss.dtype == torch.float32


def test_fp16_trains_on_the_cpu_and_checkpoints_the_scaler(tmp_path):
    result = run(tmp_path, cfg=config(steps=10, precision="fp16"))
    assert result.step == 10 and torch.isfinite(torch.tensor(result.loss))
    state = final_checkpoint(tmp_path / "run").meta["grad_scaler"]
    assert {"scale", "_growth_tracker", "growth_interval"} <= set(state)
    assert state["scale"] in [2.0**k for k in range(17)] and 0 <= state["_growth_tracker"] <= 10
    assert "grad_scaler" not in final_checkpoint(run(tmp_path, "fp32", cfg=config(steps=10)).run_dir).meta


def test_steps_the_scaler_skips_do_not_stop_the_run_and_lower_the_scale(tmp_path, eager_scaler):
    cfg = config(steps=6, precision="fp16", **{"checkpoint.every": 1, "checkpoint.keep_last": 10, "log.every": 1})
    result = run(tmp_path, cfg=cfg)  # the loss is float32 and finite; only the scaled gradients overflow
    assert result.step == 6
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in read_metrics(tmp_path / "run" / "metrics.csv"))
    manager = CheckpointManager(tmp_path / "run" / "checkpoints")
    first = read_checkpoint(manager.directory / "step-00000001")
    assert first.meta["grad_scaler"]["scale"] < 2.0**20  # the first step overflowed and was skipped
    torch.manual_seed(cfg.seed)  # as the loop seeds before building
    model = build_components(cfg, dataset=Clusters(), views=NoisyViews()).model
    initial = {k: p.detach() for k, p in model.named_parameters()}  # (batch norm's running statistics do move)
    assert all(torch.equal(first.model[k], initial[k]) for k in initial)  # ... so the weights did not move
    last = final_checkpoint(tmp_path / "run")
    assert any(not torch.equal(last.model[k], initial[k]) for k in initial)  # later steps were taken


def test_fp16_resume_continues_exactly_with_the_scalers_state(tmp_path, eager_scaler):
    cfg = config(steps=12, precision="fp16", **{"checkpoint.every": 5, "optim.grad_clip": 1.0})
    run(tmp_path, "straight", cfg=cfg)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, "crashed", cfg=cfg, views=FailingViews(at_call=8))
    resumed = final_checkpoint(tmp_path / "crashed")
    assert resumed.meta["step"] == 5 and resumed.meta["grad_scaler"]["scale"] < 2.0**20
    run(tmp_path, "crashed", cfg=cfg, resume=True)
    a, b = final_checkpoint(tmp_path / "straight"), final_checkpoint(tmp_path / "crashed")
    assert a.meta["grad_scaler"] == b.meta["grad_scaler"]
    assert a.model.keys() == b.model.keys() and all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    straight = read_metrics(tmp_path / "straight" / "metrics.csv")
    again = read_metrics(tmp_path / "crashed" / "metrics.csv")
    assert [r["loss"] for r in again] == [r["loss"] for r in straight]


def test_channels_last_is_refused_when_no_view_holds_images(tmp_path):
    with pytest.raises(ValueError, match=r"^model.channels_last: no view is a batch of images") as info:
        build_components(config(**{"model.channels_last": "true"}), dataset=Clusters(), views=NoisyViews())
    assert "\n" not in str(info.value)


def test_image_layout_changes_only_4d_views():
    views = {"image": torch.randn(2, 3, 4, 5), "signal": torch.randn(2, 7)}
    out = image_layout(views, torch.channels_last)
    assert out["image"].is_contiguous(memory_format=torch.channels_last) and torch.equal(out["image"], views["image"])
    assert out["signal"] is views["signal"]
    assert image_layout(views, None) is views


def test_set_tf32_sets_and_restores_torchs_settings():
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    previous = set_tf32(True)
    assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32 is True
    set_tf32(False)
    assert torch.get_float32_matmul_precision() == "highest" and torch.backends.cudnn.allow_tf32 is False
    set_tf32(*previous)
    assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == before


def test_compiled_towers_keep_their_state_dict_names():
    comps = build_components(config(), dataset=Clusters(), views=NoisyViews())
    names = list(comps.model.state_dict())
    compile_towers(comps.model)
    assert list(comps.model.state_dict()) == names and not any("_orig_mod" in n for n in names)


CONV = {
    "data": {"name": "digits"},
    "views": {"name": "simclr", "options": {"size": 8}},
    "objective": {"name": "nt_xent", "options": {"temperature": 0.5}},
    "model": {"encoder": {"name": "convnet", "options": {"widths": [4, 8]}}, "head": {"name": "linear"}, "dim": 8},
    "optim": {"name": "sgd", "lr": 0.05},
    "batch_size": 16,
    "steps": 2,
    "threads": 1,
    "device": "cpu",
    "checkpoint": {"every": 0},
    "log": {"every": 1, "progress": False, "tensorboard": False},
    "monitor": {"every": 0},
}


@pytest.mark.slow
def test_compile_and_channels_last_train_as_eager_and_the_run_loads(tmp_path):
    eager = train(config_from_dict(CONV), tmp_path / "eager")
    fast_cfg = config_from_dict({**CONV, "model": {**CONV["model"], "compile": True, "channels_last": True}})
    t0 = time.perf_counter()
    fast = train(fast_cfg, tmp_path / "fast")
    assert time.perf_counter() - t0 < 120  # inductor on 2 cores: about 20 s for this tower
    a, b = (read_metrics(r.run_dir / "metrics.csv") for r in (eager, fast))
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2]
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4, abs=1e-5)
    loaded = load_run(tmp_path / "fast")  # names as an eager run's: no "_orig_mod." anywhere
    assert loaded.step == 2 and not any("_orig_mod" in k for k in loaded.model.state_dict())
    ckpt_eager, ckpt_fast = final_checkpoint(tmp_path / "eager"), final_checkpoint(tmp_path / "fast")
    assert ckpt_fast.model.keys() == ckpt_eager.model.keys()
    for k in ckpt_eager.model:
        assert torch.allclose(ckpt_fast.model[k], ckpt_eager.model[k], rtol=1e-4, atol=1e-5), k
