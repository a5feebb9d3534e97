import numpy as np
import pytest

from contrastlab.evaluation import cluster_scores


def test_separated_clusters_score_one_whatever_the_label_names():
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 10
    labels = rng.integers(0, 4, 200)
    x = centres[labels] + rng.normal(scale=0.3, size=(200, 4))
    renamed = np.array([7, 3, 11, 5])[labels]
    for y in (labels, renamed):
        out = cluster_scores(x, y)
        assert out["nmi"] == pytest.approx(1.0) and out["ari"] == pytest.approx(1.0) and out["n_clusters"] == 4


def test_unrelated_labels_score_near_zero():
    rng = np.random.default_rng(1)
    out = cluster_scores(rng.normal(size=(600, 8)), rng.integers(0, 5, 600))
    assert abs(out["ari"]) < 0.05 and out["nmi"] < 0.05


def test_errors():
    with pytest.raises(ValueError, match="n_clusters=10"):
        cluster_scores(np.random.randn(5, 2), np.arange(5), n_clusters=10)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        cluster_scores(np.random.randn(5, 2), np.arange(4))
