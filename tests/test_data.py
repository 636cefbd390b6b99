"""Dataset registry on real data: digits, Fashion-MNIST (Debian package), image folders."""

import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from flexiq_search.data import fixed_subset, get_dataset, read_idx
from flexiq_search.errors import FlexiqError


def test_digits_split_is_fixed_and_standardized(digits):
    assert len(digits.train) + len(digits.test) == 1797
    x, y = digits.test[0]
    assert x.shape == (1, 8, 8) and 0 <= int(y) < 10
    assert abs(float(digits.train.tensors[0].mean())) < 1e-4
    again = get_dataset("digits")
    assert torch.equal(again.test.tensors[1], digits.test.tensors[1])


def test_fashion_mnist_from_the_debian_package():
    bundle = get_dataset("fashion-mnist")
    assert (len(bundle.train), len(bundle.test)) == (60000, 10000)
    assert bundle.train[0][0].shape == (1, 28, 28) and bundle.num_classes == 10
    assert sorted(torch.unique(bundle.test.tensors[1]).tolist()) == list(range(10))


def test_missing_fashion_mnist_names_the_apt_command(tmp_path):
    with pytest.raises(FlexiqError, match="apt-get install dataset-fashion-mnist"):
        get_dataset(f"fashion-mnist:{tmp_path}")


def test_truncated_idx_file_is_refused(tmp_path):
    path = tmp_path / "bad-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\0\0\x08\x03" + np.array([10, 28, 28], dtype=">u4").tobytes() + b"\0" * 100)
    with pytest.raises(FlexiqError, match="truncated"):
        read_idx(path)


def test_imagefolder_uses_the_models_eval_transform(tmp_path):
    from sklearn.datasets import load_sample_images

    from flexiq_search.models import create_model

    for name, image in zip(("a_china", "b_flower"), load_sample_images().images):
        (tmp_path / name).mkdir()
        Image.fromarray(image).save(tmp_path / name / "0.png")
    model = create_model("efficientnet_lite0")
    bundle = get_dataset(f"imagefolder:{tmp_path}", model=model)
    x, y = bundle.test[1]
    assert x.shape == (3, 224, 224) and y == 1 and bundle.num_classes == 2


def test_unknown_and_missing_datasets_fail_clearly(tmp_path):
    with pytest.raises(FlexiqError, match="unknown dataset"):
        get_dataset("cifar10")
    with pytest.raises(FlexiqError, match="not found"):
        get_dataset(f"imagefolder:{tmp_path / 'nope'}")


def test_fixed_subset_is_reproducible(digits):
    a, b = fixed_subset(digits.test, 10), fixed_subset(digits.test, 10)
    assert a.indices == b.indices and len(set(a.indices)) == 10
