import json

import pytest
import torch
import yaml

from _train_fixtures import Clusters, FailingViews, NoisyViews, PairViews, TwoModalities, config, ensure_objectives
from contrastlab.errors import UserError
from contrastlab.training import NonFiniteLoss, config_from_dict, train
from contrastlab.training.build import build_components
from contrastlab.training.checkpoint import INDEX, CheckpointManager, read_checkpoint
from contrastlab.training.logging import COLUMNS, read_metrics

ensure_objectives()


def run(tmp_path, name="run", cfg=None, views=None, dataset=None, **kw):
    return train(cfg or config(), tmp_path / name, dataset=dataset or Clusters(), views=views or NoisyViews(), **kw)


def final_weights(path):
    return read_checkpoint(CheckpointManager(path / "checkpoints").path("last")).model


def test_loss_falls_and_the_run_directory_is_complete(tmp_path):
    result = run(tmp_path, cfg=config(steps=80))
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(5, 85, 5))
    assert list(rows[0]) == list(COLUMNS)
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"]
    assert result.step == 80 and result.loss == pytest.approx(rows[-1]["loss"], rel=1e-4)
    assert all(0 <= r["view_fraction"] <= 1 and r["items_per_s"] > 0 for r in rows)
    assert all(0 <= r["align"] <= 4 and r["uniform"] <= 0 for r in rows)
    assert all(r["norm"] == pytest.approx(1.0, abs=1e-5) for r in rows)  # on the unit sphere
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config_from_dict(saved).optim == config().optim and saved["out"] == str(tmp_path / "run")
    assert CheckpointManager(tmp_path / "run" / "checkpoints").names() == ["step-00000070", "step-00000080"]


@pytest.mark.parametrize("space", ["ball", "none"])
def test_the_logged_norm_follows_the_output_space(tmp_path, space):
    cfg = config(steps=60, **{"model.normalize": space, "objective.options": "{temperature: 0.2, normalize: false}"})
    run(tmp_path, cfg=cfg, views=NoisyViews(sigma=0.05))  # positives far closer than other items
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    norms = [r["norm"] for r in rows]
    assert all(n == n and n > 0 for n in norms)
    if space == "ball":
        assert max(norms) <= 1.0 + 1e-6
    else:  # an unconstrained InfoNCE lowers its loss by scaling the embeddings up
        assert norms[-1] > 1.3 * norms[0]


def test_a_checkpoint_reloads_into_an_identical_model(tmp_path):
    run(tmp_path, cfg=config(steps=20))
    ck = read_checkpoint(CheckpointManager(tmp_path / "run" / "checkpoints").path("last"))
    torch.manual_seed(123)  # a different initialisation, then the checkpoint's weights
    fresh = build_components(config(), dataset=Clusters(), views=NoisyViews()).model
    fresh.load_state_dict(ck.model)
    fresh.eval()
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, ck.model[name])
    x = {"view1": Clusters().x[:16]}
    again = build_components(config(), dataset=Clusters(), views=NoisyViews()).model
    again.load_state_dict(ck.model)
    assert torch.equal(fresh(x)["view1"], again.eval()(x)["view1"])


def test_resume_after_a_crash_continues_exactly(tmp_path):
    cfg = config(steps=40, **{"checkpoint.every": 10})
    run(tmp_path, "straight", cfg=cfg)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, "crashed", cfg=cfg, views=FailingViews(at_call=27))
    assert CheckpointManager(tmp_path / "crashed" / "checkpoints").path("last").name == "step-00000020"
    result = run(tmp_path, "crashed", cfg=cfg, resume=True)
    assert result.step == 40
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "crashed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    straight = read_metrics(tmp_path / "straight" / "metrics.csv")
    resumed = read_metrics(tmp_path / "crashed" / "metrics.csv")
    assert [r["step"] for r in resumed] == [r["step"] for r in straight]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]


def test_a_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLoss) as info:
        run(tmp_path, cfg=config(steps=40), views=FailingViews(at_call=25, mode="nan"))
    message = str(info.value)
    assert "at step 25 of 40" in message and "step-00000020" in message and "\n" not in message
    manager = CheckpointManager(tmp_path / "run" / "checkpoints")
    assert manager.path("last").name == "step-00000020"
    assert all(torch.isfinite(t).all() for t in read_checkpoint(manager.path("last")).model.values())


def test_output_directory_rules(tmp_path):
    run(tmp_path, cfg=config(steps=5))
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        run(tmp_path, cfg=config(steps=5))
    run(tmp_path, cfg=config(steps=10), overwrite=True)
    assert read_metrics(tmp_path / "run" / "metrics.csv")[-1]["step"] == 10
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("keep me")
    with pytest.raises(UserError, match="refuses to replace .*precious: it is not a run directory contrastlab made"):
        run(tmp_path, "precious", cfg=config(steps=5), overwrite=True)
    assert (tmp_path / "precious" / "thesis.tex").read_text() == "keep me"
    with pytest.raises(UserError, match="no checkpoint to resume from"):
        (tmp_path / "empty").mkdir()
        run(tmp_path, "empty", cfg=config(steps=5), resume=True)


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(tmp_path):
    run(tmp_path, cfg=config(steps=10))
    before = snapshot(tmp_path / "run")
    with pytest.raises(NonFiniteLoss, match="at step 4 of 40"):  # after the trial step, before the first checkpoint
        run(tmp_path, cfg=config(steps=40), views=FailingViews(at_call=5, mode="nan"), overwrite=True)
    assert snapshot(tmp_path / "run") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the new run's hidden sibling is gone
    with pytest.raises(NonFiniteLoss, match="at step 25 of 40"):  # after the first checkpoint: the new run took over
        run(tmp_path, cfg=config(steps=40), views=FailingViews(at_call=26, mode="nan"), overwrite=True)
    assert CheckpointManager(tmp_path / "run" / "checkpoints").path("last").name == "step-00000020"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_with_tensorboard_keeps_logging_after_the_swap(tmp_path):
    """TensorBoard writes its event file by path: the writer is reopened in the run's folder at its new place."""
    pytest.importorskip("tensorboard")
    run(tmp_path, cfg=config(steps=10))
    result = run(tmp_path, cfg=config(steps=40, **{"log.tensorboard": True}), overwrite=True)
    assert result.run_dir == tmp_path / "run" and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert read_metrics(tmp_path / "run" / "metrics.csv")[-1]["step"] == 40
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = set()
    for events in (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        steps |= {e.step for e in acc.Scalars("train/loss")}
    assert steps == set(range(5, 45, 5))  # before and after the swap at step 10


def test_overwrite_with_a_config_that_does_not_build_keeps_the_old_run(tmp_path):
    run(tmp_path, cfg=config(steps=10))
    before = snapshot(tmp_path / "run")
    with pytest.raises(ValueError, match="takes exactly 2 views"):
        run(tmp_path, cfg=config(steps=10), views=NoisyViews(count=3), overwrite=True)
    assert snapshot(tmp_path / "run") == before


def test_overwrite_tries_a_step_first_and_the_trial_leaves_no_trace(tmp_path):
    run(tmp_path, cfg=config(steps=10))
    before = snapshot(tmp_path / "run")
    with pytest.raises(UserError, match="trial step on the first 32 items .* gave a loss of (nan|inf)"):
        run(tmp_path, cfg=config(steps=10, **{"objective.options": "{temperature: 1.0e-300}"}), overwrite=True)
    assert snapshot(tmp_path / "run") == before
    run(tmp_path, "fresh", cfg=config(steps=10, seed=5))
    run(tmp_path, cfg=config(steps=10, seed=5), overwrite=True)  # the trial step ran here, the fresh run had none
    a, b = final_weights(tmp_path / "fresh"), final_weights(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_checkpoint_that_does_not_fit_and_deletes_nothing(tmp_path):
    cfg = config(steps=20, **{"checkpoint.every": 5, "checkpoint.keep_last": 4})
    run(tmp_path, cfg=cfg)
    before = snapshot(tmp_path / "run")
    wider = config(steps=20, **{"checkpoint.every": 5, "model.encoder.options": "{hidden: [48]}"})
    with pytest.raises(UserError, match="does not fit this model"):
        run(tmp_path, cfg=wider, resume=True)
    assert snapshot(tmp_path / "run") == before


def test_resuming_a_finished_run_trains_nothing_and_reports_its_last_loss(tmp_path):
    done = run(tmp_path, cfg=config(steps=20))
    before = final_weights(tmp_path / "run")
    again = run(tmp_path, cfg=config(steps=20), resume=True)
    assert again.step == 20 and again.loss == pytest.approx(done.loss, rel=1e-5)  # as metrics.csv holds it
    after = final_weights(tmp_path / "run")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_refuses_a_checkpoint_past_the_configured_steps(tmp_path):
    run(tmp_path, cfg=config(steps=20))
    before = snapshot(tmp_path / "run")
    with pytest.raises(UserError, match="is at step 20, past the 10 steps the run's config.yaml asks for"):
        run(tmp_path, cfg=config(steps=10), resume=True)
    assert snapshot(tmp_path / "run") == before


def test_resume_discards_checkpoints_written_after_the_one_it_continues_from(tmp_path):
    cfg = config(steps=20, **{"checkpoint.every": 5, "checkpoint.keep_last": 4})
    run(tmp_path, "straight", cfg=cfg)
    run(tmp_path, "crashed", cfg=cfg)
    manager = CheckpointManager(tmp_path / "crashed" / "checkpoints", keep_last=4)
    # as if the run was killed after writing step 20 but before the index named it "last"
    index_file = manager.directory / INDEX
    index = json.loads(index_file.read_text())
    index["last"] = "step-00000010"
    index_file.write_text(json.dumps(index))
    assert "step-00000020" in CheckpointManager(manager.directory).names()
    run(tmp_path, "crashed", cfg=cfg, resume=True)
    assert not list(manager.directory.glob("*.tmp"))
    assert CheckpointManager(manager.directory).path("last").name == "step-00000020"
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "crashed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_epochs_schedule_and_other_objective_kinds(tmp_path):
    result = run(tmp_path, "ep", cfg=config(epochs=2, steps="null"))
    assert result.step == 2 * (256 // 32)
    multi = config(**{"objective.name": "cmc_full_graph", "objective.options": "{}", "model.shared": "false"})
    run(tmp_path, "cmc", cfg=multi, views=NoisyViews(count=3))
    sup = config(**{"objective.name": "supcon", "objective.options": "{}"})
    run(tmp_path, "supcon", cfg=sup)
    with pytest.raises(ValueError, match=r"takes exactly 2 views, but views 'noisy' make 3 \(view1, view2, view3\)"):
        run(tmp_path, "bad", cfg=config(), views=NoisyViews(count=3))


def test_multimodal_autoencoder_learns(tmp_path):
    cfg = config(
        steps=60,
        **{
            "objective.name": "multimodal_autoencoder",
            "objective.options": "{}",
            "model.normalize": "false",
            "model.decoder": "{name: mlp, options: {hidden: [16]}}",
            "model.fusion.modality_dropout": 0.3,
            "optim.lr": 0.01,
        },
    )
    run(tmp_path, cfg=cfg, dataset=TwoModalities(), views=PairViews())
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    model = read_checkpoint(CheckpointManager(tmp_path / "run" / "checkpoints").path("last")).model
    assert any(k.startswith("fusion.") for k in model) and any(k.startswith("decoders.") for k in model)
