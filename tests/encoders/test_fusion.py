"""Modality dropout and fusion: dropped modalities have no effect, and one modality learns to stand in."""

import pytest
import torch
from torch import nn

from contrastlab.encoders.fusion import Fusion, ModalityDropout
from contrastlab.objectives.reconstruction import multimodal_reconstruction


def codes_for(n=6, dims=None, dtype=torch.float64):
    dims = dims or {"image": 5, "audio": 3, "text": 4}
    return {m: torch.randn(n, d, dtype=dtype) for m, d in dims.items()}


def masks(rows):
    """``rows``: one string per modality, e.g. "110" = present for items 0 and 1."""
    return {m: torch.tensor([c == "1" for c in r]) for m, r in rows.items()}


# --------------------------------------------------------------------------- ModalityDropout


def test_dropout_never_drops_every_modality_and_matches_its_rate():
    for m, p in ((2, 0.5), (3, 0.7), (2, 1.0)):
        codes = {f"m{j}": torch.zeros(20000, 1) for j in range(m)}
        keep = torch.stack(list(ModalityDropout(p)(codes, generator=torch.Generator().manual_seed(m)).values()), 1)
        assert keep.dtype == torch.bool and keep.shape == (20000, m)
        assert keep.any(dim=1).all()
        dropped = 1 - keep.float().mean().item()
        assert dropped == pytest.approx(p - p**m / m, abs=0.015)
    one_each = ModalityDropout(1.0)({"a": torch.zeros(50, 1), "b": torch.zeros(50, 1)})
    assert torch.equal(one_each["a"], ~one_each["b"])  # p = 1 keeps exactly one modality per item


def test_dropout_is_deterministic_from_a_generator():
    drop, codes = ModalityDropout(0.5), codes_for(n=64)
    first = drop(codes, generator=torch.Generator().manual_seed(7))
    again = drop(codes, generator=torch.Generator().manual_seed(7))
    other = drop(codes, generator=torch.Generator().manual_seed(8))
    assert all(torch.equal(first[m], again[m]) for m in codes)
    assert not all(torch.equal(first[m], other[m]) for m in codes)
    assert not all(first[m].all() for m in codes)  # something was dropped


def test_dropout_drops_nothing_in_eval_mode_with_p_zero_or_one_modality():
    codes = codes_for(n=32)
    drop = ModalityDropout(0.9).eval()
    assert all(mask.all() for mask in drop(codes).values())
    assert all(mask.all() for mask in ModalityDropout(0.0)(codes).values())
    assert ModalityDropout(1.0)({"image": codes["image"]})["image"].all()
    assert list(drop(codes)) == list(codes)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.5", True])
def test_dropout_rejects_bad_probability(p):
    with pytest.raises(ValueError, match=f"got {p!r}"):
        ModalityDropout(p)


def test_dropout_checks_its_input():
    with pytest.raises(ValueError, match="non-empty"):
        ModalityDropout()({})
    with pytest.raises(ValueError, match="got 4 for 'a' and 3 for 'b'"):
        ModalityDropout()({"a": torch.zeros(4, 2), "b": torch.zeros(3, 2)})


# --------------------------------------------------------------------------- Fusion


def test_mean_fusion_is_the_mean_over_present_modalities():
    fuse = Fusion({"image": 5, "audio": 3, "text": 4}, 7).double()
    codes = codes_for(n=3)
    projected = {m: fuse.proj[m](codes[m]) for m in codes}
    torch.testing.assert_close(fuse(codes), sum(projected.values()) / 3)
    present = masks({"image": "101", "audio": "110", "text": "100"})
    out = fuse(codes, present)
    torch.testing.assert_close(out[0], sum(p[0] for p in projected.values()) / 3)
    torch.testing.assert_close(out[1], projected["audio"][1])
    torch.testing.assert_close(out[2], projected["image"][2])


def test_concat_fusion_zero_imputes_dropped_modalities():
    fuse = Fusion({"image": 5, "audio": 3}, 4, mode="concat").double()
    codes = codes_for(n=2, dims={"image": 5, "audio": 3})
    out = fuse(codes, masks({"image": "10", "audio": "11"}))
    full = fuse.proj(torch.cat([codes["image"], codes["audio"]], dim=1))
    torch.testing.assert_close(out[0], full[0])
    torch.testing.assert_close(out[1], fuse.proj(torch.cat([torch.zeros(5).double(), codes["audio"][1]])))
    torch.testing.assert_close(fuse(codes), full)


@pytest.mark.parametrize("mode", ["mean", "concat"])
def test_dropped_modality_has_no_effect_on_value_or_gradient(mode):
    fuse = Fusion({"image": 5, "audio": 3, "text": 4}, 6, mode=mode).double()
    codes = {m: c.requires_grad_() for m, c in codes_for(n=4).items()}
    present = masks({"image": "1101", "audio": "0111", "text": "1010"})
    out = fuse(codes, present)
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), list(codes.values()))

    nan = float("nan")  # dropped rows replaced with NaN
    changed = {m: torch.where(present[m][:, None], c.detach(), nan).requires_grad_() for m, c in codes.items()}
    out2 = fuse(changed, present)
    torch.testing.assert_close(out2, out.detach())
    grads2 = torch.autograd.grad((out2 * weights).sum(), list(changed.values()), retain_graph=True)
    for m, g, g2 in zip(codes, grads, grads2):
        torch.testing.assert_close(g, g2)
        assert (g[~present[m]] == 0).all() and (g[present[m]] != 0).any()
    fuse.zero_grad()
    (out2 * weights).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in fuse.parameters())  # NaN reaches no weight either


def test_fusion_gradcheck():
    fuse = Fusion({"a": 3, "b": 2}, 4).double()
    present = masks({"a": "110", "b": "011"})
    a, b = torch.randn(3, 3, dtype=torch.float64, requires_grad=True), torch.randn(3, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x, y: fuse({"a": x, "b": y}, present), (a, b.requires_grad_()))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: Fusion({}, 4), "non-empty"),
        (lambda: Fusion({"a": 0}, 4), r"dims\['a'\].*got 0"),
        (lambda: Fusion({"a.b": 2}, 4), "'a.b'"),
        (lambda: Fusion({"a": 2}, 0), "out_dim.*got 0"),
        (lambda: Fusion({"a": 2}, 4, mode="sum"), "'sum'"),
    ],
)
def test_fusion_rejects_bad_options(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "codes, present, match",
    [
        ({"a": torch.zeros(2, 3)}, None, r"modalities \['a', 'b'\]"),
        ({"a": torch.zeros(2, 3), "b": torch.zeros(2, 5)}, None, r"'b'.*\(2, 2\), got \(2, 5\)"),
        ({"a": torch.zeros(2, 3), "b": torch.zeros(2, 2)}, {"a": torch.ones(2, dtype=torch.bool)}, "present"),
        ({"a": torch.zeros(2, 3), "b": torch.zeros(2, 2)}, {"a": torch.ones(2), "b": torch.ones(2)}, "boolean"),
        ({"a": torch.zeros(2, 3), "b": torch.zeros(2, 2)}, masks({"a": "10", "b": "10"}), "at least one present"),
    ],
)
def test_fusion_checks_its_input(codes, present, match):
    with pytest.raises(ValueError, match=match):
        Fusion({"a": 3, "b": 2}, 4)(codes, present)


# --------------------------------------------------------------------------- end to end


def train_multimodal_autoencoder(p, steps=300, seed=0):
    """Two modalities of one 3-d latent; returns B's error reconstructed from A alone / B's variance."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    s = torch.randn(512, 3, generator=g)
    x = {"a": s @ torch.randn(3, 10, generator=g), "b": torch.tanh(s @ torch.randn(3, 6, generator=g))}
    enc = nn.ModuleDict(
        {m: nn.Sequential(nn.Linear(v.shape[1], 16), nn.ReLU(), nn.Linear(16, 8)) for m, v in x.items()}
    )
    dec = nn.ModuleDict(
        {m: nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, v.shape[1])) for m, v in x.items()}
    )
    fuse, drop = Fusion({"a": 8, "b": 8}, 4), ModalityDropout(p)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters(), *fuse.parameters()], lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(512, (128,), generator=g)
        batch = {m: v[idx] for m, v in x.items()}
        codes = {m: enc[m](batch[m]) for m in batch}
        z = fuse(codes, drop(codes, generator=g))
        loss = multimodal_reconstruction({m: dec[m](z) for m in batch}, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        codes = {m: enc[m](x[m]) for m in x}
        only_a = {"a": torch.ones(512, dtype=torch.bool), "b": torch.zeros(512, dtype=torch.bool)}
        recon_b = dec["b"](fuse(codes, only_a))
        return (((recon_b - x["b"]) ** 2).mean() / x["b"].var()).item()


def test_modality_dropout_lets_one_modality_stand_in_for_the_other():
    with_dropout, without = train_multimodal_autoencoder(0.5), train_multimodal_autoencoder(0.0)
    assert with_dropout < 0.1  # B is recovered from A alone (relative error)
    assert with_dropout < 0.5 * without  # ...which training on complete pairs alone does not teach
