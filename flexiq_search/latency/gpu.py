"""`gpu`: the Triton mixed GEMM of `kernels/triton_gemm.py` timed with CUDA events.

Per mixed layer, the layer's real INT8 activation codes (from one forward of the example) are
laid out as im2col rows and the layer's GEMM is timed at each ratio (per conv group for grouped
convolutions). The latency is the sum of the layer GEMMs: element-wise work between layers
(quantize, dequantize, activations) is not timed, and the hardware description says so. Without
CUDA (or with TRITON_INTERPRET=1, whose timings are CPU emulation) the backend is unavailable:
it never reports a number it did not measure on a GPU.
"""

from __future__ import annotations

import os
import statistics
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FlexiqError
from ..quant.convert import capture_layer_inputs, mixed_layers, set_ratio
from ..quant.modules import MixedPrecisionConv2d, MixedPrecisionLayer
from .base import LatencyBackend, register_backend


def _gpu_unavailable_reason() -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "TRITON_INTERPRET=1 runs Triton kernels in a CPU interpreter, whose timings are not GPU timings"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def layer_gemm_operands(layer: MixedPrecisionLayer, x: torch.Tensor) -> list[tuple[torch.Tensor, slice, slice]]:
    """The layer's GEMMs: (INT8 codes as im2col rows [M, K_g] in unfold's column order, int8 or
    uint8; the weight rows; the input channels) per conv group."""
    dtype = torch.int8 if bool(layer.act_signed) else torch.uint8
    codes = layer.quantize_input(x)
    if not isinstance(layer, MixedPrecisionConv2d):
        return [(codes.reshape(-1, layer.in_channels).to(dtype), slice(None), slice(None))]
    if layer.dynamic_same_padding:
        from timm.layers.padding import pad_same

        codes = pad_same(codes, list(layer.kernel_size), list(layer.stride), list(layer.dilation))
    columns = F.unfold(codes.float(), layer.kernel_size, layer.dilation, layer.padding, layer.stride)
    rows = columns.transpose(1, 2).reshape(-1, columns.shape[1]).to(dtype)
    in_per_group, out_per_group = layer.in_channels // layer.groups, layer.out_channels // layer.groups
    k_per_group = rows.shape[1] // layer.groups
    return [(rows[:, g * k_per_group:(g + 1) * k_per_group].contiguous(),
             slice(g * out_per_group, (g + 1) * out_per_group),
             slice(g * in_per_group, (g + 1) * in_per_group)) for g in range(layer.groups)]


def pack_layer_gemm(layer: MixedPrecisionLayer, rows: torch.Tensor, out_slice: slice, in_slice: slice):
    """Triton-packed weights of one of `layer_gemm_operands`' GEMMs at the layer's current boundary."""
    from kernels import triton_gemm

    taps = rows.shape[1] // len(layer.channel_group[in_slice])
    codes = layer.weight_codes.reshape(layer.out_channels, -1)[out_slice]
    return triton_gemm.pack_weights(codes, layer.channel_group[in_slice].repeat_interleave(taps),
                                    layer.low_bit_groups(), layer.act_shift, layer.weight_shift[out_slice])


@register_backend("gpu")
class GpuBackend(LatencyBackend):
    """Measured latency of the Triton mixed GEMMs on a CUDA GPU (CUDA events)."""

    provenance = "measured"

    def __init__(self, rounds: int = 20, warmup: int = 3, device: str = "cuda") -> None:
        self.rounds = rounds
        self.warmup = warmup
        self.device = torch.device(device)  # which GPU (cuda:N); checked when measuring
        if self.device.type != "cuda":
            raise FlexiqError(f"the gpu backend times CUDA devices, not {device!r}")

    def unavailable_reason(self) -> str | None:
        return _gpu_unavailable_reason()

    def hardware(self) -> dict:
        import triton

        props = torch.cuda.get_device_properties(self.device)
        return {"device": str(self.device), "gpu": props.name, "sm_count": props.multi_processor_count,
                "cuda": torch.version.cuda, "torch": torch.__version__, "triton": triton.__version__,
                "kernel": "Triton mixed GEMM (int8 part, packed int4 part, in-kernel activation extraction)",
                "timed": "layer GEMMs only (im2col, quantize, dequantize and element-wise ops excluded)"}

    def _time(self, fn) -> float:
        """Median microseconds of `fn` over CUDA-event-timed rounds."""
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.rounds):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(self.device)
            times.append(start.elapsed_time(end) * 1e3)
        return statistics.median(times)

    def _layer_us(self, layer: MixedPrecisionLayer, gemms) -> float:
        from kernels import triton_gemm

        total = 0.0
        for rows, out_slice, in_slice in gemms:
            packed = pack_layer_gemm(layer, rows, out_slice, in_slice)
            total += self._time(lambda: triton_gemm.mixed_gemm(rows, packed, bool(layer.act_signed)))
        return total

    def measure(self, model: nn.Module, example: torch.Tensor, ratios: Sequence[float], model_name: str) -> dict:
        layers = mixed_layers(model)
        if any(layer.activation_shift != "static" for layer in layers.values()):
            raise FlexiqError("the gpu backend's Triton kernel supports static activation shifts only (--activation-shift static)")
        from ..devices import resolve_device

        resolve_device(self.device)  # a GPU index this machine lacks is one line
        with torch.no_grad():
            inputs = capture_layer_inputs(model, example)
            gemms = {name: [(rows.to(self.device), o, i) for rows, o, i in layer_gemm_operands(layer, inputs[name])]
                     for name, layer in layers.items()}

        def run(ratio: float) -> dict:
            set_ratio(model, ratio)
            per_layer = [{"name": name, "latency_us": self._layer_us(layer, gemms[name]), "cycles": None}
                         for name, layer in layers.items()]
            return {"ratio": float(ratio), "latency_us": sum(e["latency_us"] for e in per_layer), "cycles": None,
                    "layers": per_layer}

        with torch.cuda.device(self.device):  # Triton launches and CUDA events on the chosen GPU
            int8 = run(0)
            results = [run(ratio) for ratio in ratios]
        set_ratio(model, 0)
        for row in results:
            row["speedup_vs_int8"] = int8["latency_us"] / row["latency_us"]
        return {"backend": self.name, "provenance": self.provenance, "hardware": self.hardware(), "model": model_name,
                "batch": int(example.shape[0]), "ratios": results, "switch_us": None}
