import math

import pytest
import torch
from torch import nn

from contrastlab.encoders.build import build_model
from contrastlab.training.monitors import batch_geometry
from contrastlab.training.step import LossModule, reconstruction_views


class Recorder(nn.Module):
    """Records how it was called and returns a loss that depends on every input."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        total = 0.0
        for a in list(args) + list(kwargs.values()):
            items = a.values() if isinstance(a, dict) else a if isinstance(a, list) else [a]
            total = total + sum(t.float().sum() for t in items)
        return total


def model(views=("view1", "view2"), **kw):
    shapes = {v: (5,) for v in views}
    return build_model(shapes, {v: "x" for v in views}, encoder=("mlp", {"hidden": [8]}), dim=3, **kw)


def inputs(views=("view1", "view2"), n=4):
    return {v: torch.randn(n, 5) for v in views}


def test_pairwise_and_cca_get_the_two_views_in_order():
    for kind in ("pairwise", "cca"):
        rec = Recorder()
        m = model().eval()
        x = inputs()
        loss, out = LossModule(m, rec, reader=kind, view_names=["view2", "view1"])(x)
        (args, kwargs), = rec.calls
        z = out.embeddings
        assert torch.equal(args[0], z["view2"]) and torch.equal(args[1], z["view1"]) and kwargs == {}
        assert loss.dim() == 0


def test_multi_crop_pairs_are_averaged_over_global_anchored_pairs():
    rec = Recorder()
    views = ("g1", "g2", "l1")
    m = model(views).eval()
    loss, out = LossModule(m, rec, reader="pairwise", view_names=views, global_views=("g1", "g2"))(inputs(views))
    pairs = [(a, b) for a in views for b in views if a < b]
    assert len(rec.calls) == 3
    for (args, _), (a, b) in zip(rec.calls, [("g1", "g2"), ("g1", "l1"), ("g2", "l1")]):
        assert torch.equal(args[0], out.embeddings[a]) and torch.equal(args[1], out.embeddings[b])
    total = sum(sum(t.sum() for t in args) for args, _ in rec.calls) / 3
    assert torch.allclose(loss, total) and len(pairs) == 3


def test_multiview_gets_a_list_in_view_order():
    rec = Recorder()
    views = ("a", "b", "c")
    m = model(views).eval()
    _, out = LossModule(m, rec, reader="multiview", view_names=views)(inputs(views))
    (args, _), = rec.calls
    assert isinstance(args[0], list) and all(torch.equal(a, out.embeddings[v]) for a, v in zip(args[0], views))


def test_supervised_gets_stacked_views_and_labels():
    rec = Recorder()
    m = model().eval()
    labels = torch.tensor([0, 1, 0, 1])
    _, out = LossModule(m, rec, reader="supervised", view_names=["view1", "view2"])(inputs(), labels=labels)
    (args, _), = rec.calls
    assert args[0].shape == (4, 2, 3) and torch.equal(args[0][:, 1], out.embeddings["view2"]) and torch.equal(args[1], labels)
    with pytest.raises(ValueError, match="needs labels"):
        LossModule(m, rec, reader="supervised", view_names=["view1", "view2"])(inputs())


def test_reconstruction_gets_dicts_keyed_by_modality_with_clean_targets():
    rec = Recorder()
    m = model(decoder=("mlp", {"hidden": [4]}), normalize=False)
    x, clean = inputs(), inputs()
    recon = reconstruction_views(["view1", "view2"], {"view1": "x", "view2": "x"})
    assert recon == {"view1": "x"}
    module = LossModule(m, rec, reader="reconstruction", view_names=["view1", "view2"],
                        modalities={"view1": "x", "view2": "x"}, recon_views=recon)
    module(x, clean=clean)
    (args, _), = rec.calls
    assert list(args[0]) == ["x"] and args[0]["x"].shape == (4, 5) and torch.equal(args[1]["x"], clean["view1"])
    with pytest.raises(ValueError, match="clean inputs"):
        module(x)


def test_learned_temperature_and_queue_are_passed_and_the_queue_fills_after_the_step():
    from contrastlab.objectives.queue import NegativeQueue
    from contrastlab.objectives.temperature import LearnableTemperature

    rec = Recorder()
    m = model(temperature=LearnableTemperature(0.1), queue=NegativeQueue(6, 3)).eval()
    module = LossModule(m, rec, reader="pairwise", view_names=["view1", "view2"])
    _, out = module(inputs(), index=torch.arange(4))
    (_, kwargs), = rec.calls
    assert "negatives" not in kwargs and kwargs["temperature"].item() == pytest.approx(0.1)  # nothing queued yet
    assert len(m.queue) == 0  # keys enter the queue only after the optimiser step
    module.after_step(1, 10)
    assert torch.equal(m.queue.negatives(), out.embeddings["view2"].detach())
    module(inputs(), index=torch.arange(4, 8))
    assert rec.calls[1][1]["negatives"].shape == (4, 3)  # the previous batch's keys, not its own


def test_after_step_clamps_a_learned_temperature_and_runs_registered_hooks_in_order():
    from contrastlab.objectives.temperature import LearnableTemperature

    temp = LearnableTemperature(0.1)
    module = LossModule(model(temperature=temp), Recorder(), reader="pairwise", view_names=["view1", "view2"])
    calls = []
    module.register_after_step(lambda step, total: calls.append((step, total, temp.log_scale.item())))
    with torch.no_grad():
        temp.log_scale.fill_(50.0)
    module.after_step(3, 7)
    assert calls == [(3, 7, pytest.approx(math.log(100.0), rel=1e-6))]


def test_momentum_targets_follow_the_online_towers_after_the_step():
    m = model(momentum=(0.5, "constant"), predictor=("linear", {}))
    module = LossModule(m, Recorder(), reader="method", view_names=["view1", "view2"])
    out = m.outputs(inputs(), modalities={"view1": "x", "view2": "x"})
    assert set(out.predictions) == {"view1", "view2"} and set(out.targets) == {"view1", "view2"}
    assert not out.targets["view1"].requires_grad and out.predictions["view1"].requires_grad
    online, target = m.towers["x"], m.targets.towers["x"]
    assert all(torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters()))  # a copy at the start
    assert not any(p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    before = [p.clone() for p in target.parameters()]
    module.after_step(1, 10)
    assert all(torch.allclose(t, b + 0.5) for t, b in zip(target.parameters(), before))


def test_reader_and_view_count_are_checked():
    with pytest.raises(ValueError, match="reader must be a Reader or one of"):
        LossModule(model(), Recorder(), reader="contrastive", view_names=["view1", "view2"])
    with pytest.raises(ValueError, match="takes at least 2 views and at most 2"):
        LossModule(model(("a", "b", "c")), Recorder(), reader="pairwise", view_names=["a", "b", "c"])


def test_logged_align_uniform_against_loops():
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    logged = batch_geometry({"view1": z1, "view2": z2})
    a, u = logged["align"], logged["uniform"]
    n1 = [r / r.norm() for r in z1]
    n2 = [r / r.norm() for r in z2]
    align = sum(float((x - y).pow(2).sum()) for x, y in zip(n1, n2)) / 6
    pairs = [float((n1[i] - n1[j]).pow(2).sum()) for i in range(6) for j in range(i + 1, 6)]
    uniform = math.log(sum(math.exp(-2 * d) for d in pairs) / len(pairs))
    assert a == pytest.approx(align, rel=1e-5) and u == pytest.approx(uniform, rel=1e-5)


def test_mean_norm_is_the_mean_over_views_and_rows():
    from contrastlab.training.step import mean_norm

    a = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert mean_norm({"a": a, "b": b}) == pytest.approx((5 + 0 + 1 + 2) / 4)
    assert mean_norm({}) != mean_norm({})  # nan
