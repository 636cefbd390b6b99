"""Where tensors live: the compute device a user picks, and the host for bookkeeping.

The library never names a device anywhere else. Compute follows the tensors it is given (a
layer's buffers, a batch); code that makes a tensor says where, from a tensor at hand or from
`HOST` for search bookkeeping (masks, genes, scores), which stays on the CPU whatever computes.
A test runs the whole pipeline with PyTorch's default device set to `meta`: a tensor made without
a device lands there and the run fails, as it would when the compute device is a GPU.
"""

from __future__ import annotations

import torch

from .config import DEVICE_AUTO as AUTO, DEVICE_HELP  # torch-free, for the command line
from .errors import FlexiqError

HOST = torch.device("cpu")  # search bookkeeping: candidate masks, genes, per-group scores


def resolve_device(spec: str | torch.device | None = AUTO) -> torch.device:
    """The device `spec` names, checked to exist here; `auto` (or None) is CUDA when present.

    On CUDA, TF32 is switched off: the integer accumulators are held in float32 only where every
    partial sum is exact in a 24-bit mantissa, which TF32's 10-bit one (cuDNN's default for
    convolutions) would break.
    """
    if spec is None or spec == AUTO:
        spec = "cuda" if torch.cuda.is_available() else HOST
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as error:
        raise FlexiqError(f"unknown device {spec!r} ({DEVICE_HELP})") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FlexiqError(f"device {spec!r} asked for, but torch.cuda.is_available() is False on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FlexiqError(f"device {spec!r} asked for, but this machine has {torch.cuda.device_count()} CUDA devices")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise FlexiqError(f"device {spec!r} asked for, but MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise FlexiqError(f"unsupported device {spec!r} ({DEVICE_HELP})")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


def wants_gpu(spec: str | None, cluster_gpus: float) -> bool:
    """Whether work configured with device `spec` should ask a cluster for GPUs (decided on the
    driver, which may itself have none: `auto` asks when the cluster has any)."""
    if spec is None or spec == AUTO:
        return cluster_gpus > 0
    return str(spec).startswith("cuda")


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (HOST for one without tensors)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return HOST
