"""The latency backend base class and registry."""

from __future__ import annotations

import abc
from typing import Sequence

import torch
from torch import nn

from ..errors import BackendUnavailable, FlexiqError  # noqa: F401  (BackendUnavailable: re-exported)
from ..registry import Registry


class LatencyBackend(abc.ABC):
    """Latency of a converted model (selection applied) at each ratio level."""

    name: str
    provenance: str  # "measured" or "simulated"

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run here, or None."""
        return None

    @abc.abstractmethod
    def hardware(self) -> dict:
        ...

    @abc.abstractmethod
    def measure(self, model: nn.Module, example: torch.Tensor, ratios: Sequence[float], model_name: str) -> dict:
        ...


BACKENDS = Registry("latency backend")
register_backend = BACKENDS.register
list_backends = BACKENDS.names


def create_backend(name: str, **kwargs) -> LatencyBackend:
    backend = BACKENDS.create(name, **kwargs)
    reason = backend.unavailable_reason()
    if reason:
        raise BackendUnavailable(f"backend {name} cannot run here: {reason}")
    return backend
