"""Model registry (timm style). Importing this package registers every model family."""

from . import resnet_cifar, timm_family  # noqa: F401  (registration side effects)
from ._registry import ModelEntry, create_model, get_model_entry, list_models, register_model
from .checkpoint import load_checkpoint_model, read_checkpoint, save_checkpoint

__all__ = [
    "ModelEntry", "create_model", "get_model_entry", "list_models", "register_model",
    "load_checkpoint_model", "read_checkpoint", "save_checkpoint",
]
