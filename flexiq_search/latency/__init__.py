"""Latency backends: thin adapters from a converted model to `kernels/`, with provenance.

Every backend returns the `flexiq latency --json` contract: backend, provenance ("measured" or
"simulated"), the hardware or simulator configuration, and per ratio the total and per-layer
latency, cycles where they exist, and the speed-up over INT8 (ratio 0). A backend that cannot run
on this machine raises `BackendUnavailable` with the reason (the CLI exits 3); it never invents numbers.
"""

from .base import BACKENDS, BackendUnavailable, LatencyBackend, create_backend, list_backends, register_backend
from . import cpu, gpu, npu  # noqa: F401  (registration)

__all__ = ["BACKENDS", "BackendUnavailable", "LatencyBackend", "create_backend", "list_backends", "register_backend"]
