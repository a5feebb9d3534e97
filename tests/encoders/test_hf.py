"""Towers from Hugging Face transformers, built offline from tiny random configs or a saved directory."""

import doctest
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from contrastlab.encoders import build_model  # noqa: E402
from contrastlab.encoders import hf  # noqa: E402
from contrastlab.encoders.hf import HFText, HFVision  # noqa: E402
from contrastlab.encoders.registry import build_encoder  # noqa: E402

BERT = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 32}
VIT = {"model_type": "vit", "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
       "intermediate_size": 32, "patch_size": 4}
RESNET = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 12], "depths": [1, 1]}
VOCAB = 30
ROOT = Path(__file__).resolve().parents[2]


def sentences(width):
    """Two sentences (5 and 2 real tokens) right-padded with 0 to ``width``."""
    ids = torch.zeros(2, width, dtype=torch.int64)
    ids[0, :5] = torch.tensor([4, 9, 2, 17, 6])
    ids[1, :2] = torch.tensor([11, 3])
    return ids, torch.tensor([5, 2])


def test_docstring_examples_run():
    assert doctest.testmod(hf, optionflags=doctest.ELLIPSIS).failed == 0


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_text_shapes_and_out_dim(pooling):
    net = build_encoder("hf_text", (8,), config=BERT, vocab_size=VOCAB, pooling=pooling)
    assert net.uses_lengths and net.out_dim == 16
    assert net.net.config.vocab_size == VOCAB  # filled in from the data when the config leaves it out
    assert net(*sentences(8)).shape == (2, 16)


@pytest.mark.parametrize("config, pooling, width", [(VIT, "mean", 16), (VIT, "cls", 16), (VIT, "pooler", 16),
                                                    (RESNET, "mean", 12), (RESNET, "pooler", 12)])
def test_vision_shapes_and_out_dim(config, pooling, width):
    net = build_encoder("hf_vision", (1, 12, 16), config=config, pooling=pooling)
    assert not net.uses_lengths and net.out_dim == width
    assert net(torch.randn(3, 1, 12, 16)).shape == (3, width)
    with pytest.raises(ValueError, match=r"shape \(N, 1, 12, 16\), got \(3, 3, 12, 16\)"):
        net(torch.randn(3, 3, 12, 16))


def test_text_mean_pooling_ignores_padding():
    net = HFText((12,), config=BERT, vocab_size=VOCAB).eval()
    short, lengths = sentences(6)
    long, _ = sentences(12)
    long[:, 7:] = 8  # whatever follows the length must not matter either
    with torch.no_grad():
        a, b = net(short, lengths), net(long, lengths)
        c = net(short[:1, :5], lengths[:1])  # no padding at all
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a[:1], c, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[0], a[1])


@pytest.mark.parametrize("factory, options, batch", [
    (HFText, {"config": BERT, "vocab_size": VOCAB, "pooling": "mean"}, lambda: sentences(8)),
    (HFText, {"config": BERT, "vocab_size": VOCAB, "pooling": "cls"}, lambda: sentences(8)),
    (HFVision, {"config": VIT, "pooling": "mean"}, lambda: (torch.randn(4, 3, 8, 8),)),
    (HFVision, {"config": VIT, "pooling": "pooler"}, lambda: (torch.randn(4, 3, 8, 8),)),
])
def test_gradients_reach_every_weight(factory, options, batch):
    """Every weight gets a gradient (DistributedDataParallel refuses unused ones: an unread pooler is dropped)."""
    net = factory((8,) if factory is HFText else (3, 8, 8), **options)
    net(*batch()).square().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    first_layer = [p.grad for n, p in net.named_parameters() if re.match(r"net\.(encoder\.)?layers?\.0\.", n)]
    assert first_layer and all(g.abs().sum() > 0 for g in first_layer)


def test_saved_directory_loads_back_with_identical_outputs(tmp_path):
    text = HFText((8,), config=BERT, vocab_size=VOCAB).eval()
    text.net.save_pretrained(tmp_path / "text")
    again = HFText((8,), model=str(tmp_path / "text"), vocab_size=VOCAB).eval()
    vision = HFVision((3, 8, 8), config=VIT).eval()
    vision.net.save_pretrained(tmp_path / "vision")
    seen = HFVision((3, 8, 8), model=tmp_path / "vision").eval()
    images = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(text(*sentences(8)), again(*sentences(8)))
        assert torch.equal(vision(images), seen(images))
    assert again.training is False and HFText((8,), model=tmp_path / "text").net.training  # built in training mode


def test_a_model_saved_in_half_precision_loads_in_float32(tmp_path):
    HFText((8,), config=BERT, vocab_size=VOCAB).net.half().save_pretrained(tmp_path)
    net = HFText((8,), model=tmp_path, vocab_size=VOCAB)
    assert net(*sentences(8)).dtype == torch.float32


def _not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("no model here")
    return str(tmp_path)


def _small_vocab_dir(tmp_path):
    HFText((8,), config={**BERT, "vocab_size": 12}).net.save_pretrained(tmp_path)
    return str(tmp_path)


BAD = {
    "missing-directory": (lambda t: {"model": str(t / "nowhere")}, r"model '.*nowhere' is not a local directory"),
    "hub-name": (lambda t: {"model": "bert-base-uncased"}, r"'bert-base-uncased' is not a local directory .*never downloaded"),
    "directory-without-model": (lambda t: {"model": _not_a_model(t)}, r"cannot load a transformers model from '.*'"),
    "both": (lambda t: {"model": str(t), "config": BERT}, "exactly one of model .* or config .*, got both"),
    "neither": (lambda t: {}, "exactly one of model .* or config .*, got neither"),
    "unknown-key": (lambda t: {"config": {**BERT, "hiden_size": 8}}, "no config key 'hiden_size'; did you mean 'hidden_size'"),
    "unknown-model-type": (lambda t: {"config": {**BERT, "model_type": "bret"}}, "model_type 'bret' .*did you mean 'bert'"),
    "no-model-type": (lambda t: {"config": {"hidden_size": 8}}, "needs a model_type"),
    "bad-value": (lambda t: {"config": {**BERT, "num_attention_heads": 3}}, "cannot build a 'bert' model from config: .*3"),
    "vocab-too-small-config": (lambda t: {"config": {**BERT, "vocab_size": 12}}, "embedding table has 12 rows .* 30 tokens"),
    "vocab-too-small-directory": (lambda t: {"model": _small_vocab_dir(t)}, "embedding table has 12 rows .* 30 tokens"),
    "bad-pooling": (lambda t: {"config": BERT, "pooling": "max"}, "pooling must be one of 'mean', 'cls', got 'max'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_text_options_name_the_problem(case, tmp_path):
    options, message = BAD[case]
    with pytest.raises(ValueError, match=message) as err:
        build_encoder("hf_text", (8,), vocab_size=VOCAB, **options(tmp_path))
    assert "\n" not in str(err.value)


def test_bad_vision_options_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"config.num_channels is 1 but the images are \(3, 8, 8\)"):
        HFVision((3, 8, 8), config={**VIT, "num_channels": 1})
    HFVision((3, 8, 8), config=VIT).net.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"cannot read items of shape \(3, 16, 16\)"):
        HFVision((3, 16, 16), model=tmp_path)
    with pytest.raises(ValueError, match="'vit' models have no config key 'vocab_size'"):
        HFVision((3, 8, 8), config={**VIT, "vocab_size": 9})
    with pytest.raises(ValueError, match="gives a feature map, not tokens"):
        HFVision((3, 8, 8), config=RESNET, pooling="cls")


def test_without_transformers_the_registry_works_and_building_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    with pytest.raises(ValueError, match=r"hf_text needs the optional package transformers: pip install 'contrastlab\[hf\]'"):
        build_encoder("hf_text", (8,), config=BERT, vocab_size=VOCAB)
    code = ("import sys; sys.modules['transformers'] = None\n"
            "import contrastlab, contrastlab.encoders.build\n"
            "from contrastlab.encoders.registry import ENCODERS, build_encoder\n"
            "assert {'hf_text', 'hf_vision'} <= set(ENCODERS)\n"
            "build_encoder('mlp', (4,), hidden=[8])\n"
            "try:\n    build_encoder('hf_vision', (3, 8, 8), config={'model_type': 'vit'})\n"
            "except ValueError as err:\n    print(err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'contrastlab[hf]'" in out.stdout
    lazy = subprocess.run([sys.executable, "-c", "import sys, contrastlab.encoders.build, contrastlab.encoders.registry; "
                           "print('transformers' in sys.modules)"], capture_output=True, text=True, timeout=120)
    assert lazy.stdout.strip() == "False", lazy.stderr


def test_build_model_with_an_hf_text_tower():
    model = build_model({"view1": (8,), "view2": (8,)}, {"view1": "text", "view2": "text"},
                        encoder=("hf_text", {"config": BERT}), encoder_defaults={"vocab_size": VOCAB}, dim=6)
    tower = model.towers["text"]
    assert tower.feature_dim == 16 and tower.backbone.net.config.vocab_size == VOCAB
    ids, lengths = sentences(8)
    z = model({"view1": ids, "view2": ids}, lengths={"view1": lengths, "view2": lengths})
    assert z["view1"].shape == (2, 6)
    torch.testing.assert_close(z["view1"].norm(dim=1), torch.ones(2))


def test_train_an_image_caption_model_with_an_hf_text_tower(tmp_path):
    config = tmp_path / "hf.yaml"
    config.write_text(textwrap.dedent("""\
        data: {name: shapes, options: {n_items: 64, n_test: 16, image_size: 16, with_captions: true}}
        views: {name: modality_pair, options: {modalities: [image, text]}}
        model:
          encoder: {name: convnet, options: {widths: [8, 16]}}
          encoders:
            text:
              name: hf_text
              options:
                config: {model_type: bert, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32}
          head: {name: linear}
          dim: 8
        objective: {name: clip, options: {temperature: 0.1}}
        optim: {name: adamw, lr: 1.0e-3}
        batch_size: 16
        steps: 2
        seed: 0
        threads: 1
        device: cpu
        checkpoint: {every: 1}
        log: {every: 1, progress: false, tensorboard: false}
        """))
    exe = Path(sys.executable).with_name("contrastlab")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([str(exe), "train", str(config), "--out", str(tmp_path / "run"), "--set", "steps=3"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert list((tmp_path / "run").rglob("model.safetensors")), sorted(p.name for p in (tmp_path / "run").rglob("*"))
