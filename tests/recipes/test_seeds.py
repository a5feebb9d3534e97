"""A recipe under several seeds: one folder per seed, and one summary of all of them (mean ± sd)."""

import json
import math
import subprocess
import sys

import pytest
import yaml

from contrastlab.errors import UserError
from contrastlab.recipes.runner import run_recipe_seeds
from contrastlab.recipes.summary import Check, Spread, Summary, Table, aggregate


def test_spread_is_the_mean_and_sample_standard_deviation():
    s = Spread((1.0, 2.0, 6.0))
    assert s.mean == 3.0 and s.sd == pytest.approx(math.sqrt(7.0))
    assert Spread((0.5,)).sd == 0.0


def test_aggregate_merges_cells_checks_and_figures():
    def summary(acc, passed, label):
        return Summary(
            tables=[Table("accuracy", ["run", "acc", "items", "best"], [["a", acc, 100, label]], note="n.")],
            figures={"curves": "curves.png"}, findings=[f"acc {acc}"],
            checks=[Check("a learns", passed, f"acc {acc}")])

    merged = aggregate({0: summary(0.5, True, "x"), 3: summary(0.7, False, "y"), 4: summary(float("nan"), True, "x")})
    (table,) = merged.tables
    run, acc, items, best = table.rows[0]
    assert (run, items, best) == ("a", 100, "x / y / x")  # equal cells stay; differing text is listed
    assert acc == "0.600 ± 0.141 (2 of 3 seeds finite)"
    assert table.note.startswith("n. ") and "3 seeds (0, 3, 4)" in table.note
    (check,) = merged.checks
    assert not check.passed and check.evidence.startswith("held under 2 of 3 seeds; seed 0: acc 0.5; seed 3: acc 0.7")
    assert merged.figures == {"curves (seed 0)": "seed-0/curves.png"}
    assert merged.findings == ["Seed 0: acc 0.5"]
    two = aggregate({0: summary(0.5, True, "x"), 1: summary(0.7, True, "x")})
    assert two.tables[0].rows[0][1] == Spread((0.5, 0.7)) and two.checks[0].passed
    assert json.loads(json.dumps(two.to_dict()))["tables"][0]["rows"][0][1]["values"] == [0.5, 0.7]


def test_tables_of_another_shape_are_shown_per_seed():
    a = Summary(tables=[Table("t", ["x"], [[1.0]])])
    b = Summary(tables=[Table("t", ["x"], [[1.0], [2.0]])])
    assert [t.title for t in aggregate({0: a, 1: b}).tables] == ["t (seed 0)", "t (seed 1)"]


@pytest.mark.parametrize("seeds, message", [([], "at least one seed"), ([1, 1], "seed 1 is given twice"),
                                            ([0, -2], "got -2"), ([True], "got True")])
def test_bad_seeds_are_refused_before_anything_is_written(tmp_path, seeds, message):
    with pytest.raises(ValueError, match=message):
        run_recipe_seeds("supervised", seeds, out=tmp_path / "out", progress=False, log=lambda *_: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_seeds_end_to_end(tmp_path):
    out = tmp_path / "sup"
    r = subprocess.run([sys.executable, "-m", "contrastlab", "recipe", "supervised", "--scale", "quick",
                        "--seeds", "0", "1", "--out", str(out), "--no-progress"], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Mean ± standard deviation over 2 seeds (0, 1)" in r.stdout and "held under" in r.stdout
    for seed in (0, 1):  # each seed is a whole recipe folder, with every run's seed shifted by it
        assert json.loads((out / f"seed-{seed}" / "recipe.json").read_text())["seeds"] == [seed]
        assert yaml.safe_load((out / f"seed-{seed}" / "runs" / "supcon" / "config.yaml").read_text())["seed"] == seed
    summary = json.loads((out / "summary.json").read_text())
    row = next(t for t in summary["tables"] if t["title"].startswith("Held-out accuracy"))["rows"][0]
    spreads = [c for c in row if isinstance(c, dict)]
    assert spreads and all(len(c["values"]) == 2 and c["sd"] >= 0 for c in spreads)
    seed0 = json.loads((out / "seed-0" / "summary.json").read_text())
    first = next(t for t in seed0["tables"] if t["title"].startswith("Held-out accuracy"))["rows"][0]
    assert all(c["values"][0] == v for c, v in zip(row, first) if isinstance(c, dict))
    page = (out / "report.html").read_text()
    assert "seed-0/report.html" in page and "seed-1/report.html" in page
    with pytest.raises(UserError, match=r"under seeds \[0, 1\], not \[0, 2\]"):
        run_recipe_seeds("supervised", [0, 2], scale="quick", out=out, resume=True, progress=False, log=lambda *_: None)
    with pytest.raises(UserError, match="already holds a recipe run"):
        run_recipe_seeds("supervised", [0, 1], scale="quick", out=out, progress=False, log=lambda *_: None)
