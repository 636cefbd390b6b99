"""Model registry (timm style). Importing this package registers every model family."""

from . import resnet_cifar, timm_family  # noqa: F401  (registration side effects; neither imports torch)
from ._registry import ModelEntry, create_model, get_model_entry, list_models, register_model

_CHECKPOINTS = ("load_checkpoint_model", "read_checkpoint", "save_checkpoint")


def __getattr__(name: str):
    """The checkpoint functions import torch: loaded on first use, so listing models stays fast."""
    if name in _CHECKPOINTS:
        from . import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ModelEntry", "create_model", "get_model_entry", "list_models", "register_model",
    "load_checkpoint_model", "read_checkpoint", "save_checkpoint",
]
