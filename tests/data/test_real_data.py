import random

import numpy as np
import pytest
import torch

from contrastlab.data import bundled
from contrastlab.data._split import split_indices
from contrastlab.data.base import Dataset
from contrastlab.data.bundled import load_digits, load_mnist, load_mnist1d


@pytest.mark.parametrize("loader,n_train,n_test,modality,shape", [
    (load_digits, 1438, 359, "image", (1, 8, 8)),
    (load_mnist, 4000, 1000, "image", (1, 28, 28)),
    (load_mnist1d, 4000, 1000, "signal", (40,)),
])
def test_bundled_data_load_offline_with_the_documented_shapes(loader, n_train, n_test, modality, shape):
    train, test = loader(split="train"), loader(split="test")
    assert isinstance(train, Dataset) and (len(train), len(test)) == (n_train, n_test)
    assert train.modalities == {modality: shape} and train.num_classes == 10 and train.factor_names == ()
    batch = train.get(torch.arange(len(train)))
    x = batch.inputs[modality]
    assert x.dtype == torch.float32 and x.shape == (n_train, *shape) and torch.isfinite(x).all()
    if modality == "image":
        assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
    assert batch.labels.dtype == torch.int64 and set(batch.labels.tolist()) == set(range(10))
    assert torch.equal(loader(split="train", seed=5).get(torch.arange(7)).inputs[modality], x[:7])
    assert not any(torch.equal(test.get(torch.tensor([i])).inputs[modality][0], x[0]) for i in range(len(test)))


def test_mnist1d_leaves_the_global_random_state_alone():
    bundled._mnist1d_arrays.cache_clear()  # make sure the generator really runs
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    load_mnist1d(split="test", n_samples=100)
    assert np.random.rand() == expected_np and random.random() == expected_py


def test_split_is_disjoint_covering_stratified_and_fixed():
    labels = np.repeat(np.arange(4), [10, 20, 5, 2])
    train, test = split_indices(len(labels), "train", labels=labels), split_indices(len(labels), "test", labels=labels)
    assert not set(train) & set(test) and sorted([*train, *test]) == list(range(len(labels)))
    assert np.bincount(labels[test], minlength=4).tolist() == [2, 4, 1, 1]
    assert np.array_equal(test, split_indices(len(labels), "test", labels=labels))
    with pytest.raises(ValueError, match="'valid'"):
        split_indices(10, "valid")
    with pytest.raises(ValueError, match="1.5"):
        split_indices(10, "train", test_fraction=1.5)


def test_digits_read_from_the_file_equal_scikit_learns_loader():
    """The digits are read from the file scikit-learn ships, without importing scikit-learn (a second at every
    command's start): the same images and labels as ``sklearn.datasets.load_digits``, in the same order."""
    from sklearn.datasets import load_digits as sk_digits

    from contrastlab.data.bundled import _digits_arrays

    x, y = _digits_arrays()
    ref = sk_digits()
    np.testing.assert_array_equal(x, ref.images.astype(np.float32) / 16.0)
    np.testing.assert_array_equal(y, ref.target)
    assert x.dtype == np.float32 and y.dtype == np.int64
