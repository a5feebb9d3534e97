"""Fuzzing what users type and hand over: the config loader and the manifest parser.

Any input must give either a valid result or the one-line error, never another exception:

* configs: random YAML documents (random text, random nested data, and the working recipe with
  random values put under its keys) plus random ``--set`` overrides, all through ``cli.main``.
  The output directory already exists, so a config that checks ends at the refusal to overwrite
  it: exit 2 either way, with one line on stderr, and nothing is trained.
* manifests: random CSV and JSON-lines files (random columns, quoting, paths, captions) through
  :func:`~contrastlab.data.manifest.load_manifest`: a data set, or ``UserError`` / ``ValueError``.

Example counts are bounded so the file runs in seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import string

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contrastlab import cli
from contrastlab.data.manifest import load_manifest
from contrastlab.data.base import Dataset
from contrastlab.errors import UserError

BASE = {
    "data": {"name": "digits"},
    "views": {"name": "simclr"},
    "objective": {"name": "nt_xent", "options": {"temperature": 0.2}},
    "model": {"encoder": {"name": "mlp", "options": {"hidden": [16]}}, "head": {"name": "linear"}, "dim": 8},
    "optim": {"name": "adamw", "lr": 1e-3},
    "batch_size": 16,
    "steps": 2,
}

KEYS = [
    "data", "data.name", "data.options", "data.split", "views", "views.name", "views.options", "objective",
    "objective.name", "objective.options", "objective.options.temperature", "model", "model.encoder",
    "model.encoder.name", "model.encoder.options", "model.encoders", "model.head", "model.head.name",
    "model.head.hidden", "model.dim", "model.normalize", "model.decoder.name", "model.fusion.modality_dropout",
    "model.learnable_temperature", "model.queue_size", "optim", "optim.name", "optim.lr", "optim.betas",
    "optim.grad_clip", "schedule.name", "schedule.warmup_steps", "schedule.min_lr_ratio", "batch_size", "epochs",
    "steps", "seed", "precision", "device", "threads", "out", "checkpoint.every", "checkpoint.keep_last",
    "log.every", "log.progress", "btach_size", "optim.lrr",
]  # fmt: skip

_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["digits", "simclr", "nt_xent", "mlp", "adamw", "cosine", "bf16", "cpu", "1e-3", "-0"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(KEYS)), inner, max_size=4)
    ),
    max_leaves=12,
)
yaml_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=string.printable, max_size=120),
    values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
)


def _mutated(changes: list[tuple[str, object]]) -> str:
    raw = json.loads(json.dumps(BASE))
    for key, value in changes:
        node, parts = raw, key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return yaml.safe_dump(raw, allow_unicode=True)


overrides = st.lists(
    st.one_of(
        st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=16)),
        st.builds(lambda k, v: f"{k}={json.dumps(v)}", st.sampled_from(KEYS), scalars),
        st.text(max_size=20),
    ),
    max_size=3,
)


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "taken").mkdir()
    (root / "taken" / "keep.txt").write_text("an earlier run's file")
    return root


def _through_cli(place, text: str, sets: list[str]) -> None:
    path = place / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    argv = ["train", str(path), "--out", str(place / "taken")]
    for s in sets:
        argv += ["--set", s]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    lines = err.getvalue().strip().splitlines()
    assert code == 2, (text, sets, err.getvalue())
    assert len(lines) == 1 and lines[0].startswith("contrastlab: error: "), err.getvalue()
    assert (place / "taken" / "keep.txt").read_text() == "an earlier run's file"


@_SETTINGS
@given(text=yaml_text, sets=overrides)
def test_random_yaml_documents_and_overrides(place, text, sets):
    _through_cli(place, text, sets)


@_SETTINGS
@given(changes=st.lists(st.tuples(st.sampled_from(KEYS), st.one_of(scalars, values)), min_size=1, max_size=3),
       sets=st.one_of(st.just([]), overrides))
def test_the_recipe_with_random_values_under_its_keys(place, changes, sets):
    _through_cli(place, _mutated(changes), sets)


def test_a_config_that_checks_reaches_the_output_refusal(place):
    """The fuzzing above is not vacuous: a valid config gets past the loader to the output check."""
    err = io.StringIO()
    (place / "good.yaml").write_text(yaml.safe_dump(BASE))
    with contextlib.redirect_stderr(err):
        assert cli.main(["train", str(place / "good.yaml"), "--out", str(place / "taken")]) == 2
    assert "already exists" in err.getvalue()


# -- manifests

CELLS = st.one_of(
    st.sampled_from(["img.png", "./img.png", "sub/img.png", "img.png", "a red dot", "train", "train", "test", "cat"]),
    st.sampled_from(["missing.png", "", " ", "img.png\n", '"img.png"', "../img.png", "/dev/null", "img.png,img.png",
                     "sub", "m.csv"]),
    st.text(max_size=12),
)
COLUMNS = st.lists(st.one_of(st.sampled_from(["image", "caption", "audio", "label", "split"]), st.text(max_size=6)),
                   min_size=0, max_size=5)


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    quote = lambda c: '"' + c.replace('"', '""') + '"' if any(ch in c for ch in ',"\n') else c  # noqa: E731
    return "\n".join(",".join(quote(c) for c in row) for row in [header, *rows]) + "\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("manifest")
    (root / "sub").mkdir()
    for path in (root / "img.png", root / "sub" / "img.png"):
        Image.fromarray(np.full((6, 6, 3), 128, np.uint8)).save(path)
    return root


def _load(path) -> None:
    try:
        dataset = load_manifest(path=str(path))
    except (UserError, ValueError) as err:
        assert str(err).strip(), "an error must say what is wrong"
        return
    assert isinstance(dataset, Dataset) and len(dataset) >= 1


GOOD_HEADERS = [["image", "caption"], ["image", "caption", "label"], ["caption", "image", "split"], ["image", "audio"]]


@st.composite
def csv_manifests(draw) -> str:
    """Mostly rows as wide as the header and cells that could be right, so some manifests load."""
    header = draw(st.one_of(st.sampled_from(GOOD_HEADERS), COLUMNS))
    width = st.just(len(header)) if draw(st.integers(0, 4)) else st.integers(0, 6)
    rows = [draw(st.lists(CELLS, min_size=w, max_size=w)) for w in draw(st.lists(width, max_size=7))]
    return _csv_text(header, rows)


@_SETTINGS
@given(text=csv_manifests())
def test_random_csv_manifests(folder, text):
    path = folder / "m.csv"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _load(path)


json_values = st.recursive(st.one_of(scalars, CELLS), lambda inner: st.lists(inner, max_size=3), max_leaves=4)


@_SETTINGS
@given(lines=st.lists(st.one_of(
    st.fixed_dictionaries({"image": CELLS, "caption": CELLS}, optional={"label": CELLS, "split": CELLS}).map(json.dumps),
    st.dictionaries(st.one_of(st.sampled_from(["image", "caption", "audio", "label", "split"]), st.text(max_size=5)),
                    json_values, max_size=5).map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=30),
), max_size=6))
def test_random_jsonl_manifests(folder, lines):
    path = folder / "m.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    _load(path)


def test_a_manifest_that_parses_gives_a_data_set(folder):
    """The fuzzing above is not vacuous: well-formed lines give a data set."""
    path = folder / "good.jsonl"
    path.write_text("".join(json.dumps({"image": "img.png", "caption": f"dot {i}"}) + "\n" for i in range(5)))
    dataset = load_manifest(path=str(path))
    assert len(dataset) == 4 and set(dataset.modalities) == {"image", "text"}


# -- the inputs random generation is unlikely to reach


def _bomb(levels: int = 8) -> str:
    """A 'billion laughs' document: each level lists the previous one nine times, through aliases."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text, sets, message",
    [
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", [], "is nested too deeply to be a config"),
        ("a: " + "{b: " * 3000 + "1" + "}" * 3000 + "\n", [], "is nested too deeply to be a config"),
        (yaml.safe_dump(BASE), ["seed=" + "[" * 5000 + "]" * 5000], "--set seed: is nested too deeply"),
        (_bomb(), [], "its aliases unfold to"),
        (yaml.safe_dump(BASE), ["data.options=" + "{" + _bomb().replace("\n", ", ").rstrip(", ") + "}"], "its aliases unfold to"),
    ],
    ids=["deep-lists", "deep-mappings", "deep-override", "alias-bomb", "alias-bomb-override"],
)
def test_pathological_yaml_is_refused_in_one_line(place, text, sets, message):
    _through_cli(place, text, sets)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        cli.main(["train", str(place / "config.yaml"), "--out", str(place / "taken"), *(a for s in sets for a in ("--set", s))])
    assert message in err.getvalue()


def test_a_few_anchors_are_still_fine():
    from contrastlab.training._schema import parse_yaml

    doc = parse_yaml("opts: &o {hidden: [16, 16]}\nmodel: {encoder: {options: *o}}\n")
    assert doc["model"]["encoder"]["options"] == {"hidden": [16, 16]}


# -- data set and view options: whatever a config puts under `options`

OPTION_VALUES = st.one_of(scalars, st.lists(st.one_of(st.integers(-3, 40), st.floats(-1, 2), st.text(max_size=6)), max_size=3),
                          st.sampled_from(["image", "text", "colour", "location", "A", "lab", "Y", "diagonal", [0.2, 1.0]]))


@pytest.fixture(scope="module")
def small_data():
    from contrastlab.data.registry import build_dataset

    return {"shapes": build_dataset("shapes", n_items=12, image_size=8, with_captions=True), "digits": build_dataset("digits")}


@_SETTINGS
@given(data=st.data())
def test_random_view_options_build_or_say_which_option_is_wrong(small_data, data):
    from contrastlab.views.registry import VIEWS, build_views, view_options

    name = data.draw(st.sampled_from(sorted(VIEWS)))
    keys = data.draw(st.lists(st.sampled_from(view_options(name)), max_size=3, unique=True))
    options = {k: data.draw(OPTION_VALUES) for k in keys}
    dataset = small_data[data.draw(st.sampled_from(sorted(small_data)))]
    try:
        views = build_views(name, dataset, **options)
    except (UserError, ValueError) as err:
        assert str(err).strip()
        return
    batch = dataset.get(__import__("torch").arange(4))
    assert set(views.eval_views(batch)) == set(views.view_names)


@_SETTINGS
@given(data=st.data())
def test_random_data_set_options_build_or_say_which_option_is_wrong(data):
    from contrastlab.data.registry import build_dataset, dataset_options

    name = data.draw(st.sampled_from(["shapes", "digits", "image_folder", "npz", "manifest"]))
    allowed = [k for k in dataset_options(name) if k not in ("with_speech", "cache_dir", "workers")]
    keys = data.draw(st.lists(st.sampled_from(allowed), max_size=3, unique=True)) if allowed else []
    options = {k: data.draw(OPTION_VALUES) for k in keys}
    if name == "shapes":
        options = {**options, "n_items": 12, "image_size": 8} if data.draw(st.booleans()) else options
        if not isinstance(options.get("n_items"), int) or options.get("n_items", 0) > 64:
            options["n_items"] = 12
    try:
        build_dataset(name, **options)
    except (UserError, ValueError) as err:
        assert str(err).strip()
