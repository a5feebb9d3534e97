import math

import pytest
import torch

from contrastlab.objectives.info_nce import info_nce
from contrastlab.recipes.analyses.normalisation import infonce_floor
from contrastlab.recipes.runner import run_recipe
from contrastlab.training.logging import read_metrics


def _simplex(n: int) -> torch.Tensor:
    """n unit vectors in R^n with pairwise cosine -1/(n-1) (a regular simplex)."""
    centred = torch.eye(n, dtype=torch.float64) - 1.0 / n
    return centred / centred.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("n, tau", [(2, 0.5), (8, 0.2), (32, 1.0)])
def test_the_floor_is_reached_by_a_simplex_and_never_beaten(n, tau):
    z = _simplex(n)
    assert float(info_nce(z, z, temperature=tau, normalize=False)) == pytest.approx(infonce_floor(n, tau), rel=1e-10)
    g = torch.Generator().manual_seed(n)
    for _ in range(20):  # any embeddings with norms at most 1 (ball), positives not aligned
        z1 = torch.randn(n, 5, generator=g, dtype=torch.float64)
        z2 = torch.randn(n, 5, generator=g, dtype=torch.float64)
        z1 = z1 / z1.norm(dim=1, keepdim=True).clamp_min(1.0) * torch.rand(n, 1, generator=g, dtype=torch.float64)
        z2 = z2 / z2.norm(dim=1, keepdim=True)
        assert float(info_nce(z1, z2, temperature=tau, normalize=False)) >= infonce_floor(n, tau) - 1e-12
    # unconstrained, scaling a well-ranked configuration up drives the loss below the floor, towards 0
    assert float(info_nce(10 * z, 10 * z, temperature=tau, normalize=False)) < infonce_floor(n, tau)


def test_floor_closed_form_and_errors():
    assert infonce_floor(2, 1.0) == pytest.approx(math.log1p(math.exp(-2.0)))
    with pytest.raises(ValueError, match="n must be an integer >= 2, got 1"):
        infonce_floor(1, 0.5)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        infonce_floor(4, 0)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("normalisation")
    return run_recipe("normalisation", scale="quick", out=out, progress=False, log=lambda *a: None)


@pytest.mark.slow
def test_quick_scale_end_to_end(quick):
    assert set(quick.runs) == {"sphere", "ball", "none"} | {f"{s}-tau={t}" for s in ("sphere", "none")
                                                           for t in (0.05, 0.1, 0.5, 1.0)}
    for name, outcome in quick.runs.items():
        rows = read_metrics(outcome.run_dir / "metrics.csv")
        assert len(rows) == 20 and all(r["norm"] > 0 for r in rows), name
    for rel in quick.summary.figures.values():
        assert (quick.out_dir / rel).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_quick_scale_shows_the_unconstrained_loss_escaping_the_floor(quick):
    none = read_metrics(quick.runs["none"].run_dir / "metrics.csv")
    sphere = read_metrics(quick.runs["sphere"].run_dir / "metrics.csv")
    ball = read_metrics(quick.runs["ball"].run_dir / "metrics.csv")
    floor = infonce_floor(128, 0.2)
    assert all(r["norm"] == pytest.approx(1.0, abs=1e-4) for r in sphere)
    assert all(r["norm"] <= 1.0 + 1e-4 for r in ball)
    assert min(r["loss"] for r in sphere + ball) >= floor  # no normalised encoder beats the floor
    assert none[-1]["loss"] < floor < sphere[-1]["loss"]  # the unconstrained one does
    assert none[-1]["norm"] > none[len(none) // 2]["norm"]  # its norms are still growing
    failed = [c.claim for c in quick.summary.checks if not c.passed]
    assert not failed, failed
