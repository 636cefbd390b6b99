"""A model registry in timm's style: decorated factories, `list_models`, one `create_model`."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import FlexiqError

__all__ = ["ModelEntry", "register_model", "list_models", "get_model_entry", "create_model"]


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows of a model besides its factory.

    family: "cnn" or "vit" (ViTs need a fixed image size, given as `img_size`).
    pretrained_source: where offline pretrained weights come from, or None.
    """

    name: str
    factory: Callable[..., nn.Module]
    family: str
    description: str
    pretrained_source: str | None = None


_MODELS: dict[str, ModelEntry] = {}


def register_model(*, family: str, description: str, pretrained_source: str | None = None):
    """Register `factory(num_classes, in_chans, pretrained, **kwargs) -> nn.Module` under its name."""

    def wrap(factory):
        name = factory.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = ModelEntry(name, factory, family, description, pretrained_source)
        return factory

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    return sorted(name for name in _MODELS if fnmatch.fnmatch(name, pattern))


def get_model_entry(name: str) -> ModelEntry:
    try:
        return _MODELS[name]
    except KeyError:
        raise FlexiqError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None


def create_model(name: str, *, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a registered model; `None` kwargs are dropped so the factory's defaults hold."""
    entry = get_model_entry(name)
    if pretrained and entry.pretrained_source is None:
        raise FlexiqError(f"no offline pretrained weights for {name!r}; train one or pass --checkpoint")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model = entry.factory(pretrained=pretrained, **kwargs)
    model.flexiq_model_name = name
    return model
