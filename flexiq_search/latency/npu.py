"""`npu-sim`: the systolic-array simulator of `kernels/npu_sim.py` on a converted model.

Each mixed layer becomes a GEMM per conv group: M = output positions x batch, N = filters of the
group, K = input channels of the group x kernel taps. At a ratio, the 4-bit part of K is the taps
of the channels whose group is 4-bit at that level, counted per conv group, so depthwise and
grouped convolutions are exact. Only conv/linear layers are simulated: attention matmuls,
pooling and element-wise ops are not (they are small next to the GEMMs of CNNs, not of ViTs).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from kernels.npu_sim import NpuConfig, cycles_to_us, layer_cycles, switch_cycles

from ..quant.convert import mixed_layers, set_ratio
from ..quant.modules import MixedPrecisionConv2d
from .base import LatencyBackend, register_backend


def layer_gemms(model: nn.Module, example: torch.Tensor) -> dict[str, dict]:
    """Per mixed layer: M, N, K per conv group, group count, taps and input bytes (INT8), from one forward."""
    shapes: dict[str, dict] = {}

    def record(name, layer, inputs, output):
        groups = layer.groups if isinstance(layer, MixedPrecisionConv2d) else 1
        if isinstance(layer, MixedPrecisionConv2d):
            taps = layer.kernel_size[0] * layer.kernel_size[1]
            m = output.shape[0] * output.shape[2] * output.shape[3]
        else:
            taps = 1
            m = output.numel() // output.shape[-1]
        shapes[name] = {"m": m, "n": layer.out_channels // groups, "k": layer.in_channels // groups * taps,
                        "groups": groups, "taps": taps, "input_bytes": inputs[0].numel()}

    layers = mixed_layers(model)
    hooks = [layer.register_forward_hook(lambda mod, inp, out, name=name: record(name, mod, inp, out))
             for name, layer in layers.items()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


@register_backend("npu-sim")
class NpuSimBackend(LatencyBackend):
    """Simulated latency on a configurable systolic-array NPU (SCALE-Sim-3-compatible INT8 timing)."""

    provenance = "simulated"

    def __init__(self, config: NpuConfig | None = None) -> None:
        self.config = config or NpuConfig()

    def hardware(self) -> dict:
        return self.config.describe()

    def _layer_cycles(self, layer, shape: dict) -> int:
        """Cycles of one layer at its current boundary, summed over its conv groups."""
        groups = shape["groups"]
        low_channels = layer.low_bit_groups()[layer.channel_group]  # [C] bool
        per_group = low_channels.view(groups, -1)  # channels of each conv group
        k_low = per_group.sum(dim=1).numpy() * shape["taps"]
        channel_group = layer.channel_group.view(groups, -1)
        low_groups = np.array([len(torch.unique(channel_group[g][per_group[g]])) for g in range(groups)])
        cycles = layer_cycles(shape["m"], shape["n"], shape["k"], self.config, k_low=k_low, low_groups=low_groups,
                              input_bytes=shape["input_bytes"] // groups)
        return int(cycles["total"].sum())

    def measure(self, model: nn.Module, example: torch.Tensor, ratios: Sequence[float], model_name: str) -> dict:
        shapes = layer_gemms(model, example)
        layers = {name: layer for name, layer in mixed_layers(model).items() if name in shapes}

        def run(ratio: float) -> dict:
            set_ratio(model, ratio)
            per_layer = [{"name": name, "cycles": self._layer_cycles(layer, shapes[name])}
                         for name, layer in layers.items()]
            for entry in per_layer:
                entry["latency_us"] = float(cycles_to_us(entry["cycles"], self.config))
            total = sum(entry["cycles"] for entry in per_layer)
            return {"ratio": float(ratio), "cycles": total, "latency_us": float(cycles_to_us(total, self.config)),
                    "layers": per_layer}

        int8_cycles = run(0)["cycles"]
        results = [run(ratio) for ratio in ratios]
        set_ratio(model, 0)
        for result in results:
            result["speedup_vs_int8"] = int8_cycles / result["cycles"]
        eligible = len(mixed_layers(model, eligible_only=True))
        return {"backend": self.name, "provenance": self.provenance, "hardware": self.hardware(), "model": model_name,
                "batch": int(example.shape[0]), "ratios": results,
                "switch_us": float(cycles_to_us(switch_cycles(eligible, self.config), self.config))}
