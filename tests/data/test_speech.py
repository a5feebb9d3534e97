import shutil

import numpy as np
import pytest
import torch

from contrastlab.data import speech
from contrastlab.data.shapes import ShapesDataset
from contrastlab.data.speech import SpeechSynthesizer, Utterance, cache_root
from contrastlab.errors import UserError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def _forbid_espeak(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("espeak-ng ran although the cache holds the caption")

    monkeypatch.setattr(speech, "_run_espeak", fail)


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("CONTRASTLAB_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("CONTRASTLAB_CACHE")
    assert cache_root().parts[-2:] == (".cache", "contrastlab")


def test_missing_espeak_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="apt-get install espeak-ng"):
        SpeechSynthesizer(cache_dir=tmp_path)([Utterance("a red circle")])
    with pytest.raises(UserError, match="apt-get install espeak-ng"):
        ShapesDataset(n_items=2, with_speech=True, cache_dir=str(tmp_path))


def test_keys_depend_on_every_parameter(tmp_path):
    synth = SpeechSynthesizer(cache_dir=tmp_path)
    base = Utterance("a red circle", "en-us", 160, 50)
    keys = {synth.key(u) for u in (base, Utterance("a red square", "en-us", 160, 50),
                                   Utterance("a red circle", "en-gb", 160, 50),
                                   Utterance("a red circle", "en-us", 170, 50),
                                   Utterance("a red circle", "en-us", 160, 55))}
    assert len(keys) == 5 and synth.key(base) == SpeechSynthesizer(cache_dir=tmp_path).key(base)


@needs_espeak
def test_spoken_captions_have_the_expected_shape_and_are_cached(monkeypatch, tmp_path):
    synth = SpeechSynthesizer(cache_dir=tmp_path, workers=2)
    utts = [Utterance("a small red circle at the top left", "en-us", 160, 50),
            Utterance("a big blue star in the centre", "en-gb-scotland+f3", 140, 40),
            Utterance("a small red circle at the top left", "en-us", 160, 50)]
    specs = synth(utts)
    assert synth.synthesised == 2  # the repeated caption is spoken once
    for s in specs:
        assert s.dtype == np.float32 and s.shape[0] == 40 and np.isfinite(s).all()
        assert 100 < s.shape[1] < 400  # 1-4 s at 100 frames per second
    assert np.array_equal(specs[0], specs[2])
    # Trimmed: the first and last frames carry speech energy, not the ~0.3 s of silence espeak adds.
    raw, _ = speech.parse_wav(speech._run_espeak(speech.espeak_executable(), utts[1]))
    assert specs[1].shape[1] < 100 * len(raw) / 22050 - 20
    _forbid_espeak(monkeypatch)
    again = SpeechSynthesizer(cache_dir=tmp_path)(utts)
    assert all(np.array_equal(a, b) for a, b in zip(specs, again))
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)  # cached captions need no espeak-ng
    assert len(SpeechSynthesizer(cache_dir=tmp_path)(utts[:1])) == 1


@needs_espeak
def test_shapes_with_speech(monkeypatch, tmp_path):
    ds = ShapesDataset(n_items=4, with_captions=True, with_speech=True, cache_dir=str(tmp_path))
    batch = ds.get(torch.arange(4))
    audio, lengths = batch.inputs["audio"], batch.lengths["audio"]
    assert audio.shape == (4, *ds.modalities["audio"]) and ds.modalities["audio"][0] == 40
    assert int(lengths.max()) == audio.shape[2]
    for i in range(4):
        assert torch.all(audio[i, :, lengths[i]:] == ds.synthesizer.mel.floor)  # padded with silence
    # Voices come from the documented set; a second data set with the same seed reuses the cache.
    assert set(ds.nuisance["voice"].tolist()) <= set(range(len(speech.VOICES)))
    _forbid_espeak(monkeypatch)
    again = ShapesDataset(n_items=4, with_captions=True, with_speech=True, cache_dir=str(tmp_path))
    assert torch.equal(again.get(torch.arange(4)).inputs["audio"], audio)
