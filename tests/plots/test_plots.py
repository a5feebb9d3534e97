import io
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

from contrastlab.plots import (
    alignment_uniformity_scatter, circle_angles, hypersphere_plot, invariance_bars, neighbour_grid, png_bytes,
    read_metrics_csv, save_png, training_curves, tsne_plot, von_mises_density,
)

PNG = b"\x89PNG\r\n\x1a\n"


def pixels(fig):
    return imread(io.BytesIO(png_bytes(fig)), format="png")


def test_importing_plots_leaves_pyplot_alone():
    code = "import contrastlab.plots, sys; print('matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_neighbour_grid_places_the_query_and_its_neighbours():
    # Flat-coloured images: the mosaic's first tile must be the query's colour, the next ones its neighbours'.
    colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=float)
    images = np.broadcast_to(colours[:, :, None, None], (4, 3, 16, 16)).copy()
    fig = neighbour_grid(images, [0], [[2, 1, 3]], [[0.9, 0.5, 0.1]])
    assert len(fig.axes) == 1
    mosaic = fig.axes[0].get_images()[0].get_array()
    assert mosaic.shape[1] > 4 * 16
    np.testing.assert_array_equal(mosaic[8, 8], colours[0])  # inside the query tile
    tiles = [c for c in range(mosaic.shape[1]) if not np.allclose(mosaic[8, c], 1.0)]
    firsts = [tiles[0]] + [b for a, b in zip(tiles, tiles[1:]) if b != a + 1]
    assert [tuple(mosaic[8, c]) for c in firsts] == [tuple(colours[i]) for i in (0, 2, 1, 3)]
    assert any(t.get_text() == "0.90" for t in fig.axes[0].texts)


def test_neighbour_grid_grey_and_rescaled_images_and_errors():
    fig = neighbour_grid(np.random.randn(5, 1, 8, 8) * 10, [0, 1], [[1], [2]])
    assert pixels(fig).shape[2] in (3, 4)
    with pytest.raises(ValueError, match="channels"):
        neighbour_grid(np.zeros((3, 2, 8, 8)), [0], [[1]])
    with pytest.raises(ValueError, match=r"\(Q, k\)"):
        neighbour_grid(np.zeros((3, 3, 8, 8)), [0, 1], [[1]])


def test_circle_angles_and_von_mises_density():
    angles, how = circle_angles(np.array([[1.0, 1.0], [-2.0, 0.0], [0.0, -0.5]]))
    np.testing.assert_allclose(angles, [np.pi / 4, np.pi, -np.pi / 2])
    assert how == "2-D embeddings"
    _, how = circle_angles(np.random.randn(20, 5))
    assert "PCA" in how
    grid = np.linspace(-np.pi, np.pi, 4001)
    density = von_mises_density(np.array([0.0, 2.0, -3.0]), grid, kappa=20.0)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-6)
    from scipy.special import i0

    by_hand = [np.mean([np.exp(20 * np.cos(g - a)) / (2 * np.pi * i0(20)) for a in (0.0, 2.0, -3.0)]) for g in grid[::400]]
    np.testing.assert_allclose(density[::400], by_hand, rtol=1e-10)
    flat = von_mises_density(np.linspace(-np.pi, np.pi, 360, endpoint=False), grid)
    np.testing.assert_allclose(flat, 1 / (2 * np.pi), rtol=1e-6)  # uniform angles: a flat density
    with pytest.raises(ValueError, match="D >= 2"):
        circle_angles(np.zeros((4, 1)))


def test_hypersphere_plot_panels():
    fig = hypersphere_plot(np.random.randn(60, 2), np.arange(60) % 4)
    assert len(fig.axes) == 2 + 4
    assert len(hypersphere_plot(np.random.randn(30, 8)).axes) == 2
    with pytest.raises(ValueError, match=r"\(30,\)"):
        hypersphere_plot(np.random.randn(30, 2), np.arange(10))


def test_alignment_uniformity_scatter():
    fig = alignment_uniformity_scatter(["a", "b", "c"], [0.4, 0.8, 1.2], [-3.8, -2.5, -1.0], [0.9, None, 0.5])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["a", "b", "c"]
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    np.testing.assert_allclose(offsets, [[-3.8, 0.4], [-2.5, 0.8], [-1.0, 1.2]])  # x = uniformity, y = alignment
    assert len(alignment_uniformity_scatter(["a"], [0.1], [-1.0]).axes) == 1  # no accuracy: no colour bar
    with pytest.raises(ValueError, match="same non-zero length"):
        alignment_uniformity_scatter(["a", "b"], [0.1], [-1.0])


def test_metrics_csv_and_curves(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,epoch,loss,phase,lr\n10,0,2.5,train,0.1\n20,0,,train,0.05\n30,1,1.5,train,0.01\n")
    columns = read_metrics_csv(path)
    assert list(columns) == ["step", "epoch", "loss", "lr"]  # the text column is dropped
    assert np.isnan(columns["loss"][1])
    fig = training_curves(columns)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "lr"]  # step is the x axis, epoch is not a metric
    x, y = fig.axes[0].get_lines()[0].get_data()
    assert list(x) == [10, 30] and list(y) == [2.5, 1.5]  # the missing value is skipped
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="header"):
        read_metrics_csv(tmp_path / "empty.csv")
    with pytest.raises(FileNotFoundError):
        read_metrics_csv(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="no metric"):
        training_curves({"step": np.arange(3.0)})


def test_invariance_bars():
    report = {"shape": {"score": 0.9, "purity": 0.8, "chance": 0.2}, "colour": {"score": None, "purity": 0.1,
                                                                               "chance": 0.12}}
    fig = invariance_bars({"head": report, "raw": report})
    score_ax = fig.axes[0]
    heights = [p.get_height() for p in score_ax.patches]
    assert heights[0] == 0.9 and np.isnan(heights[1])  # a collapsed encoder's score is drawn as no bar
    with pytest.raises(ValueError):
        invariance_bars({})


def test_tsne_plot_and_saving(tmp_path):
    x = np.concatenate([np.random.randn(20, 6), np.random.randn(20, 6) + 8])
    fig = tsne_plot(x, np.repeat([0, 1], 20), perplexity=5)
    assert "40 points" in fig.axes[0].get_title()
    path = save_png(fig, tmp_path / "sub" / "tsne.png")
    assert path.read_bytes()[:8] == PNG
    assert "10 points" in tsne_plot(x, max_points=10).axes[0].get_title()
    with pytest.raises(ValueError, match="N >= 4"):
        tsne_plot(np.zeros((3, 2)))


def test_neighbour_grid_captions_each_tile_with_its_class_name():
    images = np.random.rand(5, 3, 16, 16)
    labels = np.array([0, 1, 0, 2, 7])  # 7 has no name: shown as the number
    fig = neighbour_grid(images, [0], [[2, 1, 4]], [[0.9, 0.5, 0.1]], labels=labels,
                         class_names=["cat", "dog", "a very long class name"])
    texts = {t.get_text(): t for t in fig.axes[0].texts}
    assert [t.get_text() for t in fig.axes[0].texts if t.get_text() in ("cat", "dog", "7")] == ["cat", "cat", "dog", "7"]
    colours = [t.get_color() for t in fig.axes[0].texts if t.get_text() in ("cat", "dog", "7")]
    assert colours[1] == "#1b7f3b" and colours[2] == colours[3] == "#b3261e"  # same class green, others red
    assert "0.90" in texts and "class" in fig.texts[0].get_text()  # similarities stay; the title says what colours mean
    long = neighbour_grid(images, [3], [[0]], labels=labels, class_names=["cat", "dog", "a very long class name"])
    assert "a very lon…" in [t.get_text() for t in long.axes[0].texts]
    with pytest.raises(ValueError, match="one label per image"):
        neighbour_grid(images, [0], [[1]], labels=[0, 1])


def test_hypersphere_and_tsne_name_the_classes():
    x, y = np.random.randn(40, 3), np.arange(40) % 3
    names = ["cat", "dog", "<bird>"]
    assert [ax.get_title() for ax in hypersphere_plot(x, y, class_names=names).axes[2:]] == names
    assert [ax.get_title() for ax in hypersphere_plot(x, y).axes[2:]] == ["class 0", "class 1", "class 2"]
    legend = tsne_plot(x, y, perplexity=5, class_names=names).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == names


def test_a_collapsed_point_is_hollow_grey_and_labelled():
    fig = alignment_uniformity_scatter(["head", "random_head"], [0.4, 0.0004], [-3.8, -0.003], [0.6, 0.3],
                                       collapsed=[False, True])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["head", "random_head (collapsed)"]
    hollow = ax.collections[1]
    assert hollow.get_facecolor().size == 0 or hollow.get_facecolor()[0][3] == 0  # no fill
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "collapsed: features near one point, so a near-zero alignment is meaningless"]
    assert len(fig.axes) == 2  # the colour bar is for the one accuracy left: the collapsed row is not on it
    with pytest.raises(ValueError, match="same non-zero length"):
        alignment_uniformity_scatter(["a"], [0.1], [-1.0], collapsed=[True, False])
