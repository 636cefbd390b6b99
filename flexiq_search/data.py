"""Dataset registry: `digits`, `fashion-mnist`, `imagefolder:PATH`.

Everything here works offline: scikit-learn ships digits, Debian ships Fashion-MNIST
(`dataset-fashion-mnist`), and image folders are the user's own (ImageNet layout).
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from .errors import FlexiqError

FASHION_MNIST_DIR = Path(os.environ.get("FLEXIQ_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


@dataclass
class DatasetBundle:
    """A train split (calibration and training draw from it) and a test split (evaluation)."""

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    in_chans: int
    image_size: int
    train_flip: bool = False  # whether horizontal flips are a valid augmentation


_DATASETS: dict[str, Callable[..., DatasetBundle]] = {}


def register_dataset(name: str):
    def wrap(factory):
        _DATASETS[name] = factory
        return factory

    return wrap


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def parse_dataset_spec(spec: str) -> tuple[str, str | None]:
    """Split `name[:ARGUMENT]` and check the name, before anything heavy is loaded."""
    name, _, argument = spec.partition(":")
    if name not in _DATASETS:
        raise FlexiqError(f"unknown dataset {spec!r}; known: digits, fashion-mnist, imagefolder:PATH")
    return name, argument or None


def get_dataset(spec: str, *, model: torch.nn.Module | None = None) -> DatasetBundle:
    """Build a dataset from `name` or `name:ARGUMENT` (as for `imagefolder:PATH`)."""
    name, argument = parse_dataset_spec(spec)
    return _DATASETS[name](argument, model=model)


def _standardize(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = float(train.mean()), float(train.std())
    return (train - mean) / std, (test - mean) / std


@register_dataset("digits")
def digits(argument: str | None = None, *, model=None) -> DatasetBundle:
    """scikit-learn's 1,797 handwritten digits (8x8, 1 channel); a fixed 80/20 split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    n_test = len(labels) // 5
    test_idx, train_idx = order[:n_test], order[n_test:]
    train_x, test_x = _standardize(images[train_idx], images[test_idx])
    return DatasetBundle("digits", TensorDataset(train_x, labels[train_idx]), TensorDataset(test_x, labels[test_idx]),
                         num_classes=10, in_chans=1, image_size=8)


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file as used by MNIST-style datasets."""
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        magic = f.read(4)
        if len(magic) != 4 or magic[:2] != b"\0\0" or magic[2] != 0x08:
            raise FlexiqError(f"{path} is not an unsigned-byte IDX file")
        dims = struct.unpack(">" + "I" * magic[3], f.read(4 * magic[3]))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size != int(np.prod(dims)):
        raise FlexiqError(f"{path} is truncated: {data.size} bytes for shape {dims}")
    return data.reshape(dims)


@register_dataset("fashion-mnist")
def fashion_mnist(argument: str | None = None, *, model=None) -> DatasetBundle:
    """Fashion-MNIST from the Debian package's files (60k train, 10k test, 28x28, 1 channel)."""
    root = Path(argument) if argument else FASHION_MNIST_DIR
    files = {split: (root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz")
             for split, prefix in (("train", "train"), ("test", "t10k"))}
    missing = [str(p) for pair in files.values() for p in pair if not p.is_file()]
    if missing:
        raise FlexiqError(f"Fashion-MNIST not found ({missing[0]}): run `sudo apt-get install dataset-fashion-mnist`")
    arrays = {}
    for split, (images, labels) in files.items():
        x = torch.from_numpy(read_idx(images).copy()).float().unsqueeze(1) / 255.0
        y = torch.from_numpy(read_idx(labels).astype(np.int64))
        arrays[split] = (x, y)
    train_x, test_x = _standardize(arrays["train"][0], arrays["test"][0])
    return DatasetBundle("fashion-mnist", TensorDataset(train_x, arrays["train"][1]),
                         TensorDataset(test_x, arrays["test"][1]), num_classes=10, in_chans=1, image_size=28,
                         train_flip=True)


@register_dataset("imagefolder")
def imagefolder(argument: str | None = None, *, model=None) -> DatasetBundle:
    """ImageNet-style class folders, with timm's eval transforms for `model`.

    PATH/train and PATH/val are used when both exist; otherwise PATH serves both splits. Class
    indices follow sorted folder names (synset order for ImageNet, matching timm's classifiers).
    """
    from timm.data import create_transform, resolve_data_config
    from torchvision.datasets import ImageFolder

    if not argument:
        raise FlexiqError("imagefolder needs a path: imagefolder:PATH")
    root = Path(argument)
    if not root.is_dir():
        raise FlexiqError(f"image folder not found: {root}")
    config = resolve_data_config({}, model=model) if model is not None else resolve_data_config({})
    transform = create_transform(**config)
    train_root, val_root = root / "train", root / "val"
    if not (train_root.is_dir() and val_root.is_dir()):
        train_root = val_root = root
    try:
        train, test = ImageFolder(str(train_root), transform), ImageFolder(str(val_root), transform)
    except (FileNotFoundError, RuntimeError) as exc:
        raise FlexiqError(f"{root}: {exc}") from None
    return DatasetBundle(f"imagefolder:{root}", train, test, num_classes=len(test.classes),
                         in_chans=config["input_size"][0], image_size=config["input_size"][-1])


def fixed_subset(dataset: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """The first `n` items of a seeded permutation: the same samples on every run and machine."""
    if n is None or n >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(dataset, order.tolist())
