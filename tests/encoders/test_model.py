import pytest
import torch

from contrastlab.encoders import MultiViewModel, build_model
from contrastlab.encoders.build import with_defaults

IMG = (3, 16, 16)


def two_views(**kw):
    kw.setdefault("encoder", ("convnet", {"widths": [4, 8]}))
    return build_model({"view1": IMG, "view2": IMG}, {"view1": "image", "view2": "image"}, dim=6, **kw)


def test_views_of_one_modality_share_a_tower():
    model = two_views().eval()
    assert list(model.towers) == ["image"]
    x = torch.randn(3, *IMG)
    z = model({"view1": x, "view2": x})
    assert torch.equal(z["view1"], z["view2"])


def test_separate_towers_per_view():
    model = two_views(shared=False).eval()
    assert sorted(model.towers) == ["view1", "view2"]
    p1 = {id(p) for p in model.towers["view1"].parameters()}
    assert not p1 & {id(p) for p in model.towers["view2"].parameters()}
    x = torch.randn(3, *IMG)
    z = model({"view1": x, "view2": x})
    assert not torch.allclose(z["view1"], z["view2"])


def test_normalisation_and_stages():
    model = two_views().eval()
    x = {"view1": torch.randn(4, *IMG)}
    z = model(x)["view1"]
    assert torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-6)
    h = model.encode(x, stage="backbone")["view1"]
    assert h.shape == (4, model.towers["image"].feature_dim) == (4, 8 * 4 * 4)
    tower = model.towers["image"]
    raw = tower.head(h)
    assert torch.allclose(model.encode(x, stage="head")["view1"], raw / raw.norm(dim=1, keepdim=True), atol=1e-6)
    plain = two_views(normalize=False).eval()
    assert not torch.allclose(plain(x)["view1"].norm(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="stage must be one of 'head', 'backbone', got 'neck'"):
        model.encode(x, stage="neck")


@pytest.mark.parametrize("normalize, space", [(True, "sphere"), (False, "none"), ("sphere", "sphere"),
                                              ("ball", "ball"), ("none", "none")])
def test_output_spaces(normalize, space):
    model = two_views(normalize=normalize).eval()
    assert model.output_space == space
    x = {"view1": torch.randn(16, *IMG)}
    raw = model.towers["image"].head(model.encode(x, stage="backbone")["view1"])
    z = model(x)["view1"]
    norms = raw.norm(dim=1, keepdim=True)
    expected = {"sphere": raw / norms, "ball": raw / norms.clamp_min(1.0), "none": raw}[space]
    assert torch.allclose(z, expected, atol=1e-6)


def test_ball_projection_keeps_inside_points_and_projects_outside_ones():
    from contrastlab.encoders.model import to_output_space

    z = torch.tensor([[0.3, 0.4], [3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    out = to_output_space(z, "ball")
    assert torch.equal(out[0], z[0]) and torch.equal(out[2], z[2])
    assert torch.allclose(out[1], torch.tensor([0.6, 0.8], dtype=torch.float64))
    # the nearest point of the ball: no point of the ball is closer to z[1]
    ball = torch.nn.functional.normalize(torch.randn(500, 2, dtype=torch.float64), dim=1) * torch.rand(500, 1)
    assert (ball - z[1]).norm(dim=1).min() >= (out[1] - z[1]).norm() - 1e-12
    # scaling a point outside the ball does not move its image; inside, the map is the identity
    assert torch.allclose(to_output_space(7 * z[1:2], "ball"), out[1:2])
    inside = torch.tensor([[0.2, -0.1]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: to_output_space(t, "ball"), (inside,))
    outside = torch.tensor([[2.0, -1.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: to_output_space(t, "ball"), (outside,))


def test_bad_output_space_is_named():
    from contrastlab.encoders.model import output_space, to_output_space

    with pytest.raises(ValueError, match="normalize must be true, false or one of 'sphere', 'ball', 'none', got 'cube'"):
        two_views(normalize="cube")
    with pytest.raises(ValueError, match="got 1"):
        output_space(1)
    with pytest.raises(ValueError, match="space must be one of 'sphere', 'ball', 'none', got 'unit'"):
        to_output_space(torch.zeros(1, 2), "unit")


def test_unknown_views_are_named():
    model = two_views()
    with pytest.raises(ValueError, match=r"no tower for views \['view3'\]"):
        model({"view3": torch.randn(2, *IMG)})
    with pytest.raises(ValueError, match="unknown towers"):
        MultiViewModel({}, {"a": "x"})


def test_modalities_get_their_own_encoders_and_lengths_reach_sequence_encoders():
    model = build_model(
        {"image": IMG, "audio": (10, 50)},
        {"image": "image", "audio": "audio"},
        encoder=("convnet", {"widths": [4]}),
        overrides={"audio": ("conv1d", {"widths": [8, 8]})},
        dim=5,
    ).eval()
    assert type(model.towers["audio"].backbone).__name__ == "Conv1dEncoder"
    audio = torch.randn(2, 10, 50)
    garbage = audio.clone()
    garbage[:, :, 20:] = 99.0
    lengths = {"audio": torch.tensor([20, 20])}
    a = model({"image": torch.randn(2, *IMG), "audio": audio}, lengths)["audio"]
    b = model({"image": torch.randn(2, *IMG), "audio": garbage}, lengths)["audio"]
    assert torch.allclose(a, b, atol=1e-6)


def test_build_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"encoders given for \['text'\]"):
        two_views(overrides={"text": ("text", {})})
    with pytest.raises(ValueError, match="share the tower 'image' but have different shapes"):
        build_model({"a": IMG, "b": (3, 8, 8)}, {"a": "image", "b": "image"}, encoder=("convnet", {}))


def test_data_defaults_fill_only_accepted_unset_options():
    model = build_model({"t": (6,)}, {"t": "text"}, encoder=("text", {"dim": 8}), encoder_defaults={"vocab_size": 13}, head="none")
    assert model.towers["text"].backbone.vocab_size == 13
    assert with_defaults(lambda *, a=1: None, {}, {"a": 2, "b": 3}) == {"a": 2}


def test_reconstruction_with_and_without_fusion():
    auto = two_views(decoder=("auto", {}), normalize=False)
    z, recons = auto.reconstruct({"view1": torch.randn(2, *IMG)})
    assert recons["view1"].shape == (2, *IMG) and z["view1"].shape == (2, 6)
    multi = build_model(
        {"image": IMG, "vec": (12,)},
        {"image": "image", "vec": "vec"},
        encoder=("convnet", {"widths": [4]}),
        overrides={"vec": ("mlp", {"hidden": [8]})},
        dim=5,
        decoder=("auto", {}),
        fusion_views=["image", "vec"],
        modality_dropout=1.0,
    )
    x = {"image": torch.randn(3, *IMG), "vec": torch.randn(3, 12)}
    _, recons = multi.reconstruct(x)
    assert recons["image"].shape == (3, *IMG) and recons["vec"].shape == (3, 12)
    multi.eval()  # no dropping at evaluation: decoding is a deterministic function of both inputs
    _, a = multi.reconstruct(x)
    _, b = multi.reconstruct(x)
    assert torch.equal(a["vec"], b["vec"])
    with pytest.raises(ValueError, match="no decoders"):
        two_views().reconstruct({"view1": torch.randn(2, *IMG)})
