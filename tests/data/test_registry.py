import numpy as np
import pytest
import torch

from contrastlab.data import DATASETS, Dataset, build_dataset
from contrastlab.data.registry import dataset_options


def test_every_name_is_registered():
    assert set(DATASETS) == {"shapes", "digits", "mnist", "mnist1d", "image_folder", "npz", "manifest", "hf", "shards",
                             "factorcl_synthetic"}


@pytest.mark.parametrize("name,options", [("shapes", {"n_items": 10}), ("digits", {}), ("mnist1d", {"n_samples": 100})])
def test_builds_protocol_data_sets_with_disjoint_splits(name, options):
    train = build_dataset(name, split="train", seed=1, **options)
    test = build_dataset(name, split="test", seed=1, **options)
    assert isinstance(train, Dataset) and isinstance(test, Dataset)
    assert train.modalities == test.modalities
    modality = next(iter(train.modalities))
    a = train.get(torch.arange(len(train))).inputs[modality].flatten(1)
    b = test.get(torch.arange(len(test))).inputs[modality].flatten(1)
    assert torch.cdist(b, a).min() > 0  # no test item equals a training item


def test_unknown_names_and_options_get_a_did_you_mean():
    with pytest.raises(ValueError, match="unknown data set 'mnist-1d'; did you mean 'mnist1d'"):
        build_dataset("mnist-1d")
    with pytest.raises(ValueError, match="unknown option 'colors' for data set 'shapes'; did you mean 'colours'"):
        build_dataset("shapes", colors=["red"])
    with pytest.raises(ValueError, match="needs the option 'root'"):
        build_dataset("image_folder")
    with pytest.raises(ValueError, match="'validation'"):
        build_dataset("digits", split="validation")
    assert "with_speech" in dataset_options("shapes") and "split" not in dataset_options("shapes")


def test_user_data_by_name(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.random.rand(10, 1, 4, 4), y=np.arange(10) % 2)
    ds = build_dataset("npz", split="test", path=str(tmp_path / "d.npz"))
    assert len(ds) == 2 and ds.modalities == {"image": (1, 4, 4)}
