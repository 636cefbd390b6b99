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
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from .errors import FlexiqError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_CALIBRATION_SHARE = 0.2  # of a single labelled folder, held out for calibration when no other source is given
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
    labelled: bool = True  # False: a folder of images without classes (calibration only)
    label_space: str = "dataset labels"  # how labels relate to the model's outputs
    split: str = "train split calibrates, test split is scored"  # where calibration and evaluation come from


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


def get_dataset(spec: str, *, model: torch.nn.Module | None = None, **options) -> DatasetBundle:
    """Build a dataset from `name` or `name:ARGUMENT` (as for `imagefolder:PATH`).

    `options` go to the factory: `calibration_share` and `fold` split a single image folder (0: no
    calibration share, all of it is scored); datasets with their own train split ignore them.
    """
    name, argument = parse_dataset_spec(spec)
    return _DATASETS[name](argument, model=model, **options)


def _standardize(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = float(train.mean()), float(train.std())
    return (train - mean) / std, (test - mean) / std


def classifier_size(model: torch.nn.Module | None) -> int | None:
    """Number of classes the model predicts (timm's `num_classes`, else the last Linear's outputs)."""
    if model is None:
        return None
    count = getattr(model, "num_classes", None)
    if isinstance(count, int) and count > 0:
        return count
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return linears[-1].out_features if linears else None


def model_label_names(model: torch.nn.Module | None) -> tuple[list[str], list[str]] | None:
    """(label names, readable class names) of the model's label space, when it is a known one.

    A timm `pretrained_cfg["label_names"]` list wins; otherwise a classifier of an ImageNet size
    (1000, 11k, 12k, 21k, 22k classes) is taken to use that subset's WordNet ids, in timm's order.
    """
    if model is None:
        return None
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("label_names")
    if names:
        return list(names), list(cfg.get("label_descriptions") or names)
    from timm.data import ImageNetInfo, infer_imagenet_subset

    count = classifier_size(model)
    subset = infer_imagenet_subset({"num_classes": count}) if count else None
    if subset is None:
        return None
    info = ImageNetInfo(subset)
    return info.label_names(), info.label_descriptions()


def model_image_size(model: torch.nn.Module | None) -> tuple[int, int] | None:
    """The (height, width) a model was built for when it only takes that size (a timm ViT made with
    `img_size=32` still carries its 224-pixel pretrained config), else None."""
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if isinstance(size, int):
        size = (size, size)
    return tuple(int(s) for s in size) if isinstance(size, (tuple, list)) and len(size) == 2 else None


def _normalized(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def map_folder_classes(classes: list[str], model: torch.nn.Module | None, root: Path) -> tuple[list[int], int, str]:
    """Each class folder's index in the model's label space, the label-space size, and how it was mapped.

    Folders named by the model's label names (ImageNet wnids) or by its class names map by name, so a
    subset of ImageNet scores against the 1000-class head. Otherwise folders map by sorted position,
    which is only right when there are exactly as many folders as the classifier has outputs.
    """
    count = classifier_size(model)
    known = model_label_names(model)
    if known is not None:
        label_names, descriptions = known
        by_name = {name: i for i, name in enumerate(label_names)}
        if all(c in by_name for c in classes):
            return [by_name[c] for c in classes], len(label_names), "folder names are the model's label names"
        by_description: dict[str, int] = {}
        for i, text in enumerate(descriptions):
            for alias in [text] + text.split(","):
                by_description.setdefault(_normalized(alias), i)
        if all(_normalized(c) in by_description for c in classes):
            return ([by_description[_normalized(c)] for c in classes], len(label_names),
                    "folder names are the model's class names")
    if count is None or count == len(classes):
        return list(range(len(classes))), len(classes), "folders in sorted order are the classes"
    unknown = next((c for c in classes if known is None or c not in known[0]), classes[0])
    raise FlexiqError(
        f"{root}: {len(classes)} class folders cannot be mapped onto the model's {count} classes "
        f"(folder {unknown!r} is not one of its label names); name the folders by ImageNet wnid or class name")


@register_dataset("digits")
def digits(argument: str | None = None, *, model=None, **_split) -> DatasetBundle:
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
def fashion_mnist(argument: str | None = None, *, model=None, **_split) -> DatasetBundle:
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


class UnlabelledImages(Dataset):
    """A flat folder of images without class folders: calibration material only (labels are -1)."""

    def __init__(self, root: Path, transform) -> None:
        from torchvision.datasets.folder import default_loader

        self.root, self.transform, self.loader = root, transform, default_loader
        self.samples = [(str(p), -1) for p in sorted(root.iterdir())
                        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if not self.samples:
            raise FlexiqError(f"{root}: no class folders and no images")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.transform(self.loader(path)), label


class _LabelMap:
    """Folder index -> the model's class index (a class, not a lambda: datasets travel to Ray workers)."""

    def __init__(self, mapping: list[int]) -> None:
        self.mapping = mapping

    def __call__(self, target: int) -> int:
        return self.mapping[target]


def holdout_split(n: int, share: float, fold: int = 0, seed: int = 0) -> tuple[list[int], list[int]]:
    """(held-out, rest) indices of a seeded permutation of n items: fold k holds out its k-th chunk.

    With share 0.5, folds 0 and 1 are the two halves: calibrate on one, score the other, then swap,
    and every item is scored once by a model that never saw it.
    """
    if not 0 < share <= 1:
        raise FlexiqError(f"calibration share must be in (0, 1], got {share}")
    size = max(1, round(share * n))
    if not 0 <= fold or (fold + 1) * size > n:
        raise FlexiqError(f"fold {fold} does not exist for a {share:g} share of {n} items")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    held = order[fold * size:(fold + 1) * size]
    return sorted(held), sorted(order[:fold * size] + order[(fold + 1) * size:])


@register_dataset("imagefolder")
def imagefolder(argument: str | None = None, *, model=None, calibration_share: float = DEFAULT_CALIBRATION_SHARE,
                fold: int = 0, labels: bool = True) -> DatasetBundle:
    """ImageNet-style class folders, with timm's eval transforms for `model`.

    PATH/train and PATH/val are used when both exist. One folder of class folders is split, seeded,
    into calibration images (`calibration_share`, fold `fold`) and the evaluated rest, so no image
    both calibrates and is scored. A flat folder of images (no class folders) is unlabelled:
    calibration material only. Class folders map into the model's label space by name (ImageNet
    wnids or class names), else by sorted position (`map_folder_classes`).
    """
    from timm.data import create_transform, resolve_data_config
    from torchvision.datasets import ImageFolder

    if not argument:
        raise FlexiqError("imagefolder needs a path: imagefolder:PATH")
    root = Path(argument)
    if not root.is_dir():
        raise FlexiqError(f"image folder not found: {root}")
    config = resolve_data_config({}, model=model) if model is not None else resolve_data_config({})
    fixed_size = model_image_size(model)
    if fixed_size is not None:  # the size the model was built for, not its pretrained config's
        config["input_size"] = (config["input_size"][0], *fixed_size)
    transform = create_transform(**config)
    shape = {"in_chans": config["input_size"][0], "image_size": config["input_size"][-1]}
    if not any(p.is_dir() for p in root.iterdir()):
        images = UnlabelledImages(root, transform)
        return DatasetBundle(f"imagefolder:{root}", images, Subset(images, []), num_classes=0, labelled=False,
                             split=f"{len(images)} unlabelled images (calibration only)", **shape)

    def folder(path: Path) -> tuple[ImageFolder, int, str]:
        try:
            data = ImageFolder(str(path), transform)
        except (FileNotFoundError, RuntimeError) as exc:
            raise FlexiqError(f"{path}: {exc}") from None
        if not labels:
            return data, len(data.classes), "labels unused"
        mapping, count, how = map_folder_classes(data.classes, model, path)
        data.target_transform = _LabelMap(mapping)
        return data, count, how

    train_root, val_root = root / "train", root / "val"
    if train_root.is_dir() and val_root.is_dir():
        train, _, _ = folder(train_root)
        test, num_classes, how = folder(val_root)
        split = f"calibration from {train_root.name}/, evaluation on {val_root.name}/"
    else:
        full, num_classes, how = folder(root)
        held, rest = holdout_split(len(full), calibration_share, fold) if calibration_share else ([], list(range(len(full))))
        train, test = Subset(full, held), Subset(full, rest)
        split = (f"seeded split of one folder: {len(held)} calibration / {len(rest)} evaluation images "
                 f"(share {calibration_share:g}, fold {fold}, seed 0)")
    return DatasetBundle(f"imagefolder:{root}", train, test, num_classes=num_classes, label_space=how, split=split,
                         train_flip=True, **shape)  # natural photos: a mirrored photo is the same class


def calibration_source(spec: str, *, model=None) -> Dataset:
    """All images of a dataset spec as calibration material (`--calibration-data`); labels unused."""
    name, argument = parse_dataset_spec(spec)
    if name == "imagefolder":
        return imagefolder(argument, model=model, calibration_share=1.0, labels=False).train
    return get_dataset(spec, model=model).train


def dataset_items(dataset: Dataset) -> list:
    """What a dataset holds, item by item: file paths (relative to the folder) or sample indices."""
    indices = list(range(len(dataset)))
    while isinstance(dataset, Subset):
        indices = [dataset.indices[i] for i in indices]
        dataset = dataset.dataset
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return indices
    root = Path(getattr(dataset, "root", ""))
    return [str(Path(samples[i][0]).relative_to(root)) if root else samples[i][0] for i in indices]


def fixed_subset(dataset: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """The first `n` items of a seeded permutation: the same samples on every run and machine."""
    if n is None or n >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(dataset, order.tolist())


CALIBRATION_BATCH = 64  # observers see calibration in batches of this size (percentiles are per batch)


def sample_images(dataset: Dataset, samples: int, what: str = "the data") -> Dataset:
    """The calibration sample of `dataset`: a fixed subset (seed 1), the same images on every run."""
    if samples < 1:
        raise FlexiqError(f"calibration needs at least 1 sample, got {samples}")
    if len(dataset) == 0:
        raise FlexiqError(f"{what} has no calibration images")
    return fixed_subset(dataset, samples, seed=1)


def image_batches_of(dataset: Dataset, batch_size: int = CALIBRATION_BATCH) -> list[torch.Tensor]:
    """The images of a dataset of images or (image, label) pairs, in batches (labels dropped)."""
    return [batch[0] if isinstance(batch, (tuple, list)) else batch
            for batch in DataLoader(dataset, batch_size=batch_size)]
