"""Method objectives (they read the step's Outputs) against float64 loops written from the papers."""

import math

import pytest
import torch

from _compare import assert_same
from contrastlab.objectives.methods import BYOL, MoCo, MoCoV3, SigLIPMethod, SimSiam
from contrastlab.objectives.predictive import byol_loss, simsiam_loss
from contrastlab.outputs import Outputs

DT = torch.float64
N, D = 6, 5


def outputs(z1, z2, *, p1=None, p2=None, t1=None, t2=None, negatives=None, temperature=None, bias=None):
    return Outputs({"a": z1, "b": z2}, ("a", "b"), {"a": "x", "b": "x"},
                   predictions={} if p1 is None else {"a": p1, "b": p2},
                   targets={} if t1 is None else {"a": t1, "b": t2},
                   negatives=negatives, temperature=temperature, logit_bias=bias)


def cos(u, v):
    return float(u @ v) / (float(u.norm()) * float(v.norm()))


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def test_byol_is_the_papers_normalised_mse_averaged_over_the_two_directions():
    p1, p2, t1, t2 = rand(N, D, seed=1), rand(N, D, seed=2), rand(N, D, seed=3), rand(N, D, seed=4)

    def loop(p1, p2):  # Grill et al. eq. 2: || p/|p| - t/|t| ||^2 = 2 - 2 cos; symmetrised, then / 2
        total = 0.0
        for i in range(N):
            total += (2 - 2 * cos(p1[i], t2[i])) + (2 - 2 * cos(p2[i], t1[i]))
        return torch.tensor(total / (2 * N), dtype=DT)

    fast = BYOL()(outputs(None, None, p1=p1, p2=p2, t1=t1, t2=t2))
    assert float(fast) == pytest.approx(float(loop(p1, p2)), abs=1e-12)
    assert_same(lambda a, b: BYOL()(outputs(None, None, p1=a, p2=b, t1=t1, t2=t2)),
                lambda a, b: byol_loss(a, b, t1, t2), p1, p2, atol=1e-12)


def test_simsiam_with_and_without_stop_gradient():
    p1, p2, z1, z2 = rand(N, D, seed=1), rand(N, D, seed=2), rand(N, D, seed=3), rand(N, D, seed=4)
    assert_same(lambda a, b: SimSiam()(outputs(z1, z2, p1=a, p2=b)), lambda a, b: simsiam_loss(a, b, z1, z2),
                p1, p2, atol=1e-12)
    assert_same(lambda a, b, c, d: SimSiam(stop_gradient=False)(outputs(c, d, p1=a, p2=b)),
                lambda a, b, c, d: simsiam_loss(a, b, c, d, stop_gradient=False), p1, p2, z1, z2, atol=1e-12)
    z, p1 = z1.clone().requires_grad_(), p1.clone().requires_grad_()
    SimSiam()(outputs(z, z2, p1=p1, p2=p2)).backward()
    assert z.grad is None or torch.count_nonzero(z.grad) == 0  # the target side gets no gradient
    z.grad = None
    SimSiam(stop_gradient=False)(outputs(z, z2, p1=p1, p2=p2)).backward()
    assert torch.count_nonzero(z.grad) > 0


def test_moco_v2_is_the_positive_key_against_the_queue():
    q, k_other, k, queue = rand(N, D, seed=1), rand(N, D, seed=2), rand(N, D, seed=3), rand(7, D, seed=4)
    tau = 0.2

    def loop(q):  # He et al. Algorithm 1: logits [q.k+, q.queue] / tau, label 0 (on unit vectors)
        total = 0.0
        for i in range(N):
            qi = q[i] / q[i].norm()
            pos = float(qi @ (k[i] / k[i].norm())) / tau
            negs = [float(qi @ (n / n.norm())) / tau for n in queue]
            total += -(pos - math.log(math.exp(pos) + sum(math.exp(x) for x in negs)))
        return torch.tensor(total / N, dtype=DT)

    got = MoCo(temperature=tau)(outputs(q, k_other, t1=k_other, t2=k, negatives=queue))
    assert float(got) == pytest.approx(float(loop(q)), abs=1e-10)
    (grad,) = torch.autograd.grad(MoCo(temperature=tau)(outputs(q.requires_grad_(), k_other, t1=k_other, t2=k, negatives=queue)), q)
    h = 1e-6  # central differences of the loop in one coordinate
    e = torch.zeros_like(q)
    e[2, 3] = h
    numeric = (float(loop(q.detach() + e)) - float(loop(q.detach() - e))) / (2 * h)
    assert float(grad[2, 3]) == pytest.approx(numeric, abs=1e-6)
    sym = MoCo(temperature=tau, symmetric=True)(outputs(q.detach(), k_other, t1=k_other, t2=k, negatives=queue))
    other = MoCo(temperature=tau)(outputs(k_other, q.detach(), t1=k, t2=k_other, negatives=queue))
    assert float(sym) == pytest.approx((float(loop(q.detach())) + float(other)) / 2, abs=1e-10)


def test_moco_v3_is_2_tau_times_the_in_batch_cross_entropy_averaged_over_directions():
    p1, p2, t1, t2 = rand(N, D, seed=1), rand(N, D, seed=2), rand(N, D, seed=3), rand(N, D, seed=4)
    tau = 0.5

    def ctr(q, k):  # Chen, Xie & He, Algorithm 1
        total = 0.0
        for i in range(N):
            logits = [cos(q[i], k[j]) / tau for j in range(N)]
            total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
        return 2 * tau * total / N

    got = MoCoV3(temperature=tau)(outputs(None, None, p1=p1, p2=p2, t1=t1, t2=t2))
    assert float(got) == pytest.approx((ctr(p1, t2) + ctr(p2, t1)) / 2, abs=1e-10)


def test_siglip_reads_the_learned_scale_and_bias_with_gradients():
    z1, z2 = rand(N, D, seed=1), rand(N, D, seed=2)
    tau = torch.tensor(0.1, dtype=DT, requires_grad=True)
    bias = torch.tensor(-10.0, dtype=DT, requires_grad=True)
    loss = SigLIPMethod()(outputs(z1, z2, temperature=tau, bias=bias))
    total = 0.0  # Zhai et al. eq. 1: -1/N sum_ij log sigmoid(l_ij (t x_i.y_j + b))
    for i in range(N):
        for j in range(N):
            logit = 10.0 * cos(z1[i], z2[j]) - 10.0
            label = 1.0 if i == j else -1.0
            total += math.log1p(math.exp(-label * logit))
    assert float(loss.detach()) == pytest.approx(total / N, abs=1e-10)
    g_tau, g_bias = torch.autograd.grad(loss, (tau, bias))
    assert g_tau != 0 and g_bias != 0


def test_multi_crop_predicts_every_other_global_target():
    views = ("g1", "g2", "l1")
    p = {v: rand(N, D, seed=i) for i, v in enumerate(views)}
    t = {v: rand(N, D, seed=10 + i) for i, v in enumerate(views[:2])}
    out = Outputs(p, views, {v: "x" for v in views}, global_views=("g1", "g2"), predictions=p, targets=t)
    assert out.ordered_pairs() == [("g2", "g1"), ("l1", "g1"), ("g1", "g2"), ("l1", "g2")]
    want = sum(2 - 2 * torch.nn.functional.cosine_similarity(p[v], t[g]).mean() for v, g in out.ordered_pairs()) / 4
    assert float(BYOL()(out)) == pytest.approx(float(want), abs=1e-12)


def test_a_spec_names_only_outputs_the_step_makes():
    from contrastlab.objectives._spec import ObjectiveSpec

    with pytest.raises(ValueError, match=r"objective 'x' reads unknown outputs \['predictons'\]"):
        ObjectiveSpec("x", BYOL, "method", "f", "r", reads=frozenset({"predictons"}))
    with pytest.raises(ValueError, match="objective 'x': kind must be one of"):
        ObjectiveSpec("x", BYOL, "contrastive", "f", "r")
