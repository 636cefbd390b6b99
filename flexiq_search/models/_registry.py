"""A model registry in timm's style: decorated factories, `list_models`, one `create_model`."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..errors import FlexiqError

if TYPE_CHECKING:  # listing the registry imports no torch (`flexiq models` stays fast)
    from torch import nn

__all__ = ["ModelEntry", "register_model", "list_models", "get_model_entry", "create_model"]


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows of a model besides its factory.

    family: "cnn" or "vit" (ViTs need a fixed image size, given as `img_size`).
    pretrained_source: where offline pretrained weights come from, or None.
    source: "registry" (curated here), "timm" (any timm architecture) or "import" (user code,
    `package.module:factory`).
    """

    name: str
    factory: Callable[..., nn.Module]
    family: str
    description: str
    pretrained_source: str | None = None
    source: str = "registry"


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
    """The registry's entry, else user code (`package.module:factory`), else a timm architecture."""
    if name in _MODELS:
        return _MODELS[name]
    from . import sources

    if sources.is_import_path(name):
        sources.import_factory(name)  # fails fast, before any data, weights or store row
        return ModelEntry(name, sources.user_factory(name), "cnn", sources.USER_CODE, sources.USER_CODE, "import")
    if sources.is_timm_model(name):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        family = "vit" if cfg is not None and cfg.fixed_input_size else "cnn"
        return ModelEntry(name, sources.timm_factory(name), family, f"timm {name}", sources.TIMM_CACHE, "timm")
    raise FlexiqError(f"unknown model {name!r}: not registered ({', '.join(list_models())}), not a timm "
                      f"architecture, not package.module:factory")


def create_model(name: str, *, pretrained: bool = False, weights: str | None = None, **kwargs) -> nn.Module:
    """Build a model by its source (`get_model_entry`); `None` kwargs are dropped so the factory's
    defaults hold. `weights` (a safetensors file or a state dict) replaces pretrained weights."""
    from .sources import load_weights

    entry = get_model_entry(name)
    if pretrained and not weights and entry.pretrained_source is None:
        raise FlexiqError(f"no offline pretrained weights for {name!r}; train one or pass --checkpoint")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model = entry.factory(pretrained=pretrained and not weights, **kwargs)
    if weights:
        load_weights(model, weights, name)
    model.flexiq_model_name = name
    return model
