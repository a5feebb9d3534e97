"""``contrastlab.losses``: every name imports, function = module, one vocabulary, the docs' loop runs."""

import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from pytorch_metric_learning import distances, reducers
from pytorch_metric_learning import losses as pml

from contrastlab import losses

ROOT = Path(__file__).resolve().parents[1]
DT = torch.float64
N, D = 6, 5


def _inputs():
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=DT)  # noqa: E731
    z1, z2 = r(N, D), r(N, D)
    return {
        "z1": z1,
        "z2": z1 + 0.5 * r(N, D),  # positives closer than negatives, so margins are partly active
        "views": [z1, z2, r(N, D)],
        "stack": torch.stack([z1, z2], dim=1),
        "labels": torch.tensor([0, 1, 0, 2, 1, 2]),
        "p1": r(N, D), "p2": r(N, D),
        "w": r(3, D),
        "recons": {"image": r(N, 2, 3), "audio": r(N, 4)},
        "targets": {"image": r(N, 2, 3), "audio": r(N, 4)},
    }


X = _inputs()


@dataclass
class Case:
    """A loss called as a function and as its module on the same inputs."""

    fn: Callable
    module: Callable[..., torch.nn.Module]
    args: tuple
    fn_kwargs: dict = field(default_factory=dict)
    module_kwargs: dict | None = None  #: None: the same as fn_kwargs
    call_args: tuple | None = None  #: the module's call, if it differs from args
    none_shape: Any = None  #: shape of reduction="none"; "batch": a batch statistic (only "mean")
    expected: Callable[[torch.nn.Module], Any] | None = None  #: the function's value, given the built module


def _class_tower(module):
    return losses.class_contrastive(X["z1"], X["labels"], module.class_embeddings, bias=module.bias)


PAIR = (X["z1"], X["z2"])
L = losses


def _multiview(mode):
    return lambda **k: L.MultiViewObjective(L.InfoNCE(symmetric=True), mode=mode, **k)


CASES = {
    "info_nce": Case(L.info_nce, L.InfoNCE, PAIR, dict(temperature=0.2, symmetric=True), none_shape=(N,)),
    "info_nce/queue": Case(
        L.info_nce, L.InfoNCE, PAIR, dict(temperature=0.2, negatives=X["p1"]), module_kwargs=dict(temperature=0.2),
        call_args=(*PAIR, X["p1"]), none_shape=(N,),
    ),
    "nt_xent": Case(L.nt_xent, L.NTXent, PAIR, dict(temperature=0.3), none_shape=(2 * N,)),
    "dcl": Case(L.dcl, L.DCL, PAIR, dict(temperature=0.3), none_shape=(2 * N,)),
    "dclw": Case(
        L.dcl, L.DCLW, PAIR, dict(temperature=0.3, weight_sigma=0.5), module_kwargs=dict(temperature=0.3, sigma=0.5),
        none_shape=(2 * N,),
    ),
    "nce": Case(L.nce, L.NCE, PAIR, dict(temperature=0.3, symmetric=True), none_shape=(N,)),
    "siglip": Case(
        L.siglip, L.SigLIP, PAIR, dict(logit_scale=10.0, logit_bias=-5.0), module_kwargs={},
        call_args=(*PAIR, 10.0, -5.0), none_shape=(N,),
    ),
    "triplet_margin": Case(L.triplet_margin, L.Triplet, PAIR, dict(margin=0.5, sampler="hardest+all"), none_shape=(N,)),
    "triplet_margin/labels": Case(
        L.triplet_margin, L.Triplet, (X["z1"], X["labels"]), dict(margin=0.5, sampler="semi_hard"), none_shape=(N,)
    ),
    "vse_hinge": Case(L.vse_hinge, L.VSEHinge, PAIR, dict(margin=0.5), none_shape=(N,)),
    "vse_hinge/max": Case(L.vse_hinge, L.VSEHinge, PAIR, dict(margin=0.5, max_violation=True), none_shape=(N,)),
    "align_loss": Case(L.align_loss, L.AlignLoss, PAIR, dict(alpha=1.5, normalize=True), none_shape=(N,)),
    "uniform_loss": Case(L.uniform_loss, L.UniformLoss, (X["z1"],), dict(t=2.0, normalize=True), none_shape="batch"),
    "align_uniform": Case(L.align_uniform, L.AlignUniform, PAIR, dict(weight=0.5), none_shape="batch"),
    "contrastive_align_uniform": Case(
        L.contrastive_align_uniform, L.ContrastiveAlignUniform, PAIR, dict(temperature=0.3), none_shape="batch"
    ),
    "contrastive_align_uniform/no_uniformity": Case(
        L.contrastive_align_uniform, L.ContrastiveAlignUniform, PAIR,
        dict(temperature=0.3, uniform_weight=0.0, symmetric=True), none_shape=(N,),
    ),
    "core_view": Case(L.core_view, _multiview("core_view"), (X["views"], L.InfoNCE(symmetric=True)),
                      call_args=(X["views"],)),
    "full_graph": Case(L.full_graph, _multiview("full_graph"), (X["views"], L.InfoNCE(symmetric=True)),
                       dict(reduction="mean"), call_args=(X["views"],)),
    "supcon": Case(L.supcon, L.SupCon, (X["stack"], X["labels"]), dict(temperature=0.2), none_shape=(N, 2)),
    "supcon/one_view": Case(L.supcon, L.SupCon, (X["z1"], X["labels"]), dict(temperature=0.2), none_shape=(N,)),
    "class_contrastive": Case(
        L.class_contrastive, lambda **k: L.ClassTowerContrastive(3, D, **k).double(), (X["z1"], X["labels"], X["w"]),
        module_kwargs={}, call_args=(X["z1"], X["labels"]), none_shape=(N,), expected=_class_tower,
    ),
    "dcca_loss": Case(L.dcca_loss, L.DCCALoss, PAIR, dict(reg=1e-2), none_shape="batch"),
    "barlow_twins": Case(L.barlow_twins, L.BarlowTwinsLoss, PAIR, none_shape="batch"),
    "vicreg": Case(L.vicreg, L.VICRegLoss, PAIR, none_shape="batch"),
    "negative_cosine": Case(L.negative_cosine, L.NegativeCosine, (X["p1"], X["z1"]), none_shape=(N,)),
    "simsiam_loss": Case(L.simsiam_loss, L.SimSiamLoss, (X["p1"], X["p2"], *PAIR), none_shape=(N,)),
    "byol_loss": Case(L.byol_loss, L.BYOLLoss, (X["p1"], X["p2"], *PAIR), none_shape=(N,)),
    "reconstruction_loss": Case(
        L.reconstruction_loss, L.AutoencoderLoss, (X["recons"]["image"], X["targets"]["image"]), none_shape=(N,)
    ),
    "multimodal_reconstruction": Case(
        L.multimodal_reconstruction, L.MultimodalReconstruction, (X["recons"], X["targets"]),
        dict(weights={"image": 1.0, "audio": 3.0}), none_shape=(N,),
    ),
}


def _function(case: Case, **extra):
    return case.fn(*case.args, **case.fn_kwargs, **extra)


def _module(case: Case, **extra):
    kwargs = case.fn_kwargs if case.module_kwargs is None else case.module_kwargs
    return case.module(**kwargs, **extra)


def _per_sample_cases():
    return [name for name, case in CASES.items() if isinstance(case.none_shape, tuple)]


# ---------------------------------------------------------------- names


def test_every_name_in_all_imports_and_is_the_objectives_one():
    objectives = importlib.import_module("contrastlab.objectives")
    assert len(losses.__all__) == len(set(losses.__all__))
    namespace = {}
    exec("from contrastlab.losses import *", namespace)
    for name in losses.__all__:
        assert name in namespace, name
        assert getattr(losses, name) is getattr(objectives, name), name
    public = {n for n in dir(losses) if not n.startswith("_") and n != "annotations"}
    assert public == set(losses.__all__), public ^ set(losses.__all__)


def test_every_loss_in_all_has_a_case_here():
    """A new loss in the public list needs its function = module and reduction checks below."""
    functions = {case.fn for case in CASES.values()}
    modules = {type(_module(case)) for case in CASES.values()}
    for name in losses.__all__:
        obj = getattr(losses, name)
        if obj is losses.LearnableTemperature:
            continue
        if inspect.isclass(obj):
            assert obj in modules, f"{name} has no case in CASES"
        else:
            assert obj in functions, f"{name} has no case in CASES"


def test_the_docstring_table_lists_every_loss():
    doc = losses.__doc__
    for name in losses.__all__:
        assert re.search(rf"\b{name}\b", doc), name


def test_objectives_exports_the_functions_and_keeps_its_modules():
    from contrastlab.objectives import info_nce as fn
    from contrastlab.objectives import siglip as siglip_fn
    from contrastlab.objectives import supcon as supcon_fn

    assert callable(fn) and fn is losses.info_nce and not inspect.ismodule(fn)
    assert supcon_fn is losses.supcon and siglip_fn is losses.siglip
    z = torch.eye(4)
    assert round(float(fn(z, z, temperature=1.0)), 4) == 0.7437
    # the files stay modules, through the import system
    from contrastlab.objectives.info_nce import SPECS, TILED_THRESHOLD

    module = importlib.import_module("contrastlab.objectives.info_nce")
    assert inspect.ismodule(module) and module.TILED_THRESHOLD == TILED_THRESHOLD and module.SPECS is SPECS
    assert module.info_nce is fn
    # in a fresh interpreter, whichever is imported first
    code = (
        "import contrastlab.objectives.supcon, contrastlab.losses\n"
        "from contrastlab.objectives import supcon, info_nce, nce, align_uniform, siglip\n"
        "assert all(callable(f) and not hasattr(f, '__path__') and type(f).__name__ == 'function'\n"
        "           for f in (supcon, info_nce, nce, align_uniform, siglip))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})


# ---------------------------------------------------------------- function = module


@pytest.mark.parametrize("name", list(CASES))
def test_function_and_module_give_the_same_value(name):
    case = CASES[name]
    module = _module(case)
    assert isinstance(module, torch.nn.Module)
    got = module(*(case.call_args or case.args))
    expected = case.expected(module) if case.expected else _function(case)
    assert got.dim() == 0
    torch.testing.assert_close(got, expected)


# ---------------------------------------------------------------- reduction


@pytest.mark.parametrize("name", _per_sample_cases())
def test_reduction_none_averages_to_the_mean_and_sums_to_the_sum(name):
    case = CASES[name]
    per_sample = _function(case, reduction="none")
    assert per_sample.shape == case.none_shape
    torch.testing.assert_close(per_sample.mean(), _function(case))
    torch.testing.assert_close(per_sample.sum(), _function(case, reduction="sum"))
    if case.expected is None:
        torch.testing.assert_close(_module(case, reduction="none")(*(case.call_args or case.args)), per_sample)
    with pytest.raises(ValueError, match="'avg'"):
        _function(case, reduction="avg")
    with pytest.raises(ValueError, match="'avg'"):
        _module(case, reduction="avg")


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.none_shape == "batch"])
def test_batch_statistics_have_no_per_sample_form(name):
    case = CASES[name]
    if "reduction" not in inspect.signature(case.fn).parameters:
        assert "no per-item" in inspect.getdoc(case.fn) or "batch" in inspect.getdoc(case.fn)
        return
    torch.testing.assert_close(_function(case, reduction="mean"), _function(case))
    for reduction in ("none", "sum"):
        with pytest.raises(ValueError, match="no per-sample losses"):
            _function(case, reduction=reduction)
        with pytest.raises(ValueError, match="no per-sample losses"):
            _module(case, reduction=reduction)


def test_multiview_reduction_is_over_pairs_of_views():
    views, pair = X["views"], losses.InfoNCE(symmetric=True)
    each = [pair(views[0], views[1]), pair(views[0], views[2])]
    torch.testing.assert_close(losses.core_view(views, pair), each[0] + each[1])
    torch.testing.assert_close(losses.core_view(views, pair, reduction="mean"), (each[0] + each[1]) / 2)


# ---------------------------------------------------------------- symmetric, temperature, labels


@pytest.mark.parametrize("fn, kwargs", [
    (losses.info_nce, dict(temperature=0.2)),
    (losses.nce, dict(temperature=0.3, offset=0.4)),
    (losses.vse_hinge, dict(margin=0.5)),
    (losses.vse_hinge, dict(margin=0.5, max_violation=True)),
    (losses.contrastive_align_uniform, dict(temperature=0.3)),
])
def test_symmetric_is_the_mean_of_the_two_directions(fn, kwargs):
    z1, z2 = X["z1"], X["z2"]
    one, other = fn(z1, z2, symmetric=False, **kwargs), fn(z2, z1, symmetric=False, **kwargs)
    if fn is losses.contrastive_align_uniform:  # only the contrastive term has directions
        rest = fn(z1, z2, contrastive_weight=0.0, **kwargs)
        one, other = one - rest, other - rest
        torch.testing.assert_close(fn(z1, z2, symmetric=True, **kwargs) - rest, (one + other) / 2)
        return
    torch.testing.assert_close(fn(z1, z2, symmetric=True, **kwargs), (one + other) / 2)
    torch.testing.assert_close(fn(z1, z2, symmetric=True, **kwargs), fn(z2, z1, symmetric=True, **kwargs))


def test_triplet_bidirectional_is_the_sum_of_the_two_directions():
    z1, z2 = X["z1"], X["z2"]
    one = losses.triplet_margin(z1, z2, margin=0.5, sampler="all", bidirectional=False)
    other = losses.triplet_margin(z2, z1, margin=0.5, sampler="all", bidirectional=False)
    torch.testing.assert_close(losses.triplet_margin(z1, z2, margin=0.5, sampler="all"), one + other)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if "temperature" in inspect.signature(c.fn).parameters])
def test_a_tensor_temperature_gets_a_gradient_through_function_and_module(name):
    case = CASES[name]
    tau = torch.tensor(0.3, dtype=DT, requires_grad=True)
    kwargs = {**case.fn_kwargs, "temperature": tau}
    loss = case.fn(*case.args, **kwargs)
    (grad,) = torch.autograd.grad(loss, tau)
    assert torch.isfinite(grad) and grad != 0
    module = _module(case)
    if "temperature" in inspect.signature(module.forward).parameters:
        torch.testing.assert_close(module(*(case.call_args or case.args), temperature=tau), loss)


def test_learnable_temperature_is_re_exported_and_clamps_after_the_step():
    from contrastlab.objectives.temperature import LearnableTemperature

    assert losses.LearnableTemperature is LearnableTemperature
    temp = losses.LearnableTemperature(init=0.07, max_scale=100.0)
    with torch.no_grad():
        temp.log_scale.fill_(10.0)
    assert temp.clamp_()().item() == pytest.approx(0.01)


def test_labels_form_matches_pytorch_metric_learning():
    """The docs' mapping table, checked: PML's (embeddings, labels) losses and ours."""
    z, y = X["z1"], torch.tensor([0, 0, 0, 1, 1, 1])
    torch.testing.assert_close(losses.supcon(z, y, temperature=0.2), pml.SupConLoss(temperature=0.2)(z, y))
    stack, y2 = X["stack"], X["labels"]
    torch.testing.assert_close(
        losses.supcon(stack, y2, temperature=0.2),
        pml.SupConLoss(temperature=0.2)(stack.reshape(2 * N, D), y2.repeat_interleave(2)),
    )
    torch.testing.assert_close(
        losses.nt_xent(X["z1"], X["z2"], temperature=0.3),
        pml.NTXentLoss(temperature=0.3)(torch.cat([X["z1"], X["z2"]]), torch.arange(N).repeat(2)),
    )
    triplets = pml.TripletMarginLoss(margin=0.3, distance=distances.CosineSimilarity(), reducer=reducers.MeanReducer())
    torch.testing.assert_close(losses.triplet_margin(z, y, margin=0.3, sampler="all"), triplets(z, y))


def test_clip_and_siglip_match_open_clip_when_installed():
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "loss.py"
    loader = importlib.util.spec_from_file_location("_open_clip_loss", path)  # its package needs torchvision
    open_clip_loss = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(open_clip_loss)
    img = torch.nn.functional.normalize(X["z1"], dim=1)
    txt = torch.nn.functional.normalize(X["z2"], dim=1)
    scale, bias = torch.tensor(14.0, dtype=DT), torch.tensor(-3.0, dtype=DT)
    torch.testing.assert_close(
        losses.info_nce(img, txt, temperature=1 / scale, symmetric=True, normalize=False),
        open_clip_loss.ClipLoss()(img, txt, scale),
    )
    torch.testing.assert_close(
        losses.siglip(img, txt, logit_scale=scale, logit_bias=bias, normalize=False),
        open_clip_loss.SigLipLoss()(img, txt, scale, bias),
    )


# ---------------------------------------------------------------- the docs' training loop


def _docs_loop() -> str:
    text = (ROOT / "docs" / "LOSSES.md").read_text()
    section = text.split("## A training loop", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "docs/LOSSES.md has no python block under '## A training loop'"
    return match.group(1)


def test_docs_training_loop_runs_and_its_loss_falls():
    code = _docs_loop()
    assert "losses.LearnableTemperature" in code and "temperature.clamp_()" in code and "optimizer.step()" in code
    script = code + "\nimport json\nprint(json.dumps(history))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    history = json.loads(lines[-1])
    assert lines[0].startswith("loss ") and len(history) >= 100
    first, last = sum(history[:20]) / 20, sum(history[-20:]) / 20
    assert last < 0.5 * first, (first, last)


def test_the_docs_first_example_runs():
    text = (ROOT / "docs" / "LOSSES.md").read_text()
    first = re.search(r"```python\n(.*?)```", text, flags=re.S).group(1)
    assert "## A training loop" not in text.split(first)[0]
    namespace = {}
    exec(first, namespace)
    z1, z2 = namespace["z1"], namespace["z2"]
    torch.testing.assert_close(namespace["loss_fn"](z1, z2), losses.info_nce(z1, z2, temperature=0.07, symmetric=True))
