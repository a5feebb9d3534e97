import numpy as np
import pytest

from contrastlab.plots._figure import png_bytes
from contrastlab.plots.compare import grouped_bars, run_curves


def test_run_curves_draws_one_line_per_run_that_has_the_column():
    curves = {"a": {"step": np.arange(5.0), "loss": np.linspace(2, 0, 5), "uniform": -np.ones(5)},
              "b": {"step": np.arange(3.0), "loss": np.array([3.0, np.nan, 1.0])}}
    fig = run_curves(curves, ["loss", "uniform"], symlog=("loss",))
    loss, uniform = fig.axes
    assert len(loss.lines) == 2 and len(uniform.lines) == 1
    assert loss.get_yscale() == "symlog" and uniform.get_yscale() == "linear"
    np.testing.assert_array_equal(loss.lines[1].get_xdata(), [0.0, 2.0])  # the NaN row is left out
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["a", "b"]
    assert png_bytes(fig)[:4] == b"\x89PNG"


def test_run_curves_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least one run"):
        run_curves({}, ["loss"])
    with pytest.raises(ValueError, match="'step'"):
        run_curves({"a": {"loss": [1.0]}}, ["loss"])
    with pytest.raises(ValueError, match="'acc'"):
        run_curves({"a": {"step": [1], "loss": [1.0]}}, ["acc"])
    with pytest.raises(ValueError, match="at least one column"):
        run_curves({"a": {"step": [1], "loss": [1.0]}}, [])


def test_grouped_bars_places_each_value_and_leaves_gaps():
    fig = grouped_bars(["x", "y", "z"], {"R@1": [0.1, 0.2, None], "R@5": [0.4, 0.5, 0.6]}, reference=0.05)
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == [0.1, 0.2, 0.4, 0.5, 0.6]
    assert [round(y, 6) for y in ax.lines[0].get_ydata()] == [0.05, 0.05]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y", "z"]
    first_group = [p for p in ax.patches if p.get_x() < 0.5]
    assert len(first_group) == 2  # R@1 and R@5 side by side over the first group


def test_grouped_bars_errors_name_the_problem():
    with pytest.raises(ValueError, match="2 values for 3 groups"):
        grouped_bars(["a", "b", "c"], {"s": [1.0, 2.0]})
    with pytest.raises(ValueError, match="at least one group"):
        grouped_bars([], {"s": []})
