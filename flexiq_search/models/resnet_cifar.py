"""ResNet-20 for small images (He et al. 2016, CIFAR variant), the project's own test model.

Only the registration lives here, so listing the registry imports no torch; the network is in
cifar_nets.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._registry import register_model

if TYPE_CHECKING:
    from torch import nn


@register_model(family="cnn", description="CIFAR-style ResNet-20 (0.27M params) for 8-32 px images")
def resnet20(num_classes: int = 10, in_chans: int = 3, pretrained: bool = False, **kwargs) -> nn.Module:
    from .cifar_nets import CifarResNet

    return CifarResNet(20, num_classes=num_classes, in_chans=in_chans, **kwargs)
