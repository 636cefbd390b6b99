"""Models outside the registry: any timm architecture, or user code named `package.module:factory`.

A model's *source* is the string a user types after `--model`; checkpoints, `.flexiq` files and
stored studies keep it (with the factory's keyword arguments), so the model can be rebuilt wherever
that source is importable. Resolution order: the registry (curated, tested, offline weights), then
`package.module:factory`, then a timm architecture name.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import FlexiqError, first_line

TIMM_CACHE = "the local timm/Hugging Face cache"
USER_CODE = "user code"


def is_import_path(name: str) -> bool:
    module, sep, attr = name.partition(":")
    return bool(sep and module and attr) and all(part.isidentifier() for part in module.split(".") + attr.split("."))


def import_factory(name: str) -> Callable[..., nn.Module]:
    """`package.module:factory` imported from the working directory or PYTHONPATH (one-line errors)."""
    module_name, _, attr = name.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # console scripts do not put the working directory on the path
    try:
        target = importlib.import_module(module_name)
    except ImportError as exc:
        raise FlexiqError(f"model {name}: cannot import {module_name} ({exc}); run where it is importable "
                          f"or add its folder to PYTHONPATH") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise FlexiqError(f"model {name}: {module_name} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise FlexiqError(f"model {name}: {attr} is not callable")
    return target


def user_factory(name: str) -> Callable[..., nn.Module]:
    """A registry-shaped factory over user code: passes only the keyword arguments it accepts
    (`num_classes`, `in_chans`, `pretrained`, ...), so `def build(): ...` works as well."""

    def build(pretrained: bool = False, **kwargs) -> nn.Module:
        factory = import_factory(name)
        parameters = inspect.signature(factory).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        offered = {"pretrained": pretrained, **kwargs}
        model = factory(**{k: v for k, v in offered.items() if takes_all or k in parameters})
        if not isinstance(model, nn.Module):
            raise FlexiqError(f"model {name}: the factory returned {type(model).__name__}, not a torch nn.Module")
        return model

    return build


def timm_factory(name: str) -> Callable[..., nn.Module]:
    """A registry-shaped factory over `timm.create_model`; pretrained weights only from the local
    cache (never a download: a missing file is one line that names `--weights`)."""

    def build(pretrained: bool = False, num_classes=None, in_chans=None, **kwargs) -> nn.Module:
        import timm

        kwargs = {k: v for k, v in dict(num_classes=num_classes, in_chans=in_chans, **kwargs).items() if v is not None}
        if not pretrained:
            return timm.create_model(name, pretrained=False, **kwargs)
        cached = cached_timm_weights(name)
        if cached is None:
            raise FlexiqError(f"no weights for timm model {name!r} in {TIMM_CACHE}; pass --weights PATH "
                              f"(a safetensors file or a state dict)")
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(cached)}, **kwargs)

    return build


def cached_timm_weights(name: str) -> Path | None:
    """The already-downloaded weights of timm's default pretrained tag for `name`, if any."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin"):
            path = try_to_load_from_cache(cfg.hf_hub_id.split("@")[0], filename)
            if isinstance(path, str):
                return Path(path)
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url.split("?")[0])
        if path.is_file():
            return path
    return None


def is_timm_model(name: str) -> bool:
    import timm

    return timm.is_model(name)


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file or a torch file read with `weights_only=True`; a flexiq
    checkpoint, or a dict that wraps the state dict under "state_dict"/"model", is unwrapped."""
    from .checkpoint import load_tensors

    path = Path(path)
    if path.suffix != ".safetensors":
        state = load_tensors(path, "weights")
    elif not path.is_file():
        raise FlexiqError(f"weights not found: {path}")
    else:
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # truncated or foreign
            raise FlexiqError(f"cannot read weights {path}: {first_line(exc)}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FlexiqError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: nn.Module, path: str | os.PathLike, model_name: str) -> nn.Module:
    try:
        model.load_state_dict(read_weights(path))
    except RuntimeError as exc:
        raise FlexiqError(f"{path}: weights do not fit {model_name}: {_first_problem(str(exc))}") from None
    return model


def _first_problem(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 else lines[0]
