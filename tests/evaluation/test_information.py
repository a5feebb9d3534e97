import math
from collections import Counter

import numpy as np
import pytest
import scipy.optimize
import torch
from sklearn.cross_decomposition import CCA

from contrastlab.evaluation import _broja, canonical_correlations, info_nce_bound, mi_lower_bound
from contrastlab.evaluation.pid import (
    conditional_entropy, conditional_mutual_information, default_clusters, entropy, mutual_information, pid,
    pid_from_table, representation_pid,
)


def test_mi_lower_bound():
    assert mi_lower_bound(0.0, 256) == pytest.approx(math.log(256))
    assert mi_lower_bound(math.log(256), 256) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="k must be at least 2"):
        mi_lower_bound(1.0, 1)
    with pytest.raises(ValueError, match="-0.5"):
        mi_lower_bound(-0.5, 8)


def test_info_nce_bound_equals_the_formula_by_loops():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(12, 4, generator=g).double(), torch.randn(12, 4, generator=g).double()
    tau, k = 0.3, 4
    a = z1 / z1.norm(dim=1, keepdim=True)
    b = z2 / z2.norm(dim=1, keepdim=True)
    losses = []
    for start in range(0, 12, k):
        total = 0.0
        for i in range(start, start + k):
            row = [float(a[i] @ b[j]) / tau for j in range(start, start + k)]
            col = [float(a[j] @ b[i]) / tau for j in range(start, start + k)]
            own = float(a[i] @ b[i]) / tau
            total += 0.5 * (-own + math.log(sum(map(math.exp, row)))) + 0.5 * (-own + math.log(sum(map(math.exp, col))))
        losses.append(total / k)
    out = info_nce_bound(z1, z2, temperature=tau, k=k)
    assert out["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-12)
    assert out["mi_lower_bound"] == pytest.approx(math.log(k) - out["loss"])


def test_info_nce_bound_limits():
    z = torch.eye(16)
    assert info_nce_bound(z, z, temperature=0.01, k=16)["mi_lower_bound"] == pytest.approx(math.log(16), abs=1e-6)
    same = torch.ones(16, 3)  # nothing tells items apart: loss = log k, bound 0
    assert info_nce_bound(same, same, k=16)["mi_lower_bound"] == pytest.approx(0.0, abs=1e-12)
    assert info_nce_bound(torch.randn(5, 2), torch.randn(5, 2), k=64)["k"] == 5


def test_cca_of_an_invertible_linear_map_is_all_ones():
    x = np.random.default_rng(0).normal(size=(500, 4))
    a = np.random.default_rng(1).normal(size=(4, 4))
    np.testing.assert_allclose(canonical_correlations(x, x @ a + 3.0), np.ones(4), atol=1e-5)


def test_cca_recovers_a_planted_correlation():
    rng = np.random.default_rng(2)
    n, rho = 20_000, 0.6
    s, n1, n2 = rng.normal(size=(3, n))
    x = np.stack([s, rng.normal(size=n), rng.normal(size=n)], 1) @ rng.normal(size=(3, 3))
    y = np.stack([rho * s + math.sqrt(1 - rho**2) * n2, n1 * 0 + rng.normal(size=n)], 1) @ rng.normal(size=(2, 2))
    r = canonical_correlations(x, y)
    assert r.shape == (2,)
    assert r[0] == pytest.approx(rho, abs=0.02)
    assert r[1] < 0.05
    # scikit-learn's iterative CCA finds the same first correlation
    u, v = CCA(n_components=1, max_iter=2000, tol=1e-10).fit(x, y).transform(x, y)
    assert r[0] == pytest.approx(abs(np.corrcoef(u[:, 0], v[:, 0])[0, 1]), abs=1e-3)


def test_cca_of_independent_towers_is_small_and_options():
    rng = np.random.default_rng(3)
    r = canonical_correlations(rng.normal(size=(5000, 3)), rng.normal(size=(5000, 5)))
    assert r.shape == (3,) and (r < 0.1).all() and (np.diff(r) <= 0).all()
    assert canonical_correlations(rng.normal(size=(50, 3)), rng.normal(size=(50, 3)), n_components=2).shape == (2,)
    with pytest.raises(ValueError, match="n_components=4"):
        canonical_correlations(rng.normal(size=(50, 3)), rng.normal(size=(50, 3)), n_components=4)
    with pytest.raises(ValueError, match="rows"):
        canonical_correlations(rng.normal(size=(50, 3)), rng.normal(size=(40, 3)))
    with pytest.raises(ValueError, match="-1"):
        canonical_correlations(rng.normal(size=(50, 3)), rng.normal(size=(50, 3)), reg=-1)


# ---------------------------------------------------------------- entropies and mutual information of codes

LOG2 = math.log(2)


def _h_by_counting(*columns):
    """Plug-in entropy in bits of the joint of the columns, from a dictionary of counts (the definition)."""
    rows = list(zip(*columns))
    n = len(rows)
    return -sum(c / n * math.log2(c / n) for c in Counter(rows).values())


def test_entropy_of_uniform_codes_is_log_k_in_any_base():
    for k in range(1, 8):
        x = np.arange(3 * k) % k
        assert entropy(x) == pytest.approx(math.log2(k), abs=1e-12)
        assert entropy(x, base=math.e) == pytest.approx(math.log(k), abs=1e-12)
        assert entropy(x, base=10) == pytest.approx(math.log10(k), abs=1e-12)
    assert entropy(["cat", "dog", "cat", "dog"]) == pytest.approx(1.0)
    assert entropy(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(2.0)  # integer-valued floats are codes
    assert entropy(torch.tensor([True, False, True, False])) == pytest.approx(1.0)
    assert entropy(np.array([[0, 0], [0, 1], [1, 0], [1, 1]])) == pytest.approx(2.0)  # the joint of the columns
    assert entropy(np.array([[0, 5], [0, 5], [1, 5], [1, 5]])) == pytest.approx(1.0)
    assert entropy(np.zeros(5, dtype=int)) == 0.0


def test_estimators_equal_their_definitions_by_counting():
    rng = np.random.default_rng(0)
    x, z = rng.integers(0, 4, 300), rng.integers(0, 3, 300)
    y = (x + rng.integers(0, 2, 300) * z) % 5
    hx, hy, hz = _h_by_counting(x), _h_by_counting(y), _h_by_counting(z)
    hxy, hxz, hyz, hxyz = _h_by_counting(x, y), _h_by_counting(x, z), _h_by_counting(y, z), _h_by_counting(x, y, z)
    assert entropy(x) == pytest.approx(hx, abs=1e-12)
    assert entropy(np.stack([x, y], 1)) == pytest.approx(hxy, abs=1e-12)
    assert conditional_entropy(y, x) == pytest.approx(hxy - hx, abs=1e-12)
    assert mutual_information(x, y) == pytest.approx(hx + hy - hxy, abs=1e-12)
    assert mutual_information(x, y) == pytest.approx(mutual_information(y, x), abs=1e-12)
    assert conditional_mutual_information(x, y, z) == pytest.approx(hxz + hyz - hxyz - hz, abs=1e-12)
    # the chain rule I(X; Y, Z) = I(X; Z) + I(X; Y | Z)
    assert mutual_information(x, np.stack([y, z], 1)) == pytest.approx(
        mutual_information(x, z) + conditional_mutual_information(x, y, z), abs=1e-12)
    # in nats: the KL divergence of the joint from the product of the marginals, summed cell by cell
    n, pxy, px, py = 300, Counter(zip(x, y)), Counter(x), Counter(y)
    kl = sum(c / n * math.log((c / n) / (px[a] / n * py[b] / n)) for (a, b), c in pxy.items())
    assert mutual_information(x, y, base=math.e) == pytest.approx(kl, abs=1e-12)


def test_mutual_information_of_independent_and_identical_codes():
    i = np.arange(36)
    assert mutual_information(i % 3, i // 12) == 0.0  # every pair occurs equally often: exactly independent
    assert mutual_information(i % 6, i % 6) == pytest.approx(math.log2(6))
    assert mutual_information(i % 6, (i % 6) * 7 + 1) == pytest.approx(math.log2(6))  # relabelled copy
    assert conditional_entropy(i % 6, i % 3) == pytest.approx(1.0)  # i % 6 given i % 3: one more bit
    assert conditional_mutual_information(i % 2, i % 2, i % 2) == 0.0  # nothing left once z is known


def test_miller_madow_numbers_by_hand():
    x = [0, 0, 0, 1]  # plug-in h(1/4) = 0.811278 bits; m = 2, N = 4: + 1/8 nats
    assert entropy(x, correction="miller_madow") == pytest.approx(0.8112781244591328 + 0.125 / LOG2, abs=1e-12)
    assert entropy(x, correction="miller_madow", base=math.e) == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) + 0.125, abs=1e-12)
    # independent fair bits, N = 4: plug-in MI 0; m_X = m_Y = 2, m_XY = 4: (2 + 2 - 4 - 1) / 8 nats, negative
    a, b = [0, 0, 1, 1], [0, 1, 0, 1]
    assert mutual_information(a, b, correction="miller_madow") == pytest.approx(-0.125 / LOG2, abs=1e-12)
    # H(Y | X) with m_XY = 4, m_X = 2, N = 4: 1 bit + 2/8 nats
    assert conditional_entropy(b, a, correction="miller_madow") == pytest.approx(1 + 0.25 / LOG2, abs=1e-12)
    # I(X; Y | Z) = 1 bit for z = x XOR y; m_XZ = m_YZ = m_XYZ = 4, m_Z = 2: (4 + 4 - 4 - 2) / 8 nats
    assert conditional_mutual_information(a, b, [0, 1, 1, 0], correction="miller_madow") == pytest.approx(
        1 + 0.25 / LOG2, abs=1e-12)


def test_discrete_estimators_reject_bad_input_naming_it():
    good = [0, 1, 0, 1]
    with pytest.raises(ValueError, match=r"x, y must have the same number of rows; got x: 4, y: 3"):
        mutual_information(good, [0, 1, 0])
    with pytest.raises(ValueError, match="z"):
        conditional_mutual_information(good, good, [0, 1])
    with pytest.raises(ValueError, match="x must be non-empty"):
        entropy([])
    with pytest.raises(ValueError, match="y contains NaN"):
        conditional_entropy([0.0, np.nan, 1.0, 1.0], good)
    with pytest.raises(ValueError, match=r"x must hold integer codes.*0\.5"):
        entropy([0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match=r"x must have shape \(N,\) or \(N, k\)"):
        entropy(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="x must hold integer or string codes"):
        entropy(np.array([None, 1, 2], dtype=object))
    with pytest.raises(ValueError, match="x must hold integer or string codes"):
        entropy(np.array([1 + 1j, 2]))
    for base in (1, 0, -2.0, float("nan"), True, "2"):
        with pytest.raises(ValueError, match="base"):
            entropy(good, base=base)
    with pytest.raises(ValueError, match="correction.*'jackknife'"):
        mutual_information(good, good, correction="jackknife")


# ---------------------------------------------------------------- the partial information decomposition

ATOMS = ("redundancy", "unique_1", "unique_2", "synergy")


def _gate(function, bits=2):
    """The table of Y = function(x1, x2) for independent uniform inputs in range(bits)."""
    out = {(a, b): function(a, b) for a in range(bits) for b in range(bits)}
    labels = sorted(set(out.values()))
    p = np.zeros((bits, bits, len(labels)))
    for (a, b), y in out.items():
        p[a, b, labels.index(y)] = 1.0
    return p / p.sum()


def _atoms(out):
    return np.array([out[k] for k in ATOMS])


@pytest.mark.parametrize("name, function, expected", [
    ("copy", None, (1.0, 0.0, 0.0, 0.0)),  # Y = X1 = X2, one fair bit
    ("xor", lambda a, b: a ^ b, (0.0, 0.0, 0.0, 1.0)),
    ("two bits", lambda a, b: (a, b), (0.0, 1.0, 1.0, 0.0)),
    ("and", lambda a, b: a & b, (0.8112781244591328 - 0.5, 0.0, 0.0, 0.5)),  # R = h(1/4) - 1/2
])
def test_known_decompositions(name, function, expected):
    if function is None:
        p = np.zeros((2, 2, 2))
        p[0, 0, 0] = p[1, 1, 1] = 0.5
        x1 = x2 = y = np.array([0, 1] * 3)
    else:
        p = _gate(function)
        x1, x2 = np.repeat([0, 0, 1, 1], 3), np.repeat([0, 1, 0, 1], 3)
        y = [str(function(a, b)) for a, b in zip(x1, x2)]
    for out in (pid_from_table(p), pid(x1, x2, y)):
        np.testing.assert_allclose(_atoms(out), expected, atol=1e-4)
        assert out["converged"] and 0 <= out["gap"] <= 1e-7
        assert out["mi_joint"] == pytest.approx(sum(expected), abs=1e-9)


def _random_tables(seed, shapes=((2, 2, 2), (2, 3, 2), (3, 3, 2), (3, 2, 3), (3, 3, 3)), sparse=0.3):
    rng = np.random.default_rng(seed)
    for shape in shapes:
        p = rng.dirichlet(np.full(np.prod(shape), 0.7)).reshape(shape)
        p[rng.random(shape) < sparse] = 0.0  # zeros put optima on the boundary of the polytope
        if p.sum() == 0:
            continue
        yield p / p.sum()


def test_identities_signs_and_symmetries_on_random_tables():
    for p in _random_tables(1):
        out = pid_from_table(p)
        r, u1, u2, s = _atoms(out)
        assert r + u1 == pytest.approx(out["mi_1"], abs=1e-12)
        assert r + u2 == pytest.approx(out["mi_2"], abs=1e-12)
        assert r + u1 + u2 + s == pytest.approx(out["mi_joint"], abs=1e-12)
        assert min(r, u1, u2, s) >= -1e-7 and out["converged"]
        swapped = pid_from_table(p.transpose(1, 0, 2))  # X1 <-> X2 swaps the uniques
        np.testing.assert_allclose(_atoms(swapped), [r, u2, u1, s], atol=2e-7)
        relabelled = pid_from_table(p[::-1][:, [*range(1, p.shape[1]), 0]][:, :, ::-1])  # renamed symbols
        np.testing.assert_allclose(_atoms(relabelled), [r, u1, u2, s], atol=2e-7)
        padded = np.zeros((p.shape[0] + 1, p.shape[1], p.shape[2] + 2))
        padded[1:, :, :-2] = p * 7.0  # counts, and symbols that never occur
        np.testing.assert_allclose(_atoms(pid_from_table(padded)), [r, u1, u2, s], atol=2e-7)
        assert pid_from_table(p, base=math.e)["synergy"] == pytest.approx(s * LOG2, abs=2e-7)


def test_degenerate_and_badly_scaled_tables():
    constant_y = pid_from_table(np.random.default_rng(9).random((3, 4, 1)))  # nothing to explain
    assert _atoms(constant_y).tolist() == [0.0, 0.0, 0.0, 0.0] and constant_y["converged"]
    one_source = pid_from_table(np.random.default_rng(9).random((1, 4, 3)))  # X1 takes one value
    assert one_source["mi_1"] == 0.0 and one_source["unique_2"] == pytest.approx(one_source["mi_2"], abs=1e-12)
    # probabilities down to 1e-12 (tables passed in directly, not counts) still converge and stay exact
    p = _gate(lambda a, b: a & b) + 1e-12 * np.random.default_rng(10).random((2, 2, 2))
    out = pid_from_table(p)
    assert out["converged"]
    np.testing.assert_allclose(_atoms(out), (0.8112781244591328 - 0.5, 0.0, 0.0, 0.5), atol=1e-6)
    rng = np.random.default_rng(11)
    for _ in range(20):
        p = rng.dirichlet(np.full(60, 0.1)).reshape(3, 4, 5)  # many entries below 1e-9
        assert pid_from_table(p)["converged"]


def test_pid_of_samples_is_pid_of_their_frequencies_and_relabelling_changes_nothing():
    rng = np.random.default_rng(2)
    x1, x2 = rng.integers(0, 3, 400), rng.integers(0, 4, 400)
    y = (x1 + x2 * rng.integers(0, 2, 400)) % 3
    counts = np.zeros((3, 4, 3))
    np.add.at(counts, (x1, x2, y), 1)
    out = pid(x1, x2, y)
    np.testing.assert_allclose(_atoms(out), _atoms(pid_from_table(counts)), atol=1e-12)
    names = np.array(["x", "q", "m"])
    renamed = pid(names[x1], 10 * x2 - 3, np.stack([y, y], 1))
    np.testing.assert_allclose(_atoms(renamed), _atoms(out), atol=2e-7)
    assert out["mi_1"] == pytest.approx(mutual_information(x1, y), abs=1e-12)
    assert out["mi_joint"] == pytest.approx(mutual_information(np.stack([x1, x2], 1), y), abs=1e-12)


def _broja_by_slsqp(p):
    """max H_Q(Y | X1, X2) in nats over Delta_P by SLSQP on the free cells of Q (an independent slow solver)."""
    allowed = (p.sum(1)[:, None, :] > 0) & (p.sum(0)[None, :, :] > 0)
    rows, cols = p.sum(1), p.sum(0)

    def table(v):
        q = np.zeros(p.shape)
        q[allowed] = v
        return q

    def objective(v):  # -H_Q(Y | X1, X2) and its gradient log Q(y | x1, x2)
        q = np.clip(table(v), 1e-300, None)
        log_ratio = np.log(q) - np.log(q.sum(2, keepdims=True))
        return float((q * log_ratio)[allowed].sum()), log_ratio[allowed]

    constraints = []
    for a, y in zip(*np.nonzero(rows)):
        constraints.append((np.ones(p.shape) * (np.arange(p.shape[0])[:, None, None] == a)
                            * (np.arange(p.shape[2]) == y), rows[a, y]))
    for b, y in zip(*np.nonzero(cols)):
        if b != np.nonzero(cols[:, y])[0][0]:  # one column per y is implied by the rest
            constraints.append((np.ones(p.shape) * (np.arange(p.shape[1])[None, :, None] == b)
                                * (np.arange(p.shape[2]) == y), cols[b, y]))
    a_eq = np.array([m[allowed] for m, _ in constraints])
    b_eq = np.array([v for _, v in constraints])
    start = (rows[:, None, :] * cols[None, :, :] / p.sum((0, 1)))[allowed]
    equal = {"type": "eq", "fun": lambda v: a_eq @ v - b_eq, "jac": lambda v: a_eq}
    result = scipy.optimize.minimize(objective, start, jac=True, method="SLSQP", bounds=[(0, 1)] * len(start),
                                     constraints=[equal], options={"ftol": 1e-14, "maxiter": 2000})
    return -result.fun


def _mirror_descent(p, steps):
    """Entropic mirror descent with step 1 (the brief's derivation): Q <- KL-projection of Q(x1, x2) onto Delta_P,
    one Sinkhorn scaling per y to convergence. Returns H_Q(Y | X1, X2) in nats of the last (feasible) iterate."""
    rows, cols = p.sum(1), p.sum(0)
    q = rows[:, None, :] * cols[None, :, :] / p.sum((0, 1))
    v = np.ones_like(cols)
    for _ in range(steps):
        kernel = np.broadcast_to(q.sum(2)[:, :, None], p.shape)
        for _ in range(2000):  # warm-started from the last step's scaling
            u = np.divide(rows, np.einsum("aby,by->ay", kernel, v), out=np.zeros_like(rows), where=rows > 0)
            v = np.divide(cols, np.einsum("aby,ay->by", kernel, u), out=np.zeros_like(cols), where=cols > 0)
            if np.abs(np.einsum("aby,ay,by->ay", kernel, u, v) - rows).max() < 1e-13:
                break
        q = u[:, None, :] * kernel * v[None, :, :]
    return _broja.conditional_entropy_of_table(q)


def test_the_solver_agrees_with_slsqp_and_mirror_descent_and_its_certificate_holds():
    for seed in (3, 4):
        for p in _random_tables(seed):
            best = _broja.max_conditional_entropy(p, tol=1e-8, max_iter=300)
            q = best.q
            assert best.converged and 0 <= best.gap <= 1e-8
            assert (q >= 0).all() and q[~((p.sum(1)[:, None] > 0) & (p.sum(0)[None] > 0))].sum() == 0
            np.testing.assert_allclose(q.sum(1), p.sum(1), atol=1e-13)  # Q is in Delta_P
            np.testing.assert_allclose(q.sum(0), p.sum(0), atol=1e-13)
            assert best.value == pytest.approx(_broja.conditional_entropy_of_table(q), abs=1e-15)
            by_slsqp = _broja_by_slsqp(p)
            assert by_slsqp <= best.value + best.gap + 1e-9  # nothing feasible beats the certified bound
            assert best.value - by_slsqp < 1e-5
            # P itself and mirror descent's iterates are feasible too
            assert _broja.conditional_entropy_of_table(p) <= best.value + best.gap
            by_mirror_descent = _mirror_descent(p, 300)
            assert by_mirror_descent <= best.value + best.gap + 1e-10
            assert best.value - by_mirror_descent < 1e-4


def test_an_unconverged_solve_says_so_and_still_bounds_the_answer():
    p = np.random.default_rng(5).dirichlet(np.ones(8 * 8 * 10)).reshape(8, 8, 10)
    exact = pid_from_table(p)
    early = pid_from_table(p, max_iter=5)
    assert exact["converged"] and not early["converged"] and early["iterations"] == 5
    assert early["gap"] > 1e-7
    for atom, sign in zip(ATOMS, (-1, 1, 1, -1)):  # uniques from above, R and S from below, within the gap
        assert 0 <= sign * (early[atom] - exact[atom]) <= early["gap"] + 1e-7


def test_a_noisy_16x16x10_table_converges_in_few_newton_steps():
    rng = np.random.default_rng(6)
    x1, x2, y = rng.integers(0, 16, 1500), rng.integers(0, 16, 1500), rng.integers(0, 10, 1500)
    out = pid(x1, x2, y)
    assert out["converged"] and out["iterations"] < 100
    # unrelated codes: the plug-in bias, about (16 * 16 - 1) * 9 / (2 * 1500) nats, is nearly all synergy
    assert out["mi_joint"] == pytest.approx(255 * 9 / 3000 / LOG2, rel=0.15)
    assert out["synergy"] > 0.85 * out["mi_joint"]


def test_pid_rejects_bad_input_naming_it():
    with pytest.raises(ValueError, match=r"p must be a non-empty table of shape \(\|X1\|, \|X2\|, \|Y\|\)"):
        pid_from_table(np.ones((2, 2)))
    with pytest.raises(ValueError, match="p contains NaN"):
        pid_from_table(np.full((2, 2, 2), np.nan))
    with pytest.raises(ValueError, match="p must be non-negative"):
        pid_from_table(-np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="p must be non-negative"):
        pid_from_table(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="tol"):
        pid_from_table(np.ones((2, 2, 2)), tol=0)
    with pytest.raises(ValueError, match="max_iter"):
        pid_from_table(np.ones((2, 2, 2)), max_iter=0)
    with pytest.raises(ValueError, match="x1, x2, y must have the same number of rows"):
        pid([0, 1], [0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="x2 must hold integer codes"):
        pid([0, 1], [0.5, 1], [0, 1])


# ---------------------------------------------------------------- PID of two representations

def _one_hot_ish(codes, classes, rng, noise=0.1):
    return np.eye(classes)[codes] + noise * rng.normal(size=(len(codes), classes))


def test_default_clusters_keeps_the_noise_bias_near_a_tenth_of_a_bit():
    assert [default_clusters(n, 10) for n in (200, 1000, 2000, 20_000)] == [2, 4, 5, 10]
    assert default_clusters(50, 1) == 2 and default_clusters(10_000, 3) == 3
    for n in (1000, 2000):
        k = default_clusters(n, 10)
        assert (k * k - 1) * 9 / (2 * n) / LOG2 <= 0.1 < ((k + 1) ** 2 - 1) * 9 / (2 * n) / LOG2


def test_representation_pid_on_synthetic_towers():
    rng = np.random.default_rng(7)
    n = 1600  # 800 rows to fit the clusters, 800 to decompose
    bits = rng.integers(0, 2, (n, 2))
    y = 2 * bits[:, 0] + bits[:, 1]  # four classes, two independent bits
    z = _one_hot_ish(y, 4, rng)
    tr, te = slice(0, 800), slice(800, n)

    same = representation_pid(z[tr], z[tr], z[te], z[te], y[te])  # one tower, twice: all redundant
    assert same["clusters"] == 4 and same["n"] == 800
    assert same["redundancy"] == pytest.approx(entropy(y[te]), abs=1e-6)
    assert max(same["unique_1"], same["unique_2"], same["synergy"]) < 1e-6

    z1, z2 = _one_hot_ish(bits[:, 0], 2, rng), _one_hot_ish(bits[:, 1], 2, rng)
    split = representation_pid(z1[tr], z2[tr], z1[te], z2[te], y[te])  # each tower one of the bits
    assert split["unique_1"] > 0.9 and split["unique_2"] > 0.9
    assert split["redundancy"] < 0.05 and split["synergy"] < 0.1

    noise = rng.normal(size=(n, 4))
    one = representation_pid(z[tr], noise[tr], z[te], noise[te], y[te], permutations=3)
    assert one["unique_1"] > 1.9 and max(one["redundancy"], one["unique_2"], one["synergy"]) < 0.1
    # what the permuted targets show is estimation noise, as small as the default cluster count promises
    noise_total = sum(one[f"noise_{a}"] for a in ATOMS)
    assert 0 < noise_total < 0.15
    assert one["unique_2"] + one["synergy"] < 3 * noise_total  # the noise tower's atoms are noise-sized


def test_representation_pid_options_and_errors():
    rng = np.random.default_rng(8)
    z, y = rng.normal(size=(60, 3)), rng.integers(0, 3, 60)
    out = representation_pid(z[:30], z[:30], z[30:], z[30:], y[30:], clusters=3, permutations=0)
    assert out["clusters"] == 3 and math.isnan(out["noise_synergy"])
    with pytest.raises(ValueError, match="z1_test, z2_test and y_test must have the same number of rows"):
        representation_pid(z[:30], z[:30], z[30:], z[31:], y[30:])
    with pytest.raises(ValueError, match="z2_train and z2_test must have the same width D; got 2 and 3"):
        representation_pid(z[:30], z[:30, :2], z[30:], z[30:], y[30:])
    with pytest.raises(ValueError, match="clusters=40 exceeds the 30 rows of z1_train"):
        representation_pid(z[:30], z[:30], z[30:], z[30:], y[30:], clusters=40)
    with pytest.raises(ValueError, match="permutations"):
        representation_pid(z[:30], z[:30], z[30:], z[30:], y[30:], permutations=-1)
    with pytest.raises(ValueError, match="z1_test contains NaN"):
        representation_pid(z[:30], z[:30], np.full((30, 3), np.nan), z[30:], y[30:])
    with pytest.raises(ValueError, match="y_test must hold integer codes"):
        representation_pid(z[:30], z[:30], z[30:], z[30:], y[30:] + 0.5)
