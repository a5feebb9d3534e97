from importlib import import_module

import pytest
import torch

from contrastlab.objectives import registry
from contrastlab.objectives._spec import ObjectiveSpec
from contrastlab.objectives.info_nce import InfoNCE, info_nce
from contrastlab.objectives.multiview import SPECS, MultiViewObjective, core_view, full_graph

# The modules by their import path: the package attribute ``contrastlab.objectives.info_nce`` is the function.
info_nce_module = import_module("contrastlab.objectives.info_nce")
multiview_module = import_module("contrastlab.objectives.multiview")

DT = torch.float64


@pytest.fixture
def registered(monkeypatch):
    """The registry with this piece's pairwise and multi-view objectives (independent of registry._MODULES)."""
    for spec in info_nce_module.SPECS + multiview_module.SPECS:
        monkeypatch.setitem(registry.OBJECTIVES, spec.name, spec)
    return registry.OBJECTIVES


def _views(m, n=5, d=4):
    return [torch.randn(n, d, dtype=DT) for _ in range(m)]


class Spy:
    """A pairwise loss that records which views it was called with; the loss is a distinct number per pair."""

    def __init__(self, views):
        self.ids = {id(v): k for k, v in enumerate(views)}
        self.calls = []

    def __call__(self, a, b):
        i, j = self.ids[id(a)], self.ids[id(b)]
        self.calls.append((i, j))
        return (a - b).square().mean() + 10.0 ** (i + 2 * j)


@pytest.mark.parametrize("m", [2, 3, 5])
def test_core_view_and_full_graph_call_the_right_pairs(m):
    views = _views(m)
    spy = Spy(views)
    core = core_view(views, spy)
    assert spy.calls == [(0, j) for j in range(1, m)]
    torch.testing.assert_close(core, sum(spy(views[0], views[j]) for j in range(1, m)))
    spy.calls.clear()
    full = full_graph(views, spy)
    assert spy.calls == [(i, j) for i in range(m) for j in range(i + 1, m)]
    assert len(spy.calls) == m * (m - 1) // 2
    torch.testing.assert_close(full, sum(spy(views[i], views[j]) for i in range(m) for j in range(i + 1, m)))
    torch.testing.assert_close(full_graph(views, spy, reduction="mean"), full / (m * (m - 1) // 2))
    torch.testing.assert_close(core_view(views, spy, reduction="mean"), core / (m - 1))


def test_two_views_core_equals_full():
    views = _views(2)
    pairwise = lambda a, b: info_nce(a, b, symmetric=True)  # noqa: E731
    torch.testing.assert_close(core_view(views, pairwise), full_graph(views, pairwise))
    torch.testing.assert_close(core_view(views, pairwise), pairwise(*views))


def ref_cmc_full_graph(views, tau):
    """Full graph of CMC two-way k-pair losses with in-batch negatives; loops over views and anchors."""
    def unit(v):
        return v / torch.sqrt((v * v).sum())

    def one_way(a, b):
        n = a.shape[0]
        total = 0.0
        for i in range(n):
            logits = [(unit(a[i]) * unit(b[j])).sum() / tau for j in range(n)]
            total = total - logits[i] + torch.log(sum(torch.exp(s) for s in logits))
        return total / n

    m = len(views)
    return sum((one_way(views[i], views[j]) + one_way(views[j], views[i])) / 2 for i in range(m) for j in range(i + 1, m))


def test_full_graph_with_clip_matches_loop_reference():
    views = [v.requires_grad_(True) for v in _views(3, n=4, d=3)]
    fast = full_graph(views, lambda a, b: info_nce(a, b, temperature=0.3, symmetric=True))
    slow = ref_cmc_full_graph(views, 0.3)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=0)
    for g1, g2 in zip(torch.autograd.grad(fast, views), torch.autograd.grad(slow, views)):
        torch.testing.assert_close(g1, g2, atol=1e-6, rtol=0)


def test_gradcheck_and_gradient_reaches_every_view():
    views = tuple(v.requires_grad_(True) for v in _views(3, n=4, d=3))
    pairwise = lambda a, b: info_nce(a, b, temperature=0.5, symmetric=True)  # noqa: E731
    assert torch.autograd.gradcheck(lambda *v: core_view(v, pairwise), views)
    assert torch.autograd.gradcheck(lambda *v: full_graph(v, pairwise), views)
    grads = torch.autograd.grad(core_view(views, pairwise), views)
    assert all(g.abs().sum() > 0 for g in grads)


def test_permutation_invariance_and_view_order():
    views = _views(4, n=8)
    p = torch.randperm(8)
    pairwise = lambda a, b: info_nce(a, b, symmetric=True)  # noqa: E731
    for combine in (core_view, full_graph):
        torch.testing.assert_close(combine(views, pairwise), combine([v[p] for v in views], pairwise))
    # with a symmetric pairwise loss, the full graph does not depend on the order of the views
    torch.testing.assert_close(full_graph(views, pairwise), full_graph(views[::-1], pairwise))
    # the core view does: view 0 is special
    assert not torch.isclose(core_view(views, pairwise), core_view(views[::-1], pairwise))


def test_bad_views():
    with pytest.raises(ValueError, match="at least 2 views, got 1"):
        core_view(_views(1), lambda a, b: a.sum())
    with pytest.raises(ValueError, match="at least 2 views, got 0"):
        full_graph([], lambda a, b: a.sum())
    with pytest.raises(ValueError, match=r"\(5, 4\) and \(3, 4\)"):
        full_graph([torch.randn(5, 4), torch.randn(3, 4)], lambda a, b: a.sum())
    with pytest.raises(ValueError, match="'max'"):
        core_view(_views(2), lambda a, b: a.sum(), reduction="max")


def test_module_by_name_forwards_options(registered):
    views = _views(3)
    objective = MultiViewObjective("info_nce", mode="full_graph", temperature=0.2, symmetric=True)
    assert isinstance(objective.pairwise, InfoNCE)
    expected = full_graph(views, lambda a, b: info_nce(a, b, temperature=0.2, symmetric=True))
    torch.testing.assert_close(objective(views), expected)
    by_name = {f"v{k}": v for k, v in enumerate(views)}
    torch.testing.assert_close(objective(by_name), expected)
    torch.testing.assert_close(
        MultiViewObjective(mode="core_view")(views), core_view(views, lambda a, b: info_nce(a, b))
    )


def test_module_with_a_callable():
    views = _views(3)
    module = InfoNCE(symmetric=True)
    objective = MultiViewObjective(module, mode="core_view", reduction="mean")
    assert objective.pairwise is module
    torch.testing.assert_close(objective(views), core_view(views, module, reduction="mean"))
    with pytest.raises(ValueError, match="temperature"):
        MultiViewObjective(module, temperature=0.1)


def test_module_bad_options(registered, monkeypatch):
    with pytest.raises(ValueError, match="'star'"):
        MultiViewObjective(lambda a, b: a.sum(), mode="star")
    with pytest.raises(ValueError, match="'max'"):
        MultiViewObjective(lambda a, b: a.sum(), reduction="max")
    with pytest.raises(ValueError, match="info_ncee"):
        MultiViewObjective("info_ncee")
    with pytest.raises(ValueError, match="bad options"):
        MultiViewObjective("info_nce", margin=0.2)
    with pytest.raises(ValueError, match="temperature"):
        MultiViewObjective("info_nce", temperature=-1.0)
    with pytest.raises(ValueError, match="kind 'multiview'"):
        MultiViewObjective("cmc_core_view")
    with pytest.raises(ValueError, match="objective name or a callable"):
        MultiViewObjective(3)
    with pytest.raises(ValueError, match="at least 2 views"):
        MultiViewObjective(lambda a, b: a.sum())(_views(1))
    fake = ObjectiveSpec("fake_supervised", lambda: torch.nn.Identity(), "supervised", "f", "r")
    monkeypatch.setitem(registry.OBJECTIVES, "fake_supervised", fake)
    with pytest.raises(ValueError, match="kind 'supervised'"):
        MultiViewObjective("fake_supervised")


def test_specs_build_working_multiview_modules(registered):
    specs = {s.name: s for s in SPECS}
    assert set(specs) == {"cmc_core_view", "cmc_full_graph"}
    views = _views(4)
    clip = lambda a, b: info_nce(a, b, temperature=0.07, symmetric=True)  # noqa: E731
    for spec, combine in ((specs["cmc_core_view"], core_view), (specs["cmc_full_graph"], full_graph)):
        assert spec.kind == "multiview" and "\n" not in spec.formula and spec.reference
        module = registry.build_objective(spec.name)
        assert isinstance(module, torch.nn.Module)
        torch.testing.assert_close(module(views), combine(views, clip))  # default pairwise: CLIP's two-way loss
        other = spec.factory(pairwise="nt_xent", temperature=0.5, reduction="mean")
        torch.testing.assert_close(other(views), combine(views, info_nce_module.NTXent(temperature=0.5), reduction="mean"))


def test_a_temperature_per_call_reaches_every_pairwise_loss():
    views = _views(3)
    tau = torch.tensor(0.3, dtype=DT, requires_grad=True)
    objective = MultiViewObjective(InfoNCE(temperature=0.1, symmetric=True), mode="full_graph")
    loss = objective(views, temperature=tau)
    torch.testing.assert_close(
        loss, full_graph(views, lambda a, b: info_nce(a, b, temperature=0.3, symmetric=True))
    )
    loss.backward()
    assert tau.grad is not None and tau.grad != 0
    torch.testing.assert_close(objective(views), full_graph(views, InfoNCE(temperature=0.1, symmetric=True)))
