"""SupCon and the class-tower (cross-entropy) dual encoder, against loop references and the field's peers."""

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import NTXentLoss, SupConLoss
from torch import nn

from contrastlab.objectives._spec import ObjectiveSpec
from contrastlab.objectives.supcon import (
    SPECS,
    ClassTowerContrastive,
    SupCon,
    class_contrastive,
    class_logits,
    supcon,
)

# --------------------------------------------------------------------------- references (float64 loops)


def supcon_reference(features, labels, temperature, normalize=True, per_anchor_losses=False):
    """L^sup_out written from Khosla et al. eq. 2, one anchor and one positive at a time.

    ``per_anchor_losses``: every anchor's loss, ``(N, V)``, 0 where it has no positive.
    """
    n, v, _ = features.shape
    z = [features[i, a].double() for i in range(n) for a in range(v)]
    if normalize:
        z = [u / u.norm() for u in z]
    y = [int(labels[i]) if labels is not None else i for i in range(n) for _ in range(v)]
    per_anchor, every = [], []
    for i in range(n * v):
        positives = [p for p in range(n * v) if p != i and y[p] == y[i]]
        if not positives:
            every.append(torch.zeros((), dtype=torch.float64))
            continue
        denominator = sum(torch.exp(z[i] @ z[a] / temperature) for a in range(n * v) if a != i)
        terms = [torch.log(torch.exp(z[i] @ z[p] / temperature) / denominator) for p in positives]
        per_anchor.append(-sum(terms) / len(positives))
        every.append(per_anchor[-1])
    if per_anchor_losses:
        return torch.stack(every).reshape(n, v)
    return sum(per_anchor) / len(per_anchor)


def nt_xent_reference(z1, z2, temperature):
    """SimCLR's NT-Xent: 2N anchors, one positive each, the other 2N - 2 samples as negatives."""
    z = [u.double() / u.double().norm() for u in torch.cat([z1, z2])]
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        j = (i + n2 // 2) % n2
        denominator = sum(math.exp(float(z[i] @ z[k]) / temperature) for k in range(n2) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / temperature) / denominator)
    return total / n2


# --------------------------------------------------------------------------- supcon


@pytest.mark.parametrize(
    "n, v, labels",
    [(6, 2, None), (6, 2, [0, 1, 0, 2, 1, 0]), (5, 3, [3, 3, 3, 1, 1]), (7, 1, [0, 0, 1, 1, 1, 2, 2]), (4, 4, None)],
)
@pytest.mark.parametrize("normalize", [True, False])
def test_supcon_matches_loop_reference_value_and_gradient(n, v, labels, normalize):
    features = torch.randn(n, v, 5, dtype=torch.float64, requires_grad=True)
    y = None if labels is None else torch.tensor(labels)
    tau = 0.3
    ours = supcon(features, y, temperature=tau, normalize=normalize)
    (g_ours,) = torch.autograd.grad(ours, features)
    ref = supcon_reference(features, y, tau, normalize)
    (g_ref,) = torch.autograd.grad(ref, features)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-6, atol=1e-8)


def test_supcon_without_labels_is_nt_xent():
    z1, z2 = torch.randn(9, 16), torch.randn(9, 16)
    for tau in (0.07, 0.5, 2.0):
        ours = supcon(torch.stack([z1, z2], dim=1), temperature=tau)
        assert ours.item() == pytest.approx(nt_xent_reference(z1, z2, tau), rel=1e-5)


def test_supcon_without_labels_matches_pytorch_metric_learning_ntxent():
    z1, z2 = torch.randn(10, 8, dtype=torch.float64), torch.randn(10, 8, dtype=torch.float64)
    peer = NTXentLoss(temperature=0.2)(torch.cat([z1, z2]), torch.arange(10).repeat(2))
    ours = supcon(torch.stack([z1, z2], dim=1), temperature=0.2)
    torch.testing.assert_close(ours, peer, rtol=1e-6, atol=1e-8)


def test_supcon_with_labels_matches_pytorch_metric_learning_supcon():
    features = torch.randn(12, 2, 8, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 3, 3, 1, 4, 2])
    flat = features.reshape(24, 8)  # row i * V + view, like ours
    peer = SupConLoss(temperature=0.1)(flat, labels.repeat_interleave(2))
    ours = supcon(features, labels, temperature=0.1)
    torch.testing.assert_close(ours, peer, rtol=1e-6, atol=1e-8)


def test_supcon_closed_forms():
    n, tau = 4, 0.5
    eye = torch.eye(n, 8)  # orthogonal items, both views identical
    orthogonal = supcon(torch.stack([eye, eye], dim=1), temperature=tau)
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / tau))
    assert orthogonal.item() == pytest.approx(expected, rel=1e-6)
    collapsed = torch.ones(n, 2, 8)  # every embedding the same: log of the number of candidates
    assert supcon(collapsed, temperature=tau).item() == pytest.approx(math.log(2 * n - 1), rel=1e-6)
    same_class = supcon(collapsed, torch.zeros(n, dtype=torch.long), temperature=tau)
    assert same_class.item() == pytest.approx(math.log(2 * n - 1), rel=1e-6)


@pytest.mark.parametrize("case", ["identical", "antipodal", "collapsed"])
def test_supcon_finite_at_low_temperature_float32(case):
    z = F.normalize(torch.randn(8, 16), dim=1)
    second = {"identical": z, "antipodal": -z, "collapsed": torch.ones_like(z)}[case]
    first = torch.ones_like(z) if case == "collapsed" else z
    features = torch.stack([first, second], dim=1).requires_grad_()
    for labels in (None, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])):
        loss = supcon(features, labels, temperature=0.01)
        (grad,) = torch.autograd.grad(loss, features)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_supcon_invariances():
    features = torch.randn(7, 3, 6, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 2, 0, 2, 2])
    base = supcon(features, labels)
    perm = torch.randperm(7)
    torch.testing.assert_close(supcon(features[perm], labels[perm]), base)  # batch order
    torch.testing.assert_close(supcon(features[:, [2, 0, 1]], labels), base)  # view order
    torch.testing.assert_close(supcon(features, 10 + 3 * labels), base)  # label names
    torch.testing.assert_close(supcon(features * 7.5, labels), base)  # scale, when normalising
    unnormalised = supcon(features, labels, normalize=False)
    assert not torch.allclose(supcon(features * 7.5, labels, normalize=False), unnormalised)


def test_supcon_gradcheck():
    features = torch.randn(5, 2, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 1, 2])
    assert torch.autograd.gradcheck(lambda f: supcon(f, labels, temperature=0.2), (features,))
    assert torch.autograd.gradcheck(lambda f: supcon(f, None, temperature=0.2, normalize=False), (features,))


def test_supcon_tensor_temperature_receives_gradient():
    features = torch.randn(6, 2, 4)
    tau = torch.tensor(0.2, requires_grad=True)
    loss = supcon(features, temperature=tau)
    loss.backward()
    assert tau.grad is not None and torch.isfinite(tau.grad) and tau.grad != 0
    torch.testing.assert_close(loss.detach(), supcon(features, temperature=0.2))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f: supcon(f, temperature=0.0), "temperature"),
        (lambda f: supcon(f, temperature=-1.0), "-1.0"),
        (lambda f: supcon(f, temperature=float("nan")), "nan"),
        (lambda f: supcon(f[:, 0, 0]), r"\(N, D\) or \(N, V, D\)"),
        (lambda f: supcon(f[:, 0]), "no anchor has a positive"),
        (lambda f: supcon(f, reduction="avg"), "'avg'"),
        (lambda f: SupCon(reduction="avg"), "'avg'"),
        (lambda f: supcon(f[:1]), "got 1"),
        (lambda f: supcon(f, torch.tensor([0, 1])), r"\(4,\)"),
        (lambda f: supcon(f, torch.tensor([0.0, 1.0, 0.0, 1.0])), "integer"),
        (lambda f: supcon(f[:, :1]), "no anchor has a positive"),
        (lambda f: supcon(f[:, :1], torch.tensor([0, 1, 2, 3])), "no anchor has a positive"),
        (lambda f: SupCon(temperature=0), "temperature"),
    ],
)
def test_supcon_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.randn(4, 2, 3))


@pytest.mark.parametrize("labels", [[0, 1, 0, 2, 1, 0], [0, 1, 2, 3, 4, 4]])
def test_supcon_one_view_embeddings(labels):
    """(N, D) is one view: the positives are the other items of the class (pytorch-metric-learning's form)."""
    z, y = torch.randn(6, 5, dtype=torch.float64), torch.tensor(labels)
    torch.testing.assert_close(supcon(z, y, temperature=0.3), supcon(z[:, None], y, temperature=0.3))
    torch.testing.assert_close(supcon(z, y, temperature=0.3), supcon_reference(z[:, None], y, 0.3))
    torch.testing.assert_close(supcon(z, y, temperature=0.3), SupConLoss(temperature=0.3)(z, y))
    assert supcon(z, y, reduction="none").shape == (6,)


@pytest.mark.parametrize("labels", [None, [0, 1, 0, 2, 1, 0], [0, 1, 2, 3, 4, 5]])
def test_supcon_reduction(labels):
    """"none" gives every anchor's loss (0 without a positive); "mean" averages the anchors that have one."""
    f = torch.randn(6, 2, 4, dtype=torch.float64)
    y = None if labels is None else torch.tensor(labels)
    per_anchor = supcon(f, y, temperature=0.2, reduction="none")
    assert per_anchor.shape == (6, 2)
    torch.testing.assert_close(per_anchor, supcon_reference(f, y, 0.2, per_anchor_losses=True))
    torch.testing.assert_close(per_anchor.mean(), supcon(f, y, temperature=0.2))  # every anchor has a positive
    torch.testing.assert_close(per_anchor.sum(), supcon(f, y, temperature=0.2, reduction="sum"))
    torch.testing.assert_close(SupCon(temperature=0.2, reduction="none")(f, y), per_anchor)
    # one view, some classes once: their anchors are 0 in "none" and left out of "mean"
    z, y1 = f[:, 0], torch.tensor([0, 0, 1, 2, 3, 3])
    one = supcon(z, y1, temperature=0.2, reduction="none")
    assert one[2] == 0 and one[3] == 0 and bool((one[[0, 1, 4, 5]] > 0).all())
    torch.testing.assert_close(one.sum() / 4, supcon(z, y1, temperature=0.2))
    torch.testing.assert_close(one.sum(), supcon(z, y1, temperature=0.2, reduction="sum"))


def test_supcon_module_takes_a_temperature_per_call():
    f, y = torch.randn(6, 2, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    tau = torch.tensor(0.3, requires_grad=True)
    loss = SupCon(temperature=0.1)(f, y, temperature=tau)
    torch.testing.assert_close(loss, supcon(f, y, temperature=0.3))
    loss.backward()
    assert tau.grad is not None and tau.grad != 0
    torch.testing.assert_close(SupCon(temperature=torch.tensor(0.3))(f, y), supcon(f, y, temperature=0.3))


# --------------------------------------------------------------------------- class tower = cross-entropy


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 0.25])
def test_class_contrastive_is_cross_entropy_of_a_linear_classifier(use_bias, temperature):
    n, d, c = 11, 6, 4
    z = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(c, (n,))
    classifier = nn.Linear(d, c, bias=use_bias).double()
    w = classifier.weight.detach().clone().requires_grad_()
    b = classifier.bias.detach().clone().requires_grad_() if use_bias else None

    ours = class_contrastive(z, labels, w, bias=b, temperature=temperature)
    ce = F.cross_entropy(classifier(z) / temperature, labels)
    torch.testing.assert_close(ours, ce, rtol=1e-12, atol=1e-12)

    ours_grads = torch.autograd.grad(ours, [z, w] + ([b] if use_bias else []))
    ce_grads = torch.autograd.grad(ce, [z, classifier.weight] + ([classifier.bias] if use_bias else []))
    for g_ours, g_ce in zip(ours_grads, ce_grads):
        torch.testing.assert_close(g_ours, g_ce, rtol=1e-12, atol=1e-12)

    predictions = class_logits(z, w, bias=b, temperature=temperature).argmax(dim=1)
    assert torch.equal(predictions, classifier(z).argmax(dim=1))


def test_worked_answer_six_one_hot_tower_is_plain_cross_entropy():
    # f1(x) = g(x) in R^C, f2(c) = e_c: the scores g(x)^T e_c = g(x)[c] are the classifier's logits.
    g, labels = torch.randn(9, 5, dtype=torch.float64), torch.randint(5, (9,))
    one_hot_tower = torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(class_contrastive(g, labels, one_hot_tower), F.cross_entropy(g, labels))


def test_class_contrastive_with_views_uses_every_view_as_an_input():
    z, labels, w = torch.randn(4, 3, 5), torch.tensor([2, 0, 1, 2]), torch.randn(3, 5)
    flat = F.cross_entropy(z.reshape(12, 5) @ w.T, labels.repeat_interleave(3))
    torch.testing.assert_close(class_contrastive(z, labels, w), flat)
    assert class_logits(z, w).shape == (4, 3, 3)


def test_class_tower_module_trains_exactly_like_a_linear_classifier():
    torch.manual_seed(3)
    n, d, c = 32, 8, 5
    x, labels = torch.randn(n, 12, dtype=torch.float64), torch.randint(c, (n,))
    encoder_a = nn.Linear(12, d).double()
    encoder_b = nn.Linear(12, d).double()
    encoder_b.load_state_dict(encoder_a.state_dict())
    tower = ClassTowerContrastive(c, d).double()
    classifier = nn.Linear(d, c).double()
    with torch.no_grad():
        classifier.weight.copy_(tower.class_embeddings)
        classifier.bias.copy_(tower.bias)
    opt_a = torch.optim.SGD([*encoder_a.parameters(), *tower.parameters()], lr=0.5)
    opt_b = torch.optim.SGD([*encoder_b.parameters(), *classifier.parameters()], lr=0.5)
    for _ in range(20):
        opt_a.zero_grad(), opt_b.zero_grad()
        tower(encoder_a(x), labels).backward()
        F.cross_entropy(classifier(encoder_b(x)), labels).backward()
        opt_a.step(), opt_b.step()
    torch.testing.assert_close(tower.class_embeddings, classifier.weight, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tower.bias, classifier.bias, rtol=1e-10, atol=1e-12)
    assert torch.equal(tower.predict(encoder_a(x)), classifier(encoder_b(x)).argmax(dim=1))
    assert (tower.predict(encoder_a(x)) == labels).float().mean() > 0.5  # it learned (chance is 0.2)


def test_class_tower_is_the_one_hot_linear_map():
    tower = ClassTowerContrastive(4, 3, bias=False)
    labels = torch.tensor([3, 0, 0, 2])
    torch.testing.assert_close(tower.class_tower(labels), tower.class_embeddings[labels])
    assert tower.bias is None and len(list(tower.parameters())) == 1


@pytest.mark.parametrize("case", ["identical", "antipodal", "collapsed"])
def test_class_contrastive_finite_at_low_temperature_float32(case):
    w = F.normalize(torch.randn(4, 16), dim=1)
    z = {"identical": w[[0, 1, 2, 3, 0]], "antipodal": -w[[0, 1, 2, 3, 0]], "collapsed": torch.ones(5, 16)}[case]
    z, w = z.clone().requires_grad_(), w.clone().requires_grad_()
    loss = class_contrastive(z, torch.tensor([0, 1, 2, 3, 0]), w, temperature=0.01)
    grads = torch.autograd.grad(loss, [z, w])
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: class_contrastive(torch.randn(3, 4), torch.tensor([0, 1, 3]), torch.randn(3, 4)), "got label 3"),
        (lambda: class_contrastive(torch.randn(3, 4), torch.tensor([0, -1, 1]), torch.randn(3, 4)), "got label -1"),
        (lambda: class_contrastive(torch.randn(3, 4), torch.tensor([0, 1]), torch.randn(3, 4)), r"\(3,\)"),
        (lambda: class_contrastive(torch.randn(3, 4), torch.tensor([0, 1, 2]), torch.randn(3, 5)), "dimension D"),
        (lambda: class_logits(torch.randn(3, 4), torch.randn(3, 4), bias=torch.randn(2)), r"\(3,\)"),
        (lambda: class_logits(torch.randn(3, 4), torch.randn(3, 4), temperature=0), "temperature"),
        (lambda: class_logits(torch.randn(4), torch.randn(3, 4)), r"\(4,\)"),
        (lambda: ClassTowerContrastive(1, 4), "num_classes"),
        (lambda: ClassTowerContrastive(3, 0), "dim"),
        (lambda: ClassTowerContrastive(3, 4, temperature=-0.1), "-0.1"),
    ],
)
def test_class_contrastive_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------- registry entries


def test_specs_describe_working_modules():
    specs = {spec.name: spec for spec in SPECS}
    assert set(specs) == {"supcon", "class_contrastive"}
    for spec in SPECS:
        assert isinstance(spec, ObjectiveSpec) and spec.kind == "supervised"
        assert spec.formula and "\n" not in spec.formula and spec.reference
    z, labels = torch.randn(6, 2, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    supcon_module = specs["supcon"].factory(temperature=0.2)
    torch.testing.assert_close(supcon_module(z, labels), supcon(z, labels, temperature=0.2))
    tower = specs["class_contrastive"].factory(num_classes=3, dim=8)
    expected = class_contrastive(z, labels, tower.class_embeddings, bias=tower.bias)
    torch.testing.assert_close(tower(z, labels), expected)
    assert specs["supcon"].uses_negatives and not specs["class_contrastive"].uses_negatives


def test_class_contrastive_reduction():
    w, y = torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 2, 1, 0, 2])
    for shape in ((5,), (5, 2)):
        z = torch.randn(*shape, 4, dtype=torch.float64)
        per_input = class_contrastive(z, y, w, temperature=0.5, reduction="none")
        assert per_input.shape == shape
        torch.testing.assert_close(per_input.mean(), class_contrastive(z, y, w, temperature=0.5))
        torch.testing.assert_close(per_input.sum(), class_contrastive(z, y, w, temperature=0.5, reduction="sum"))
    head = ClassTowerContrastive(3, 4, reduction="none")
    z = torch.randn(5, 4)
    expected = class_contrastive(z, y, head.class_embeddings, bias=head.bias, reduction="none")
    torch.testing.assert_close(head(z, y), expected)
    with pytest.raises(ValueError, match="'avg'"):
        ClassTowerContrastive(3, 4, reduction="avg")
