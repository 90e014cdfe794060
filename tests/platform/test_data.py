"""Fashion-MNIST loader: shapes, dtypes, normalisation and the missing-package message."""

import numpy as np
import pytest

from tvm_lowrank.data import FASHION_MNIST_CLASSES, load_fashion_mnist


def test_test_split_is_the_full_10000_images():
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 1, 28, 28) and images.dtype == np.float32
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(len(FASHION_MNIST_CLASSES)))
    assert np.bincount(labels).tolist() == [1000] * 10  # the test split is balanced


def test_limit_reads_the_first_items_and_normalises_with_fixed_constants():
    images, labels = load_fashion_mnist("train", limit=5000)
    assert images.shape == (5000, 1, 28, 28) and labels.shape == (5000,)
    assert labels.min() >= 0 and labels.max() <= 9
    assert abs(images.mean()) < 0.05 and abs(images.std() - 1) < 0.05
    first, first_labels = load_fashion_mnist("train", limit=3)
    np.testing.assert_array_equal(first, images[:3])
    np.testing.assert_array_equal(first_labels, labels[:3])


def test_missing_package_says_how_to_install_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path)


@pytest.mark.parametrize("kwargs", [{"split": "validation"}, {"split": "test", "limit": 0}])
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        load_fashion_mnist(**kwargs)
