"""Autoencoder and multimodal autoencoder reconstruction objectives."""

import pytest
import torch
import torch.nn.functional as F

from contrastlab.objectives._spec import ObjectiveSpec
from contrastlab.objectives.reconstruction import (
    SPECS,
    AutoencoderLoss,
    MultimodalReconstruction,
    multimodal_reconstruction,
    reconstruction_loss,
)


def mse_reference(recon, target):
    """Mean of squared differences, one element at a time, float64."""
    r, t = recon.double().flatten(), target.double().flatten()
    return sum((r[j] - t[j]) ** 2 for j in range(len(r))) / len(r)


def test_reconstruction_loss_matches_reference_value_and_gradient():
    recon = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    target = torch.randn(4, 3, 2, dtype=torch.float64)
    ours, ref = reconstruction_loss(recon, target), mse_reference(recon, target)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    (g_ours,), (g_ref,) = torch.autograd.grad(ours, recon), torch.autograd.grad(ref, recon)
    torch.testing.assert_close(g_ours, g_ref)
    torch.testing.assert_close(g_ours, 2 * (recon - target).detach() / recon.numel())


def test_reconstruction_loss_reductions_and_closed_forms():
    x = torch.zeros(3, 5)
    assert reconstruction_loss(x, x).item() == 0.0
    assert reconstruction_loss(x + 2.0, x).item() == pytest.approx(4.0)
    # the per-sample loss is each item's mean squared error: "none" is (N,), "sum" the sum over items
    assert reconstruction_loss(x + 2.0, x, reduction="sum").item() == pytest.approx(12.0)
    assert torch.equal(reconstruction_loss(x + 2.0, x, reduction="none"), torch.full((3,), 4.0))
    recon, target = torch.randn(6, 7), torch.randn(6, 7)
    torch.testing.assert_close(reconstruction_loss(recon, target), F.mse_loss(recon, target))
    perm = torch.randperm(6)
    torch.testing.assert_close(reconstruction_loss(recon[perm], target[perm]), reconstruction_loss(recon, target))
    assert torch.autograd.gradcheck(
        lambda r: reconstruction_loss(r, target.double()), (recon.double().requires_grad_(),)
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: reconstruction_loss(torch.zeros(4, 1), torch.zeros(4)), r"\(4, 1\) and \(4,\)"),  # no broadcasting
        (lambda: reconstruction_loss(torch.zeros(4), torch.zeros(4), reduction="max"), "'max'"),
        (lambda: reconstruction_loss(torch.zeros(4, dtype=torch.long), torch.zeros(4)), "floating point"),
        (lambda: reconstruction_loss([0.0], torch.zeros(1)), "tensor"),
        (lambda: AutoencoderLoss(reduction="avg"), "'avg'"),
        (lambda: reconstruction_loss(torch.zeros(()), torch.zeros(()), reduction="none"), "batch dimension"),
        (lambda: MultimodalReconstruction(reduction="avg"), "'avg'"),
    ],
)
def test_reconstruction_loss_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_multimodal_reconstruction_matches_reference():
    recons = {"image": torch.randn(4, 2, 3, dtype=torch.float64), "audio": torch.randn(4, 5, dtype=torch.float64)}
    targets = {m: torch.randn_like(r) for m, r in recons.items()}
    for m in recons:
        recons[m].requires_grad_()
    weights = {"image": 0.25, "audio": 2.0}
    ours = multimodal_reconstruction(recons, targets, weights=weights)
    ref = sum(weights[m] * mse_reference(recons[m], targets[m]) for m in recons) / sum(weights.values())
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    for g_ours, g_ref in zip(torch.autograd.grad(ours, list(recons.values())),
                             torch.autograd.grad(ref, list(recons.values()))):
        torch.testing.assert_close(g_ours, g_ref)
    equal = multimodal_reconstruction(recons, targets)
    torch.testing.assert_close(equal, (mse_reference(recons["image"], targets["image"])
                                       + mse_reference(recons["audio"], targets["audio"])) / 2)


def test_reduction_is_per_item():
    recon, target = torch.randn(4, 3, 2, dtype=torch.float64), torch.randn(4, 3, 2, dtype=torch.float64)
    per_item = reconstruction_loss(recon, target, reduction="none")
    assert per_item.shape == (4,)
    torch.testing.assert_close(per_item, torch.stack([mse_reference(recon[i], target[i]) for i in range(4)]))
    torch.testing.assert_close(per_item.mean(), reconstruction_loss(recon, target))
    torch.testing.assert_close(per_item.sum(), reconstruction_loss(recon, target, reduction="sum"))
    torch.testing.assert_close(AutoencoderLoss(reduction="none")({"x": recon}, {"x": target}), per_item)
    recons = {"image": recon, "audio": torch.randn(4, 5, dtype=torch.float64)}
    targets = {"image": target, "audio": torch.randn(4, 5, dtype=torch.float64)}
    weights = {"image": 0.25, "audio": 2.0}
    per_item = multimodal_reconstruction(recons, targets, weights=weights, reduction="none")
    ref = [
        sum(weights[m] * mse_reference(recons[m][i], targets[m][i]) for m in recons) / sum(weights.values())
        for i in range(4)
    ]
    torch.testing.assert_close(per_item, torch.stack(ref))
    torch.testing.assert_close(per_item.mean(), multimodal_reconstruction(recons, targets, weights=weights))
    torch.testing.assert_close(
        per_item.sum(), multimodal_reconstruction(recons, targets, weights=weights, reduction="sum")
    )
    torch.testing.assert_close(MultimodalReconstruction(weights=weights, reduction="none")(recons, targets), per_item)


def test_multimodal_reconstruction_properties():
    recons = {"a": torch.randn(3, 4, requires_grad=True), "b": torch.randn(3, 100, requires_grad=True)}
    targets = {"a": torch.randn(3, 4), "b": torch.randn(3, 100)}
    # scaling every weight changes nothing; the key order changes nothing
    torch.testing.assert_close(
        multimodal_reconstruction(recons, targets, weights={"a": 1.0, "b": 3.0}),
        multimodal_reconstruction(dict(reversed(recons.items())), targets, weights={"b": 6.0, "a": 2.0}),
    )
    # a modality weighted zero gets no gradient and does not count
    loss = multimodal_reconstruction(recons, targets, weights={"a": 1.0, "b": 0.0})
    torch.testing.assert_close(loss, F.mse_loss(recons["a"], targets["a"]))
    loss.backward()
    assert recons["b"].grad is None and recons["a"].grad.abs().sum() > 0
    # each modality is a mean over its own elements: the 100-wide one does not drown the 4-wide one
    small = {"a": targets["a"] + 1.0, "b": targets["b"].clone()}
    assert multimodal_reconstruction(small, targets).item() == pytest.approx(0.5)


def test_autoencoder_module_accepts_tensors_and_one_modality():
    recon, target = torch.randn(5, 3), torch.randn(5, 3)
    loss = AutoencoderLoss()
    torch.testing.assert_close(loss(recon, target), F.mse_loss(recon, target))
    torch.testing.assert_close(loss({"x": recon}, {"x": target}), F.mse_loss(recon, target))
    with pytest.raises(ValueError, match="multimodal_autoencoder"):
        loss({"x": recon, "y": recon}, {"x": target, "y": target})
    with pytest.raises(ValueError, match=r"missing \['x'\]; unexpected \['z'\]"):
        loss({"z": recon}, {"x": target})
    with pytest.raises(ValueError, match="both"):
        loss({"x": recon}, target)


@pytest.mark.parametrize(
    "recons, weights, match",
    [
        ({"image": torch.zeros(2, 3)}, None, r"missing \['audio'\]"),
        ({"image": torch.zeros(2, 3), "audio": torch.zeros(2, 4), "text": torch.zeros(2, 1)}, None,
         r"unexpected \['text'\]"),
        ({"image": torch.zeros(2, 3), "audio": torch.zeros(2, 5)}, None, r"modality 'audio'.*\(2, 5\) and \(2, 4\)"),
        ({"image": torch.zeros(2, 3), "audio": torch.zeros(2, 4)}, {"image": -1.0, "audio": 1.0},
         r"weights\['image'\].*-1.0"),
        ({"image": torch.zeros(2, 3), "audio": torch.zeros(2, 4)}, {"image": 0.0, "audio": 0.0}, "all be zero"),
        ({"image": torch.zeros(2, 3), "audio": torch.zeros(2, 4)}, {"image": 1.0}, r"weights.*missing \['audio'\]"),
        ({}, None, "non-empty"),
    ],
)
def test_multimodal_reconstruction_bad_arguments(recons, weights, match):
    targets = {"image": torch.zeros(2, 3), "audio": torch.zeros(2, 4)}
    with pytest.raises(ValueError, match=match):
        multimodal_reconstruction(recons, targets, weights=weights)


def test_multimodal_reconstruction_batch_sizes_must_agree():
    x = {"image": torch.zeros(2, 3), "audio": torch.zeros(3, 4)}
    with pytest.raises(ValueError, match="got 2 for 'image' and 3 for 'audio'"):
        multimodal_reconstruction(x, x)
    with pytest.raises(ValueError, match="-0.5"):
        MultimodalReconstruction(weights={"image": -0.5})


def test_specs_describe_working_modules():
    specs = {spec.name: spec for spec in SPECS}
    assert set(specs) == {"autoencoder", "multimodal_autoencoder"}
    for spec in SPECS:
        assert isinstance(spec, ObjectiveSpec) and spec.kind == "reconstruction" and not spec.uses_negatives
        assert spec.formula and "\n" not in spec.formula and spec.reference
    recons = {"image": torch.randn(2, 3), "audio": torch.randn(2, 4)}
    targets = {"image": torch.randn(2, 3), "audio": torch.randn(2, 4)}
    module = specs["multimodal_autoencoder"].factory(weights={"image": 2.0, "audio": 1.0})
    torch.testing.assert_close(
        module(recons, targets), multimodal_reconstruction(recons, targets, weights={"image": 2.0, "audio": 1.0})
    )
    single = specs["autoencoder"].factory()
    torch.testing.assert_close(single({"image": recons["image"]}, {"image": targets["image"]}),
                               F.mse_loss(recons["image"], targets["image"]))
