"""The tiled InfoNCE / NT-Xent equal a float64 loop reference in values and gradients, and stay O(N) in memory."""

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from contrastlab.objectives import _tiled
from contrastlab.objectives._tiled import (
    CUDA_BLOCK_SIZE,
    DEFAULT_BLOCK_SIZE,
    block_rows,
    tiled_info_nce,
    tiled_nt_xent,
)

MODES = ("one_way", "symmetric", "nt_xent")


def _lse(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def reference(z1, z2, tau, mode):
    """The losses written from their formulas with Python loops over anchors (float64, autograd-able)."""
    n = z1.shape[0]
    if mode == "nt_xent":
        u = torch.cat([z1, z2])
        total = 0.0
        for k in range(2 * n):
            logits = [u[k] @ u[l] / tau for l in range(2 * n) if l != k]
            top = torch.stack(logits).max().detach()
            lse = top + torch.log(sum(torch.exp(v - top) for v in logits))
            total = total + lse - u[k] @ u[(k + n) % (2 * n)] / tau
        return total / (2 * n)
    directions = [(z1, z2)] if mode == "one_way" else [(z1, z2), (z2, z1)]
    total = 0.0
    for anchors, candidates in directions:
        for i in range(n):
            logits = torch.stack([anchors[i] @ candidates[j] / tau for j in range(n)])
            top = logits.max().detach()
            total = total + top + torch.log(torch.exp(logits - top).sum()) - logits[i]
    return total / (n * len(directions))


def tiled(z1, z2, tau, mode, block):
    if mode == "nt_xent":
        return tiled_nt_xent(z1, z2, temperature=tau, block_size=block)
    return tiled_info_nce(z1, z2, temperature=tau, symmetric=mode == "symmetric", block_size=block)


def inputs(n, d, dtype, normalize=True):
    z1, z2 = torch.randn(n, d, dtype=dtype), torch.randn(n, d, dtype=dtype)
    if normalize:
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    return z1.requires_grad_(), z2.requires_grad_()


def value_and_grads(fn, z1, z2, tau):
    loss = fn(z1, z2, tau)
    return (loss.detach(), *torch.autograd.grad(loss, (z1, z2, tau)))


def assert_close_relative(actual, expected, tol):
    """``max |a - e| <= tol * max(|e|, tiny)``: relative to the largest entry, not entry by entry."""
    scale = expected.abs().max().clamp_min(1e-30)
    err = (actual.to(expected.dtype) - expected).abs().max()
    assert err <= tol * scale, f"max error {float(err):.3g} > {tol} x {float(scale):.3g}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("n", "block"), [(2, 1), (7, 3), (13, 13), (17, 5), (23, 64)])
def test_float64_equals_loop_reference(mode, n, block):
    z1, z2 = inputs(n, 6, torch.float64)
    tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    expected = value_and_grads(lambda a, b, t: reference(a, b, t, mode), z1, z2, tau)
    actual = value_and_grads(lambda a, b, t: tiled(a, b, t, mode, block), z1, z2, tau)
    for a, e in zip(actual, expected):
        assert_close_relative(a, e, 1e-10)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("n", "block"), [(31, 8), (50, 16)])
def test_float32_equals_float64_reference(mode, n, block):
    z1, z2 = inputs(n, 16, torch.float32)
    tau32 = torch.tensor(0.07, requires_grad=True)
    actual = value_and_grads(lambda a, b, t: tiled(a, b, t, mode, block), z1, z2, tau32)
    w1, w2 = (z.detach().double().requires_grad_() for z in (z1, z2))
    tau64 = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)
    expected = value_and_grads(lambda a, b, t: reference(a, b, t, mode), w1, w2, tau64)
    for a, e in zip(actual, expected):
        assert a.dtype == torch.float32
        assert_close_relative(a, e, 1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_inputs_and_temperature(mode):
    z1, z2 = inputs(5, 3, torch.float64, normalize=False)
    tau = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, t: tiled(a, b, t, mode, 2), (z1, z2, tau))


@pytest.mark.parametrize("mode", MODES)
def test_unnormalised_inputs_and_tiny_temperature_stay_finite(mode):
    # Logits up to ~±1e3: the running log-sum-exp must not overflow where exp would.
    z1, z2 = (z.detach().mul(3.0).requires_grad_() for z in inputs(40, 8, torch.float64))
    tau = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)
    expected = value_and_grads(lambda a, b, t: reference(a, b, t, mode), z1, z2, tau)
    actual = value_and_grads(lambda a, b, t: tiled(a, b, t, mode, 9), z1, z2, tau)
    for a, e in zip(actual, expected):
        assert torch.isfinite(a).all()
        assert_close_relative(a, e, 1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_block_size_and_batch_order_do_not_change_the_loss(mode):
    z1, z2 = inputs(19, 5, torch.float64)
    losses = [tiled(z1, z2, 0.2, mode, block).detach() for block in (1, 4, 19, 1000)]
    perm = torch.randperm(19)
    losses.append(tiled(z1[perm], z2[perm], 0.2, mode, 4).detach())
    for loss in losses[1:]:
        assert abs(float(loss) - float(losses[0])) < 1e-12


def test_closed_forms():
    # Identical positives, orthogonal negatives, tau = 1: log(e + N - 1) - 1 = log(1 + (N - 1)/e).
    z = torch.eye(5, dtype=torch.float64)
    expected = math.log(1 + 4 / math.e)
    assert float(tiled_info_nce(z, z, temperature=1.0, block_size=2)) == pytest.approx(expected, abs=1e-14)
    assert float(tiled_info_nce(z, z, temperature=1.0, symmetric=True, block_size=3)) == pytest.approx(
        math.log(1 + 4 / math.e), abs=1e-14
    )
    # NT-Xent with all 2N embeddings equal: every logit equal, log(2N - 1).
    ones = torch.ones(4, 3, dtype=torch.float64)
    assert float(tiled_nt_xent(ones, ones, temperature=0.5, block_size=3)) == pytest.approx(math.log(7), abs=1e-14)


@pytest.mark.parametrize("mode", MODES)
def test_upstream_gradient_scales_and_float_temperature(mode):
    z1, z2 = inputs(11, 4, torch.float64)
    tau = torch.tensor(0.25, dtype=torch.float64, requires_grad=True)
    g1 = torch.autograd.grad(tiled(z1, z2, tau, mode, 3), (z1, z2, tau))
    g3 = torch.autograd.grad(3.0 * tiled(z1, z2, tau, mode, 3), (z1, z2, tau))
    for a, b in zip(g1, g3):
        torch.testing.assert_close(3.0 * a, b, rtol=1e-12, atol=0)
    # A float temperature gives the same loss and input gradients as the equal tensor.
    gf = torch.autograd.grad(tiled(z1, z2, 0.25, mode, 3), (z1, z2))
    for a, b in zip(g1[:2], gf):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_only_temperature_requires_grad():
    z1, z2 = (z.detach() for z in inputs(9, 4, torch.float64))
    tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(tiled_nt_xent(z1, z2, temperature=tau, block_size=4), tau)
    w1, w2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    (e,) = torch.autograd.grad(reference(w1, w2, tau, "nt_xent"), tau)
    torch.testing.assert_close(g, e, rtol=1e-10, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_computed_in_float32(dtype):
    z1, z2 = (z.detach().to(dtype).requires_grad_() for z in inputs(40, 16, torch.float32))
    loss = tiled_nt_xent(z1, z2, temperature=0.1, block_size=16)
    assert loss.dtype == dtype
    loss.backward()
    assert z1.grad.dtype == dtype and torch.isfinite(z1.grad.float()).all()
    ref = reference(z1.detach().double(), z2.detach().double(), 0.1, "nt_xent")
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-2)


@pytest.mark.parametrize("mode", MODES)
def test_forward_without_grad_gives_the_same_value(mode):
    # One-way InfoNCE forms its gradients in the forward sweep only when a backward pass can follow.
    z1, z2 = inputs(10, 4, torch.float64)
    with torch.no_grad():
        loss = tiled(z1, z2, 0.5, mode, 3)
    assert not loss.requires_grad
    assert float(loss) == pytest.approx(float(tiled(z1, z2, 0.5, mode, 3).detach()), abs=1e-14)
    assert float(loss) == pytest.approx(float(reference(z1.detach(), z2.detach(), 0.5, mode)), abs=1e-12)


def test_temperature_dtype_kept():
    z1, z2 = inputs(10, 4, torch.float64)
    tau32 = torch.tensor(0.5, requires_grad=True)  # float32 temperature, float64 embeddings
    (g,) = torch.autograd.grad(tiled_info_nce(z1, z2, temperature=tau32, block_size=3), tau32)
    assert g.dtype == torch.float32 and g.shape == ()


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64"])
def test_bad_block_size_is_named(bad):
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=f"block_size.*{bad!r}"):
        tiled_nt_xent(z, z, temperature=0.1, block_size=bad)


def test_bad_shapes_and_temperature_are_named():
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(5, 3\)"):
        tiled_info_nce(torch.randn(4, 3), torch.randn(5, 3), temperature=0.1)
    with pytest.raises(ValueError, match="batch size must be >= 2"):
        tiled_nt_xent(torch.randn(1, 3), torch.randn(1, 3), temperature=0.1)
    with pytest.raises(ValueError, match="temperature.*-0.5"):
        tiled_info_nce(torch.randn(4, 3), torch.randn(4, 3), temperature=-0.5)


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _largest_intermediate(fn, n, d):
    z1, z2 = inputs(n, d, torch.float32)
    with _LargestTensor() as probe:
        fn(z1, z2).backward()
    return probe.largest


def test_no_intermediate_grows_with_n_squared():
    n, d, block = 1500, 8, 256
    rows = 2 * n
    largest = _largest_intermediate(lambda a, b: tiled_nt_xent(a, b, temperature=0.1, block_size=block), n, d)
    assert largest <= max(rows * d, block * block) < rows * rows // 100
    largest = _largest_intermediate(
        lambda a, b: tiled_info_nce(a, b, temperature=0.1, symmetric=True, block_size=block), n, d
    )
    assert largest <= max(n * d, block * block)
    # One-way keeps a strip of `block` full rows instead of recomputing them: O(N * block).
    largest = _largest_intermediate(lambda a, b: tiled_info_nce(a, b, temperature=0.1, block_size=block), n, d)
    assert largest <= max(n * d, block * n) < n * n // 5
    # The probe does see an O(N^2) matrix when there is one.
    naive = _largest_intermediate(lambda a, b: (a @ b.T).logsumexp(1).mean(), n, d)
    assert naive >= n * n


_RSS_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from contrastlab.objectives._tiled import tiled_nt_xent
    torch.set_num_threads(1)
    n = int(sys.argv[1])
    z1 = torch.nn.functional.normalize(torch.randn(n, 8), dim=1).requires_grad_()
    z2 = torch.nn.functional.normalize(torch.randn(n, 8), dim=1).requires_grad_()
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak resident size
        f.write("5")
    before = status("VmRSS:")
    tiled_nt_xent(z1, z2, temperature=0.1).backward()
    print(json.dumps({"extra": status("VmHWM:") - before}))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_in_a_subprocess_is_far_below_one_logit_matrix():
    n = 8192  # 16384 rows: one float32 logit matrix alone is 1 GiB
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(n)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    extra = json.loads(out.stdout)["extra"]
    one_matrix = (2 * n) ** 2 * 4
    assert extra < 256 * 2**20, f"extra resident memory {extra / 2**20:.0f} MiB"
    assert extra < one_matrix / 4
    assert DEFAULT_BLOCK_SIZE**2 * 4 * 2 < 256 * 2**20


@pytest.mark.parametrize("symmetric", [False, True])
def test_info_nce_tiled_equals_naive_through_public_api(symmetric):
    from contrastlab.objectives.info_nce import info_nce

    z1, z2 = (torch.randn(37, 12, dtype=torch.float64).requires_grad_() for _ in range(2))
    tau = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    results = []
    for impl in ("naive", "tiled"):
        loss = info_nce(z1, z2, temperature=tau, symmetric=symmetric, impl=impl)
        results.append((loss.detach(), *torch.autograd.grad(loss, (z1, z2, tau))))
    for a, b in zip(*results):
        assert_close_relative(b, a, 1e-10)


def test_nt_xent_tiled_equals_naive_through_public_api():
    from contrastlab.objectives.info_nce import nt_xent

    z1, z2 = (torch.randn(29, 12).requires_grad_() for _ in range(2))
    results = []
    for impl in ("naive", "tiled"):
        loss = nt_xent(z1, z2, temperature=0.2, impl=impl)
        results.append((loss.detach(), *torch.autograd.grad(loss, (z1, z2))))
    for a, b in zip(*results):
        assert_close_relative(b, a, 1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_running_maximum_path_equals_reference(mode, dtype, monkeypatch):
    # Bounded logits skip the running maximum (one exp2 per tile); force the other path on the same inputs.
    z1, z2 = inputs(23, 6, dtype)
    tau = torch.tensor(0.2, dtype=dtype, requires_grad=True)
    w1, w2 = (z.detach().double().requires_grad_() for z in (z1, z2))
    tau64 = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    expected = value_and_grads(lambda a, b, t: reference(a, b, t, mode), w1, w2, tau64)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    for limit in (1e9, -1.0):  # unshifted, then with running maxima
        monkeypatch.setattr(_tiled, "_NO_SHIFT_LIMIT", {torch.float32: limit, torch.float64: limit})
        actual = value_and_grads(lambda a, b, t: tiled(a, b, t, mode, 5), z1, z2, tau)
        for a, e in zip(actual, expected):
            assert_close_relative(a, e, tol)


def test_no_shift_only_for_bounded_logits():
    x = F.normalize(torch.randn(50, 8), dim=1)
    assert _tiled._no_shift(x * (1.4427 / 0.1), x)  # cosine, tau = 0.1: |S2| <= 14.4
    assert not _tiled._no_shift(x * (1.4427 / 0.01), x * 2)  # |S2| up to 289 > 64: running maxima
    assert _tiled._no_shift(x.double() * (1.4427 / 0.01), x.double() * 2)  # float64 allows 2**(+-960)


def _naive(z1, z2, tau, mode):
    """The naive loss (full logits, ``cross_entropy``) in the inputs' dtype."""
    from contrastlab.objectives.info_nce import info_nce, nt_xent

    if mode == "nt_xent":
        return nt_xent(z1, z2, temperature=tau, normalize=False, impl="naive")
    return info_nce(z1, z2, temperature=tau, symmetric=mode == "symmetric", normalize=False, impl="naive")


@pytest.mark.parametrize("mode", MODES)
def test_bfloat16_inputs_match_float32_naive_loss(mode):
    # The kernel computes bf16 inputs in float32 (log-sum-exps included) and rounds only its results to bf16.
    # So against the float32 naive loss of the same (bf16-representable) values the only error is that final
    # rounding: half a bf16 unit in the last place, 2**-9 relative, checked at 2**-8 of the largest entry.
    z1, z2 = (z.detach().to(torch.bfloat16).requires_grad_() for z in inputs(300, 32, torch.float32))
    loss = tiled(z1, z2, 0.1, mode, 64)
    g1, g2 = torch.autograd.grad(loss, (z1, z2))
    assert loss.dtype == g1.dtype == g2.dtype == torch.bfloat16
    w1, w2 = (z.detach().float().requires_grad_() for z in (z1, z2))
    expected = _naive(w1, w2, 0.1, mode)
    e1, e2 = torch.autograd.grad(expected, (w1, w2))
    for a, e in ((loss, expected.detach()), (g1, e1), (g2, e2)):
        assert_close_relative(a.float(), e, 2**-8)


def test_block_rows_per_device_dtype_and_size():
    assert block_rows("cpu", 100_000, 128, torch.float32) == DEFAULT_BLOCK_SIZE
    assert block_rows(torch.device("cuda", 0), 100_000, 128, torch.float32) == CUDA_BLOCK_SIZE
    assert block_rows("cpu", 100_000, 128, torch.float64) == DEFAULT_BLOCK_SIZE // 2  # the same bytes per tile
    assert block_rows("cpu", 300, 128, torch.float32) == 300 and block_rows("cuda", 5, 8, torch.float32) == 5
    z1, z2 = (z.detach() for z in inputs(40, 8, torch.float64))
    assert float(tiled_nt_xent(z1, z2, temperature=0.3)) == pytest.approx(
        float(tiled_nt_xent(z1, z2, temperature=0.3, block_size=7)), abs=1e-12
    )


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-4), (torch.bfloat16, 2**-7)])
def test_cuda_equals_naive_in_float32_and_bfloat16(mode, dtype, tol):
    # float32: the GPU sums in another order than the float64 reference (1e-4 of the largest entry, TF32 off);
    # bfloat16: computed in float32 from the bf16 values, then rounded once to bf16 (2**-9, checked at 2**-7).
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        z1, z2 = (z.detach().to("cuda", dtype).requires_grad_() for z in inputs(3000, 128, torch.float32))
        tau = torch.tensor(0.1, device="cuda", requires_grad=True)
        loss = tiled(z1, z2, tau, mode, 1024)
        loss.backward()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    assert loss.device.type == z1.grad.device.type == tau.grad.device.type == "cuda"
    assert loss.dtype == z1.grad.dtype == z2.grad.dtype == dtype
    w1, w2 = (z.detach().double().cpu().requires_grad_() for z in (z1, z2))
    tau64 = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    expected = _naive(w1, w2, tau64, mode)  # float64 here: the naive path in the inputs' dtype
    e1, e2 = torch.autograd.grad(expected, (w1, w2))
    for a, e in ((loss, expected.detach()), (z1.grad, e1), (z2.grad, e2)):
        assert_close_relative(a.detach().double().cpu(), e, tol)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("mode", MODES)
def test_cuda_backward_never_waits_for_the_device(mode):
    z1, z2 = (z.detach().cuda().requires_grad_() for z in inputs(2000, 64, torch.float32))
    loss = tiled(z1, z2, 0.1, mode, 512)  # the forward reads one bound on the host (no_shift)
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(z1.grad).all()


def _cuda_extra_peak(fn, z1, z2):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn(z1, z2).backward()
    torch.cuda.synchronize()
    z1.grad = z2.grad = None
    return torch.cuda.max_memory_allocated() - before


@pytest.mark.cuda
@needs_cuda
def test_cuda_memory_is_linear_in_n():
    from contrastlab.objectives.info_nce import nt_xent

    n, d = 16384, 128  # NT-Xent: 32,768 rows, one float32 logit matrix is 4 GiB
    z1, z2 = (torch.randn(n, d, device="cuda").requires_grad_() for _ in range(2))
    one_matrix = (2 * n) ** 2 * 4
    tiled_extra = _cuda_extra_peak(lambda a, b: tiled_nt_xent(a, b, temperature=0.1, similarity="cosine"), z1, z2)
    clip_extra = _cuda_extra_peak(
        lambda a, b: tiled_info_nce(a, b, temperature=0.1, symmetric=True, similarity="cosine"), z1, z2
    )
    one_way_extra = _cuda_extra_peak(lambda a, b: tiled_info_nce(a, b, temperature=0.1, similarity="cosine"), z1, z2)
    naive_extra = _cuda_extra_peak(lambda a, b: nt_xent(a, b, temperature=0.1, impl="naive"), z1, z2)
    tiles = 2 * CUDA_BLOCK_SIZE**2 * 4  # the two scratch tiles
    inputs_and_grads = 32 * n * d * 4  # inputs, normalised and scaled copies, gradients: O(N D)
    assert naive_extra >= one_matrix  # the probe sees an N^2 matrix when there is one
    assert tiled_extra <= tiles + inputs_and_grads < one_matrix / 8
    assert clip_extra <= tiles + inputs_and_grads
    assert one_way_extra <= CUDA_BLOCK_SIZE * n * 4 + inputs_and_grads < n * n * 4  # a strip of rows


@pytest.mark.parametrize("impl", ["naive", "tiled"])
def test_mixed_dtypes_behave_as_the_naive_loss_on_both_paths(impl):
    """The tiled kernel keeps the naive loss's (torch's) semantics: InfoNCE's matrix product refuses mixed dtypes;
    NT-Xent concatenates the views first, which promotes them."""
    from contrastlab.losses import info_nce, nt_xent

    a, b = torch.randn(64, 8, dtype=torch.float64), torch.randn(64, 8)
    with pytest.raises(RuntimeError, match="expected m1 and m2 to have the same dtype, but got: double != float"):
        info_nce(a, b, impl=impl)
    promoted = nt_xent(a, b, impl=impl)
    assert promoted.dtype == torch.float64
    assert torch.allclose(promoted, nt_xent(a, b.double(), impl="naive"), rtol=1e-6)


def test_nan_inputs_give_a_nan_loss_on_the_tiled_path():
    from contrastlab.losses import info_nce

    a, b = torch.randn(64, 8), torch.randn(64, 8)
    a[3, 4] = float("nan")
    assert torch.isnan(info_nce(a, b, impl="tiled")) and torch.isnan(info_nce(a, b, impl="naive"))
