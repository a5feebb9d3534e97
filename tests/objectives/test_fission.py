"""Fission (shared + private codes) and the multimodal clustering objective, against float64 references."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastlab.encoders.coordination import GatedCoordination
from contrastlab.objectives.fission import Fission, MultimodalClustering, cross_correlation_overlap, sinkhorn, split_code
from contrastlab.outputs import Outputs


def _overlap_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared Pearson correlation over every (column of a, column of b), with numpy's corrcoef."""
    total = 0.0
    for j in range(a.shape[1]):
        for k in range(b.shape[1]):
            total += np.corrcoef(a[:, j], b[:, k])[0, 1] ** 2
    return total / (a.shape[1] * b.shape[1])


def test_overlap_is_the_mean_squared_correlation():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 3, generator=g, dtype=torch.float64)
    b = torch.randn(50, 4, generator=g, dtype=torch.float64) + a[:, :1]
    assert float(cross_correlation_overlap(a, b, eps=0.0)) == pytest.approx(_overlap_reference(a.numpy(), b.numpy()), abs=1e-12)


def test_overlap_is_scale_free_and_zero_for_orthogonal_columns():
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    b = torch.tensor([[0.0], [0.0], [1.0], [-1.0]], dtype=torch.float64)
    assert float(cross_correlation_overlap(a[:, :1], b)) == pytest.approx(0.0, abs=1e-12)
    assert float(cross_correlation_overlap(a, 5 * b, eps=0.0)) == pytest.approx(float(cross_correlation_overlap(a, b, eps=0.0)), abs=1e-12)


def test_overlap_gradcheck():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(12, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(12, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: cross_correlation_overlap(x, y), (a, b))


def _outputs(n=16, d=10, seed=0, recon=True):
    g = torch.Generator().manual_seed(seed)
    z = {"image": torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True),
         "text": torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)}
    recons = {"image": torch.randn(n, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)} if recon else {}
    clean = {"image": torch.rand(n, 3, 4, 4, generator=g, dtype=torch.float64)} if recon else {}
    return Outputs(z, ("image", "text"), {"image": "image", "text": "text"}, reconstructions=recons, clean=clean)


def _fission_reference(out: Outputs, shared: int, tau: float, w=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """The lecture's L1 + L2 + L3 written with loops, float64."""
    sa = out.embeddings["image"][:, :shared]
    sb = out.embeddings["text"][:, :shared]
    n = sa.shape[0]
    l1 = 0.0
    for i in range(n):
        for anchor, cands in ((sa, sb), (sb, sa)):
            sims = torch.stack([F.cosine_similarity(anchor[i], cands[j], dim=0) for j in range(n)]) / tau
            l1 = l1 - (sims[i] - torch.logsumexp(sims, 0)) / (2 * n)
    l2 = ((out.reconstructions["image"] - out.clean["image"]) ** 2).mean()
    l3 = 0.0
    for v in ("image", "text"):
        z = out.embeddings[v]
        s, p = z[:, :shared] - z[:, :shared].mean(0), z[:, shared:] - z[:, shared:].mean(0)
        corr = torch.stack([torch.stack([(s[:, j] @ p[:, k]) / (s[:, j].norm() * p[:, k].norm()) for k in range(p.shape[1])])
                            for j in range(s.shape[1])])
        l3 = l3 + corr.pow(2).mean() / 2
    return w[0] * l1 + w[1] * l2 + w[2] * l3


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (0.5, 2.0, 0.1)])
def test_fission_matches_reference_in_value_and_gradient(weights):
    out = _outputs()
    fission = Fission(shared_dim=6, dim=10, temperature=0.2, discriminative=weights[0], generative=weights[1],
                      overlap=weights[2])
    got = fission(out)
    want = _fission_reference(out, 6, 0.2, weights)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    leaves = [out.embeddings["image"], out.embeddings["text"], out.reconstructions["image"]]
    g_got = torch.autograd.grad(got, leaves)
    g_want = torch.autograd.grad(want, leaves)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_fission_private_code_gets_no_contrastive_gradient():
    out = _outputs(recon=False)
    loss = Fission(shared_dim=6, dim=10, generative=0.0, overlap=0.0)(out)
    grad = torch.autograd.grad(loss, out.embeddings["image"])[0]
    assert grad[:, 6:].abs().max() == 0 and grad[:, :6].abs().max() > 0


def test_fission_uses_the_models_coordination_function():
    out = _outputs(recon=False)
    gate = GatedCoordination(6).double()
    torch.nn.init.normal_(gate.from_b.weight, std=0.5)
    plain = Fission(shared_dim=6, dim=10, generative=0.0, overlap=0.0)(out)
    gated = Fission(shared_dim=6, dim=10, generative=0.0, overlap=0.0)(out.replace(similarity=gate))
    assert float(plain) != pytest.approx(float(gated))
    gated.backward()
    assert gate.from_b.weight.grad is not None and gate.from_b.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, message", [
    ({"shared_dim": 10, "dim": 10}, "shared_dim"), ({"dim": None}, "shared_dim"), ({"shared_dim": 0}, "shared_dim"),
    ({"shared_dim": 2, "overlap": -1.0}, "overlap"), ({"shared_dim": 2, "temperature": 0.0}, "temperature"),
])
def test_fission_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Fission(**kwargs)


def test_fission_needs_two_modalities():
    z = {"view1": torch.randn(4, 6), "view2": torch.randn(4, 6)}
    out = Outputs(z, ("view1", "view2"), {"view1": "image", "view2": "image"})
    with pytest.raises(ValueError, match="two modalities"):
        Fission(shared_dim=3)(out)


def test_split_code():
    s, p = split_code(torch.arange(12.0).reshape(2, 6), 2)
    assert s.tolist() == [[0, 1], [6, 7]] and p.shape == (2, 4)
    with pytest.raises(ValueError, match="shared_dim"):
        split_code(torch.zeros(2, 3), 3)


def test_sinkhorn_balances_and_rows_sum_to_one():
    q = sinkhorn(torch.randn(12, 4, generator=torch.Generator().manual_seed(0)), iterations=200)
    torch.testing.assert_close(q.sum(1), torch.ones(12), atol=1e-5, rtol=0)
    torch.testing.assert_close(q.sum(0), torch.full((4,), 3.0), atol=1e-4, rtol=0)


def _clustering_reference(z1, z2, centres, tau, eps, iters):
    c = centres / centres.norm(dim=1, keepdim=True)
    s1 = (z1 / z1.norm(dim=1, keepdim=True)) @ c.T
    s2 = (z2 / z2.norm(dim=1, keepdim=True)) @ c.T

    def balanced(s):
        q = torch.exp((s - s.max()) / eps).T.detach().clone()
        q /= q.sum()
        k, n = q.shape
        for _ in range(iters):
            for r in range(k):
                q[r] = q[r] / q[r].sum() / k
            for col in range(n):
                q[:, col] = q[:, col] / q[:, col].sum() / n
        return (q * n).T

    q1, q2 = balanced(s1), balanced(s2)
    total = 0.0
    n = z1.shape[0]
    for i in range(n):
        lp1 = s1[i] / tau - torch.logsumexp(s1[i] / tau, 0)
        lp2 = s2[i] / tau - torch.logsumexp(s2[i] / tau, 0)
        total = total - 0.5 * ((q1[i] * lp2).sum() + (q2[i] * lp1).sum()) / n
    return total


def test_multimodal_clustering_matches_reference():
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(10, 5, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(10, 5, generator=g, dtype=torch.float64, requires_grad=True)
    objective = MultimodalClustering(dim=5, clusters=3, temperature=0.3, epsilon=0.5, sinkhorn_iterations=4).double()
    got = objective(z1, z2)
    want = _clustering_reference(z1, z2, objective.centres, 0.3, 0.5, 4)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    g_got = torch.autograd.grad(got, [z1, z2, objective.centres])
    g_want = torch.autograd.grad(want, [z1, z2, objective.centres])
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_multimodal_clustering_learns_common_clusters():
    """Two modalities that are noisy linear maps of 4 latent groups: after training, an item's two modalities fall
    into the same cluster far more often than chance (1/4), and the clusters follow the groups."""
    torch.manual_seed(0)
    groups = torch.randint(0, 4, (512,))
    centres = torch.randn(4, 6) * 3
    x1 = centres[groups] + 0.3 * torch.randn(512, 6)
    x2 = (centres[groups] + 0.3 * torch.randn(512, 6)) @ torch.randn(6, 6)
    f1, f2 = torch.nn.Linear(6, 8), torch.nn.Linear(6, 8)
    objective = MultimodalClustering(dim=8, clusters=4, temperature=0.1)
    opt = torch.optim.Adam([*f1.parameters(), *f2.parameters(), *objective.parameters()], lr=0.01)
    for step in range(300):
        idx = torch.randint(0, 512, (128,))
        loss = objective(f1(x1[idx]), f2(x2[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    a1, a2 = objective.assign(f1(x1)), objective.assign(f2(x2))
    assert float((a1 == a2).float().mean()) > 0.8
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(groups.numpy(), a1.numpy()) > 0.6


def test_gated_coordination_pairs_every_candidate():
    g = GatedCoordination(4)
    torch.nn.init.normal_(g.from_a.weight, std=0.7)
    torch.nn.init.normal_(g.from_b.weight, std=0.7)
    a, b = torch.randn(5, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    g = g.double()
    m = g.matrix(a, b)
    for i in range(5):
        for j in range(3):
            gate = torch.sigmoid(g.from_a(a[i]) + g.from_b(b[j]))
            za, zb = gate[:4] * a[i], gate[4:] * b[j]
            assert float(m[i, j]) == pytest.approx(float(za @ zb / (za.norm() * zb.norm())), rel=1e-9)
    torch.testing.assert_close(g.paired(a[:3], b), m[:3].diagonal())
    blocked = GatedCoordination(4, block=2).double()
    blocked.load_state_dict(g.state_dict())
    torch.testing.assert_close(blocked.matrix(a, b), m)


def test_gated_coordination_gradcheck():
    g = GatedCoordination(3).double()
    torch.nn.init.normal_(g.from_b.weight, std=0.5)
    a = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(g.matrix, (a, b))


def test_gated_coordination_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        GatedCoordination(4).matrix(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="dim"):
        GatedCoordination(0)


_CONFIG = """
data: {name: shapes, options: {n_items: 96, n_test: 32, image_size: 16, with_captions: true, caption_words: [shape]}}
views: {name: modality_pair}
model: {encoder: {name: mlp, options: {hidden: [32]}}, encoders: {text: {name: text, options: {dim: 16}}},
        head: {name: linear}, dim: 8, decoder: {name: mlp, options: {hidden: [32]}}, coordination: gated}
objective: {name: fission, options: {shared_dim: 4}}
batch_size: 32
steps: 3
threads: 1
checkpoint: {every: 0}
log: {every: 1, tensorboard: false, progress: false}
monitor: {every: 0}
"""


def test_fission_run_trains_and_evaluates_shared_and_private_rows(tmp_path):
    """End to end: a fission run with gated coordination trains, and eval reports the shared and private codes
    of both towers as rows of their own."""
    import json

    config = tmp_path / "fission.yaml"
    config.write_text(_CONFIG)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "contrastlab", "train", str(config), "--out", str(run)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "contrastlab", "eval", str(run), "--no-figures", "--max-items", "64",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    rows = set(metrics["encoders"])
    assert {"shared:image", "shared:text", "private:image", "private:text"} <= rows
    assert metrics["encoders"]["shared:image"]["dim"] == 4 and metrics["encoders"]["private:image"]["dim"] == 4
    assert math.isfinite(metrics["encoders"]["shared:image"]["classification"]["probe_test_accuracy"])
    # two towers: the decomposition of what they say about the label and the factors, and the geometry of sets
    pid = metrics["cross_modal"]["shared"]["pid"]
    assert {"label", "colour", "location", "size"} <= set(pid) and "shape" not in pid  # the label is the shape
    for p in pid.values():
        assert abs(p["redundancy"] + p["unique_1"] + p["unique_2"] + p["synergy"] - p["mi_joint"]) < 1e-6
        assert p["discretize"] == "probe"
    classes = metrics["encoders"]["shared:image"]["sets"]["classes"]
    assert 0.0 <= classes["separated_share"] <= 1.0 and classes["tammes"]["reference_how"] == "exact"
    assert metrics["cross_modal"]["shared"]["sets"]["min_size"] == 2  # an item's image and caption
    assert metrics["cross_modal"]["shared"]["retrieval_similarity"] == "gated"
    # compare reads the parts too: the shared and the private image code of the same items
    out = tmp_path / "compare.json"
    done = subprocess.run([sys.executable, "-m", "contrastlab", "compare", f"{run}:shared:image",
                           f"{run}:private:image", "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    compared = json.loads(out.read_text())
    assert compared["a"].endswith(":shared:image") and -1.0 <= compared["cka"] <= 1.0 + 1e-9


def test_gated_coordination_refuses_objectives_that_compare_within_a_view(tmp_path):
    """DCL's negatives (like NT-Xent's and SupCon's) pair rows of one view: an asymmetric gate cannot score them."""
    objective, message = "{name: dcl}", "does not only compare across the two views"
    config = tmp_path / "gated.yaml"
    config.write_text(_CONFIG)
    done = subprocess.run([sys.executable, "-m", "contrastlab", "train", str(config), "--out", str(tmp_path / "run"),
                           "--set", f"objective={objective}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
