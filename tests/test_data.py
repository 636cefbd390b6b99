"""Dataset registry on real data: digits, Fashion-MNIST (Debian package), image folders."""

import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from flexiq_search.data import fixed_subset, get_dataset, read_idx
from flexiq_search.errors import FlexiqError

from .conftest import IMAGENET_DEV


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
    model = create_model("efficientnet_lite0", num_classes=2)
    bundle = get_dataset(f"imagefolder:{tmp_path}", model=model, calibration_share=0)
    x, y = bundle.test[1]
    assert x.shape == (3, 224, 224) and y == 1 and bundle.num_classes == 2
    assert bundle.label_space == "folders in sorted order are the classes"


def test_unknown_and_missing_datasets_fail_clearly(tmp_path):
    with pytest.raises(FlexiqError, match="unknown dataset"):
        get_dataset("cifar10")
    with pytest.raises(FlexiqError, match="not found"):
        get_dataset(f"imagefolder:{tmp_path / 'nope'}")


def test_fixed_subset_is_reproducible(digits):
    a, b = fixed_subset(digits.test, 10), fixed_subset(digits.test, 10)
    assert a.indices == b.indices and len(set(a.indices)) == 10


def imagenet_subset(root, wnids, per_class, rename=None):
    """A small ImageNet-style folder: `per_class` dev photos of each wnid (folders renamed by `rename`)."""
    for wnid in wnids:
        target = root / (rename(wnid) if rename else wnid)
        target.mkdir(parents=True)
        for photo in sorted((IMAGENET_DEV / wnid).iterdir())[:per_class]:
            (target / photo.name).symlink_to(photo)
    return root


SUBSET = ["n01443537", "n01882714", "n07753113"]  # goldfish, koala, fig: ImageNet classes 1, 105, 952


@pytest.fixture(scope="module")
def lite0():
    from flexiq_search.models import create_model

    return create_model("efficientnet_lite0", pretrained=True).eval()


def test_wnid_folders_score_in_the_models_1000_class_label_space(tmp_path, lite0):
    from timm.data import ImageNetInfo

    from flexiq_search.training import accuracy

    bundle = get_dataset(f"imagefolder:{imagenet_subset(tmp_path, SUBSET, 3)}", model=lite0, calibration_share=0)
    assert bundle.num_classes == 1000 and bundle.label_space == "folder names are the model's label names"
    labels = sorted({int(bundle.test[i][1]) for i in range(len(bundle.test))})
    assert labels == sorted(ImageNetInfo().label_names().index(w) for w in SUBSET) == [1, 105, 952]
    top1, top5 = accuracy(lite0, bundle.test, num_classes=bundle.num_classes, progress=False)
    assert top1 >= 2 / 3 * 100 and top5 >= top1  # the pretrained model's real predictions, not a silent 0%


def test_class_name_folders_map_too(tmp_path, lite0):
    names = {"n01443537": "goldfish", "n01882714": "Koala", "n07753113": "fig"}
    bundle = get_dataset(f"imagefolder:{imagenet_subset(tmp_path, SUBSET, 1, rename=names.get)}", model=lite0,
                         calibration_share=0)
    assert bundle.label_space == "folder names are the model's class names"
    assert sorted(int(bundle.test[i][1]) for i in range(3)) == [1, 105, 952]


def test_unmappable_folder_is_one_clear_error(tmp_path, lite0):
    imagenet_subset(tmp_path, SUBSET, 1, rename=lambda w: "class_" + w[-3:])
    with pytest.raises(FlexiqError, match="3 class folders cannot be mapped onto the model's 1000 classes"):
        get_dataset(f"imagefolder:{tmp_path}", model=lite0)


def test_one_folder_is_split_so_no_image_calibrates_and_is_scored(tmp_path, lite0):
    from flexiq_search.data import dataset_items, holdout_split

    bundle = get_dataset(f"imagefolder:{imagenet_subset(tmp_path, SUBSET, 5)}", model=lite0)
    calibration, scored = set(dataset_items(bundle.train)), set(dataset_items(bundle.test))
    assert len(calibration) == 3 and len(scored) == 12 and not calibration & scored
    assert "3 calibration / 12 evaluation" in bundle.split
    # two folds of share 0.5 are complementary halves: every item is scored once, by a model that never saw it
    first, second = holdout_split(10, 0.5, fold=0), holdout_split(10, 0.5, fold=1)
    assert first[0] == second[1] and first[1] == second[0] and sorted(first[0] + first[1]) == list(range(10))
    with pytest.raises(FlexiqError, match="fold 2 does not exist"):
        holdout_split(10, 0.5, fold=2)


def test_unlabelled_folder_calibrates_but_is_not_scored(tmp_path, lite0):
    from flexiq_search.data import calibration_source

    for photo in sorted((IMAGENET_DEV / SUBSET[0]).iterdir())[:2]:
        (tmp_path / photo.name).symlink_to(photo)
    images = calibration_source(f"imagefolder:{tmp_path}", model=lite0)
    x, y = images[0]
    assert len(images) == 2 and x.shape == (3, 224, 224) and y == -1
    assert not get_dataset(f"imagefolder:{tmp_path}", model=lite0).labelled
