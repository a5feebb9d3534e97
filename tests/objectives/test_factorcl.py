"""FactorCL's bounds and objectives against float64 loops written from the paper's formulas, on Gaussians whose
mutual information is known in closed form, and through a checkpoint."""

import math

import pytest
import torch

from _compare import assert_same
from contrastlab.objectives.factorcl import (ConcatCritic, FactorCLSSL, FactorCLSup, infonce_bound, nce_club_bound,
                                             same_class)
from contrastlab.objectives.registry import build_objective, get_objective
from contrastlab.outputs import Outputs

DT = torch.float64
N, D, K = 6, 10, 3


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


# -- slow references, one pair and one term at a time ---------------------------------------------------------


def mlp_ref(critic, x, *, frozen=False):
    """The critic as the paper draws it: an MLP on the concatenation [a; b]."""
    h = x
    for layer in (critic.first, *critic.hidden):
        w, b = (layer.weight.detach(), layer.bias.detach()) if frozen else (layer.weight, layer.bias)
        h = torch.relu(w @ h + b)
    w, b = (critic.out.weight.detach(), critic.out.bias.detach()) if frozen else (critic.out.weight, critic.out.bias)
    return (w @ h + b)[0]


def scores_ref(critic, a, b, *, frozen=False):
    return torch.stack([torch.stack([mlp_ref(critic, torch.cat([a[i], b[j]]), frozen=frozen)
                                     for j in range(len(b))]) for i in range(len(a))])


def infonce_ref(s, candidate):
    """1/N sum_i [ f(a_i, b_i) - log( 1/|C_i| sum_{j in C_i} exp f(a_i, b_j) ) ]."""
    terms = []
    for i in range(len(s)):
        js = [j for j in range(len(s)) if candidate(i, j)]
        terms.append(s[i, i] - torch.log(sum(torch.exp(s[i, j]) for j in js) / len(js)))
    return sum(terms) / len(terms)


def club_ref(s, candidate):
    """1/N sum_i f(a_i, b_i) - 1/N sum_i 1/|C_i| sum_{j in C_i} f(a_i, b_j)."""
    joint = sum(s[i, i] for i in range(len(s))) / len(s)
    apart = []
    for i in range(len(s)):
        js = [j for j in range(len(s)) if candidate(i, j)]
        apart.append(sum(s[i, j] for j in js) / len(js))
    return joint - sum(apart) / len(apart)


def every(i, j):
    return True


def sup_ref(obj, z1, z2, y):
    """FactorCL-SUP's loss, term by term (the NCE-CLUB values with the critic frozen, its fit on detached codes)."""
    ds = obj.shared_dim
    s1, u1, s2, u2 = z1[:, :ds], z1[:, ds:], z2[:, :ds], z2[:, ds:]
    ys = torch.eye(obj.num_classes, dtype=z1.dtype)[y]
    same = lambda i, j: bool(y[i] == y[j])  # noqa: E731
    a_s, a_u = torch.cat([s1, ys], 1), torch.cat([u1, ys], 1)
    t = {
        "I_nce(S1;S2)": infonce_ref(scores_ref(obj.shared_nce, s1, s2), every),
        "I_nce_club(S1;S2|C)": club_ref(scores_ref(obj.shared_club, a_s, s2, frozen=True), same),
        "fit I_nce(S1;S2|C)": infonce_ref(scores_ref(obj.shared_club, a_s.detach(), s2.detach()), same),
        "I_nce(U1;T)": infonce_ref(scores_ref(obj.unique_target[0], u1, ys), every),
        "I_nce(U2;T)": infonce_ref(scores_ref(obj.unique_target[1], u2, ys), every),
        "I_nce_club(U1;U2)": club_ref(scores_ref(obj.unique_club, u1, u2, frozen=True), every),
        "fit I_nce(U1;U2)": infonce_ref(scores_ref(obj.unique_club, u1.detach(), u2.detach()), every),
        "I_nce(U1;U2|C)": infonce_ref(scores_ref(obj.unique_cond_nce, a_u, u2), same),
    }
    return _combine(t), t


def ssl_ref(obj, z1, z2, a1, a2):
    """FactorCL-SSL's loss: targets are each modality's augmented copy, the condition both copies."""
    ds = obj.shared_dim
    s1, u1, s2, u2 = z1[:, :ds], z1[:, ds:], z2[:, :ds], z2[:, ds:]
    sa1, ua1, sa2, ua2 = a1[:, :ds], a1[:, ds:], a2[:, :ds], a2[:, ds:]
    cs1, cs2 = torch.cat([s1, sa1], 1), torch.cat([s2, sa2], 1)
    cu1, cu2 = torch.cat([u1, ua1], 1), torch.cat([u2, ua2], 1)
    t = {
        "I_nce(S1;S2)": infonce_ref(scores_ref(obj.shared_nce, s1, s2), every),
        "I_nce_club(S1;S2|C)": club_ref(scores_ref(obj.shared_club, cs1, cs2, frozen=True), every),
        "fit I_nce(S1;S2|C)": infonce_ref(scores_ref(obj.shared_club, cs1.detach(), cs2.detach()), every),
        "I_nce(U1;T)": infonce_ref(scores_ref(obj.unique_target[0], u1, ua1), every),
        "I_nce(U2;T)": infonce_ref(scores_ref(obj.unique_target[1], u2, ua2), every),
        "I_nce_club(U1;U2)": club_ref(scores_ref(obj.unique_club, u1, u2, frozen=True), every),
        "fit I_nce(U1;U2)": infonce_ref(scores_ref(obj.unique_club, u1.detach(), u2.detach()), every),
        "I_nce(U1;U2|C)": infonce_ref(scores_ref(obj.unique_cond_nce, cu1, cu2), every),
    }
    return _combine(t), t


def _combine(t):
    shared = t["I_nce(S1;S2)"] - t["I_nce_club(S1;S2|C)"]
    unique = t["I_nce(U1;T)"] + t["I_nce(U2;T)"] - t["I_nce_club(U1;U2)"] + t["I_nce(U1;U2|C)"]
    return -(shared + unique + t["fit I_nce(S1;S2|C)"] + t["fit I_nce(U1;U2)"])


def sup_outputs(z1, z2, y):
    return Outputs({"x1": z1, "x2": z2}, ("x1", "x2"), {"x1": "x1", "x2": "x2"}, labels=y)


def ssl_outputs(z1, z2, a1, a2):
    views = ("x1", "x2", "x1_aug", "x2_aug")
    return Outputs(dict(zip(views, (z1, z2, a1, a2))), views, {v: v[:2] for v in views})


LABELS = torch.tensor([0, 2, 1, 0, 2, 0])


# -- the estimators ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True])
def test_bounds_match_loops_from_the_formulas_in_value_and_gradient(masked):
    s = rand(N, N, seed=1) * 3
    mask = same_class(LABELS) if masked else None
    candidate = (lambda i, j: bool(LABELS[i] == LABELS[j])) if masked else every
    assert_same(lambda x: infonce_bound(x, mask=mask), lambda x: infonce_ref(x, candidate), s, atol=1e-12)
    assert_same(lambda x: nce_club_bound(x, mask=mask), lambda x: club_ref(x, candidate), s, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: infonce_bound(x, mask=mask), (s.clone().requires_grad_(),))


def test_infonce_bound_is_log_n_minus_the_infonce_loss_and_at_most_log_n():
    from contrastlab.objectives.info_nce import info_nce

    z1, z2 = rand(N, 4, seed=2), rand(N, 4, seed=3)
    s = z1 @ z2.T / 0.1
    loss = info_nce(z1, z2, temperature=0.1, normalize=False)
    assert float(infonce_bound(s)) == pytest.approx(math.log(N) - float(loss), abs=1e-12)
    assert float(infonce_bound(torch.eye(N, dtype=DT) * 1e3)) == pytest.approx(math.log(N))
    assert float(infonce_bound(torch.zeros(N, N, dtype=DT))) == pytest.approx(0.0, abs=1e-12)  # a blind critic
    assert float(nce_club_bound(torch.zeros(N, N, dtype=DT))) == 0.0


def test_bounds_refuse_scores_or_masks_that_do_not_fit():
    with pytest.raises(ValueError, match="square"):
        infonce_bound(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="diagonal"):
        nce_club_bound(torch.zeros(3, 3), mask=torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        infonce_bound(torch.zeros(3, 3), mask=torch.ones(3, 3))


@pytest.mark.parametrize("layers", [0, 2])
def test_the_critic_is_an_mlp_on_the_concatenation_and_frozen_stops_only_its_own_gradient(layers):
    torch.manual_seed(0)
    critic = ConcatCritic(3, 2, hidden=5, layers=layers).double()
    a, b = rand(4, 3, seed=4), rand(5, 2, seed=5)
    assert_same(lambda x, y: critic(x, y).sum(), lambda x, y: scores_ref(critic, x, y).sum(), a, b, atol=1e-12)
    a = a.requires_grad_()
    critic(a, b, frozen=True).sum().backward()
    assert all(p.grad is None for p in critic.parameters()) and torch.count_nonzero(a.grad) > 0
    frozen_grad, a.grad = a.grad.clone(), None
    critic(a, b).sum().backward()
    torch.testing.assert_close(a.grad, frozen_grad, atol=1e-12, rtol=0)
    assert all(p.grad is not None for p in critic.parameters())


# -- the objectives ---------------------------------------------------------------------------------------------


def test_factorcl_sup_matches_the_reference_term_by_term_in_value_and_gradient():
    torch.manual_seed(1)
    obj = FactorCLSup(K, D, shared_dim=4, critic_hidden=7, critic_layers=1).double()
    z1, z2 = rand(N, D, seed=6), rand(N, D, seed=7)
    bounds, (_, ref_terms) = obj.bounds(sup_outputs(z1, z2, LABELS)), sup_ref(obj, z1, z2, LABELS)
    assert set(bounds) == set(ref_terms)
    for name, value in bounds.items():
        assert value.item() == pytest.approx(ref_terms[name].item(), abs=1e-12), name
    assert_same(lambda a, b: obj(sup_outputs(a, b, LABELS)), lambda a, b: sup_ref(obj, a, b, LABELS)[0], z1, z2,
                atol=1e-11)
    # every critic's gradient: the reference's, parameter by parameter
    grads = torch.autograd.grad(obj(sup_outputs(z1, z2, LABELS)), list(obj.parameters()))
    ref = torch.autograd.grad(sup_ref(obj, z1, z2, LABELS)[0], list(obj.parameters()))
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, atol=1e-11, rtol=0)


def test_factorcl_ssl_matches_the_reference_term_by_term_in_value_and_gradient():
    torch.manual_seed(2)
    obj = FactorCLSSL(D, shared_dim=6, critic_hidden=5, critic_layers=0).double()
    z = [rand(N, D, seed=s) for s in (8, 9, 10, 11)]
    bounds, (_, ref_terms) = obj.bounds(ssl_outputs(*z)), ssl_ref(obj, *z)
    for name, value in bounds.items():
        assert value.item() == pytest.approx(ref_terms[name].item(), abs=1e-12), name
    assert_same(lambda *x: obj(ssl_outputs(*x)), lambda *x: ssl_ref(obj, *x)[0], *z, atol=1e-11)


def test_gradients_reach_the_encoders_and_every_critic_and_club_critics_learn_only_from_their_fit():
    torch.manual_seed(3)
    encoders = torch.nn.ModuleList(torch.nn.Linear(5, D) for _ in range(2))
    obj = FactorCLSup(K, D, critic_hidden=8)
    x = torch.randn(N, 5)
    z1, z2 = encoders[0](x), encoders[1](x + 0.1)
    obj(sup_outputs(z1, z2, LABELS)).backward()
    for module in (*encoders, *obj.children()):
        assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in module.parameters()), module
    # the NCE-CLUB critics' gradient is exactly that of minus their InfoNCE fit
    z1, z2 = z1.detach(), z2.detach()
    for critic, term in ((obj.shared_club, "fit I_nce(S1;S2|C)"), (obj.unique_club, "fit I_nce(U1;U2)")):
        full = torch.autograd.grad(obj(sup_outputs(z1, z2, LABELS)), list(critic.parameters()))
        fit = torch.autograd.grad(-obj.bounds(sup_outputs(z1, z2, LABELS))[term], list(critic.parameters()))
        for g, f in zip(full, fit):
            torch.testing.assert_close(g, f)
    # and the encoders' gradient is that of the objective without the fits (the fits see detached codes)
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    bounds = obj.bounds(sup_outputs(a, b, LABELS))
    no_fit = obj(sup_outputs(a, b, LABELS)) + bounds["fit I_nce(S1;S2|C)"] + bounds["fit I_nce(U1;U2)"]
    ga = torch.autograd.grad(obj(sup_outputs(a, b, LABELS)), a)[0]
    torch.testing.assert_close(ga, torch.autograd.grad(no_fit, a)[0])


def test_the_unique_label_bound_scores_classes_once_but_equals_scoring_every_pair():
    torch.manual_seed(4)
    obj = FactorCLSup(K, D, critic_hidden=6).double()
    u = rand(N, D - obj.shared_dim, seed=12)
    ys = torch.eye(K, dtype=DT)[LABELS]
    fast = obj._target_scores(u, 0, {"labels": LABELS})
    torch.testing.assert_close(fast, obj.unique_target[0](u, ys), atol=1e-12, rtol=0)


# -- closed-form mutual information -----------------------------------------------------------------------------


def gaussian_pairs(n, d, rho, seed):
    """x ~ N(0, I_d), y = rho x + sqrt(1 - rho^2) e: I(X; Y) = -d/2 log(1 - rho^2)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DT)
    return x, rho * x + math.sqrt(1 - rho ** 2) * torch.randn(n, d, generator=g, dtype=DT)


def log_ratio(x, y, rho):
    """The optimal critic log p(y | x) / p(y) of every pair, (N, N)."""
    diff = y[None, :, :] - rho * x[:, None, :]
    per = -diff.pow(2) / (2 * (1 - rho ** 2)) - 0.5 * math.log(1 - rho ** 2) + y[None, :, :].pow(2) / 2
    return per.sum(-1)


def test_with_the_optimal_critic_infonce_is_below_and_nce_club_above_the_true_mi():
    d, rho = 2, 0.5
    true = -d / 2 * math.log(1 - rho ** 2)
    nce, club = [], []
    for seed in range(20):
        x, y = gaussian_pairs(500, d, rho, seed)
        s = log_ratio(x, y, rho)
        nce.append(float(infonce_bound(s)))
        club.append(float(nce_club_bound(s)))
    nce, club = torch.tensor(nce), torch.tensor(club)
    se = lambda v: float(v.std() / math.sqrt(len(v)))  # noqa: E731
    assert float(nce.mean()) <= true + 3 * se(nce) and float(nce.mean()) > true - 0.05
    # NCE-CLUB with the optimal critic is I + KL(p(x)p(y) || p(x, y)) = d rho^2 / (1 - rho^2) here
    assert float(club.mean()) >= true - 3 * se(club)
    assert float(club.mean()) == pytest.approx(d * rho ** 2 / (1 - rho ** 2), abs=4 * se(club) + 0.01)


def test_a_trained_critic_brackets_the_true_mi_within_sampling_error():
    torch.manual_seed(5)
    d, rho = 2, 0.8
    true = -d / 2 * math.log(1 - rho ** 2)  # 1.02 nats
    critic = ConcatCritic(d, d, hidden=64, layers=0).double()
    opt = torch.optim.Adam(critic.parameters(), lr=3e-3)
    for step in range(400):
        x, y = gaussian_pairs(128, d, rho, 1000 + step)
        loss = -infonce_bound(critic(x, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pairs = [gaussian_pairs(256, d, rho, 5000 + k) for k in range(20)]
        nce = torch.tensor([float(infonce_bound(critic(x, y))) for x, y in pairs])
        club = torch.tensor([float(nce_club_bound(critic(x, y))) for x, y in pairs])
    se = lambda v: float(v.std() / math.sqrt(len(v)))  # noqa: E731
    assert float(nce.mean()) <= true + 3 * se(nce)
    assert float(nce.mean()) > 0.7 * true  # the critic did learn
    assert float(club.mean()) >= true - 3 * se(club)


# -- registry, errors, checkpoints ------------------------------------------------------------------------------


def test_registry_entries_read_what_they_need_and_fill_dims_from_training():
    sup, ssl = get_objective("factorcl_sup"), get_objective("factorcl_ssl")
    assert sup.kind == ssl.kind == "method" and sup.needs == {"embeddings", "labels"} and ssl.needs == {"embeddings"}
    assert sup.min_modalities == ssl.min_modalities == 2 and sup.model["normalize"] == "none"
    obj = build_objective("factorcl_sup", num_classes=2, dim=16, critic_hidden=8)
    assert (obj.shared_dim, obj.unique_dim) == (8, 8)


def test_bad_options_and_outputs_name_the_problem():
    with pytest.raises(ValueError, match="shared_dim"):
        FactorCLSup(2, 8, shared_dim=8)
    with pytest.raises(ValueError, match="num_classes"):
        FactorCLSup(1, 8)
    with pytest.raises(ValueError, match="hidden"):
        FactorCLSSL(8, critic_hidden=0)
    obj = FactorCLSup(K, D, critic_hidden=4)
    z = torch.randn(N, D)
    with pytest.raises(ValueError, match="needs labels"):
        obj(sup_outputs(z, z, None))
    with pytest.raises(ValueError, match=r"labels of shape \(6,\) in \[0, 3\)"):
        obj(sup_outputs(z, z, torch.full((N,), 3)))
    with pytest.raises(ValueError, match="width 10"):
        obj(sup_outputs(torch.randn(N, 4), torch.randn(N, 4), LABELS))
    with pytest.raises(ValueError, match="two modalities"):
        obj(Outputs({"a": z, "b": z}, ("a", "b"), {"a": "x", "b": "x"}, labels=LABELS))
    with pytest.raises(ValueError, match="clean, augmented"):
        FactorCLSSL(D, critic_hidden=4)(sup_outputs(z, z, None))


def test_the_objectives_state_survives_a_checkpoint(tmp_path):
    from contrastlab.training.checkpoint import read_checkpoint, write_checkpoint

    torch.manual_seed(6)
    obj = FactorCLSup(K, D, critic_hidden=8)
    out = sup_outputs(torch.randn(N, D), torch.randn(N, D), LABELS)
    opt = torch.optim.Adam(obj.parameters(), lr=1e-2)
    for _ in range(3):  # trained critics, not the initial draw
        opt.zero_grad()
        obj(out).backward()
        opt.step()
    write_checkpoint(tmp_path / "ckpt", model={"w": torch.zeros(1)}, objective=obj.state_dict())
    torch.manual_seed(7)
    fresh = FactorCLSup(K, D, critic_hidden=8)
    assert fresh(out).item() != obj(out).item()
    fresh.load_state_dict(read_checkpoint(tmp_path / "ckpt").objective)
    assert fresh(out).item() == obj(out).item()
    assert {k for k in obj.state_dict() if k.startswith("unique_target.1.")}  # every critic is in the state


def test_a_training_run_checkpoints_and_reloads_the_trained_critics(tmp_path):
    from contrastlab.recipes.spec import load_recipe
    from contrastlab.training import config_from_dict, load_run, train
    from contrastlab.training.checkpoint import read_checkpoint

    raw = load_recipe("factorcl-synthetic").run_config("factorcl_ssl", "quick")
    raw.pop("epochs")
    raw.update(steps=3, batch_size=32, checkpoint={"every": 1, "keep_last": 3, "keep_best": False})
    raw["log"] = {"every": 1, "progress": False, "tensorboard": False}
    raw["data"]["options"] = {"n_samples": 200}
    train(config_from_dict(raw), tmp_path / "run")
    first, last = (read_checkpoint(tmp_path / "run" / "checkpoints" / f"step-{s:08d}").objective for s in (1, 3))
    state = load_run(tmp_path / "run").objective_module.state_dict()
    assert set(last) == set(state) and all(torch.equal(last[k], state[k]) for k in state)
    assert any(not torch.equal(first[k], last[k]) for k in state)  # the critics are trained, and saved as they move
