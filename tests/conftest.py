"""Shared fixtures: real data (scikit-learn digits, sample photos) and a really trained ResNet-20."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Triton kernels run on the CPU under its interpreter when no GPU is present (read at decoration time).
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)

# 750 labelled ImageNet photos (150 classes, wnid folders) in shared/, beside the checkout.
IMAGENET_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-dev"

from flexiq_search.allocator import keep_freed_memory  # noqa: E402

keep_freed_memory()


@pytest.fixture(scope="session")
def digits():
    from flexiq_search.data import get_dataset

    return get_dataset("digits")


@pytest.fixture(scope="session")
def trained_resnet20(digits):
    """ResNet-20 trained on digits (a few seconds): weights with real, non-random statistics."""
    from flexiq_search.models import create_model
    from flexiq_search.training import train_model

    torch.manual_seed(0)  # the same weights whichever test builds it first (the global RNG's state varies)
    model = create_model("resnet20", num_classes=10, in_chans=1)
    return train_model(model, digits, epochs=3, batch_size=64, lr=0.05, progress=False)


@pytest.fixture(scope="session")
def resnet20_checkpoint(tmp_path_factory) -> Path:
    """A flexiq checkpoint of ResNet-20 trained on digits by the real `flexiq train` (4 epochs), shared
    by every test that runs commands on a trained model (read-only: copy it before changing it)."""
    from flexiq_search.cli import main

    path = tmp_path_factory.mktemp("resnet20") / "r20-digits.pt"
    assert main(["train", "--model", "resnet20", "--dataset", "digits", "--epochs", "4", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="session")
def digits_batches(digits):
    images = torch.stack([digits.train[i][0] for i in range(128)])
    return [images[:64], images[64:]]


@pytest.fixture(scope="session")
def sample_photos() -> torch.Tensor:
    """scikit-learn's two natural RGB photos, as 8 normalized 64x64 crops."""
    from sklearn.datasets import load_sample_images

    crops = []
    for image in load_sample_images().images:
        t = torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1) / 255.0
        for y, x in ((0, 0), (100, 200), (200, 300), (300, 100)):
            crop = t[:, y:y + 256, x:x + 256]
            crops.append(torch.nn.functional.interpolate(crop[None], size=64, mode="bilinear", antialias=True)[0])
    photos = torch.stack(crops)
    return (photos - 0.45) / 0.25
