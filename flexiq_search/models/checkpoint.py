"""flexiq checkpoints: a float model's weights plus what is needed to rebuild it.

Saved as a plain dict of tensors and primitives so that loading needs only
`torch.load(..., weights_only=True)`: no pickled code ever runs.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import torch
from torch import nn

from ..devices import HOST
from ..errors import FlexiqError, first_line
from ._registry import create_model

CHECKPOINT_FORMAT = "flexiq-checkpoint"
CHECKPOINT_VERSION = 1


def save_atomically(payload: dict, path: str | os.PathLike) -> None:
    """torch.save to a temp file, then rename: a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, model_name: str, model_kwargs: dict,
                    dataset: str, metrics: dict | None = None) -> None:
    """Write atomically (temp file + rename), so a crash never leaves half a checkpoint."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": model_name,
        "model_kwargs": dict(model_kwargs),
        "dataset": dataset,
        "metrics": metrics or {},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    save_atomically(payload, path)


def load_tensors(path: Path, what: str = "checkpoint"):
    """`torch.load(..., weights_only=True)` with one-line errors: a truncated, empty or foreign file,
    or one that holds pickled objects (never unpickled here), says so without torch's warnings."""
    if not path.is_file():
        raise FlexiqError(f"{what} not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=HOST, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):  # not a pickle at all (e.g. "invalid load key")
            raise FlexiqError(f"cannot read {what} {path}: {first_line(exc)}") from None
        raise FlexiqError(f"cannot read {what} {path}: it holds pickled objects, and flexiq only reads "
                          f"tensors (weights_only=True)") from None
    except EOFError:
        raise FlexiqError(f"cannot read {what} {path}: the file is empty or truncated") from None
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise FlexiqError(f"cannot read {what} {path}: not a torch file ({type(exc).__name__}: "
                          f"{first_line(exc)})") from None


def read_checkpoint(path: str | os.PathLike, formats: tuple[str, ...] = (CHECKPOINT_FORMAT,)) -> dict:
    """The checkpoint's payload, if it is one of `formats` (other flexiq formats check their own version)."""
    path = Path(path)
    payload = load_tensors(path)
    if not isinstance(payload, dict) or payload.get("format") not in formats:
        raise FlexiqError(f"{path} is not a flexiq checkpoint" + (
            f" of a kind this command reads ({', '.join(formats)})" if isinstance(payload, dict) and
            str(payload.get("format", "")).startswith("flexiq") else ""))
    if payload["format"] == CHECKPOINT_FORMAT and payload.get("version") != CHECKPOINT_VERSION:
        raise FlexiqError(f"{path}: checkpoint version {payload.get('version')} is not supported")
    return payload


def check_model_name(path: str | os.PathLike, payload: dict, expected_model: str | None) -> None:
    if expected_model is not None and payload["model"] != expected_model:
        raise FlexiqError(f"{path} holds a {payload['model']} model, not {expected_model}")


def load_checkpoint_model(path: str | os.PathLike, expected_model: str | None = None,
                          payload: dict | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint was trained as, with its weights."""
    payload = payload or read_checkpoint(path)
    check_model_name(path, payload, expected_model)
    model = create_model(payload["model"], **payload["model_kwargs"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise FlexiqError(f"{path}: weights do not fit {payload['model']}: {first_line(exc)}") from None
    return model.eval(), payload
