"""`cpu`: wall-clock latency of the integer CPU path (`quant.integer`), measured on this machine.

Every ratio runs the same model in the same process, interleaved round by round (INT8 first in
each round) so that machine noise hits all ratios alike; a figure is the median over rounds. Per
layer: the median time between the layer's forward pre-hook and its forward hook. x86 CPUs have no
instruction that makes 4-bit products cheaper than int8 ones, so the 4-bit groups cost their
extraction here: speed-ups below 1.0 are the honest answer on a CPU, not a bug.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Sequence

import torch
from torch import nn

from ..quant.convert import mixed_layers, set_ratio
from ..quant.integer import integer_execution
from .base import LatencyBackend, register_backend


def cpu_description() -> dict:
    """What the measurement ran on: CPU model, core and thread counts, library versions."""
    model_name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model_name = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import numba

    return {"device": "cpu", "cpu": model_name, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "kernel": "int8 im2col GEMM (torch._int_mm) + numba extraction, int32 accumulation",
            "torch": torch.__version__, "numba": numba.__version__}


@register_backend("cpu")
class CpuBackend(LatencyBackend):
    """Measured latency of the exact integer path on this CPU."""

    provenance = "measured"

    def __init__(self, rounds: int = 10, warmup: int = 2) -> None:
        if rounds < 1 or warmup < 0:
            raise ValueError("rounds must be >= 1 and warmup >= 0")
        self.rounds = rounds
        self.warmup = warmup

    def hardware(self) -> dict:
        return cpu_description()

    def measure(self, model: nn.Module, example: torch.Tensor, ratios: Sequence[float], model_name: str) -> dict:
        layers = mixed_layers(model)
        started: dict[str, float] = {}
        layer_times: dict[str, list[float]] = {}

        def before(name):
            def hook(_module, _inputs):
                started[name] = time.perf_counter()
            return hook

        def after(name):
            def hook(_module, _inputs, _output):
                layer_times[name].append(time.perf_counter() - started[name])
            return hook

        order = [0.0] + [float(r) for r in ratios]
        totals = {i: [] for i in range(len(order))}
        per_layer = {i: {name: [] for name in layers} for i in range(len(order))}
        switches = []
        hooks = [h for name, layer in layers.items()
                 for h in (layer.register_forward_pre_hook(before(name)), layer.register_forward_hook(after(name)))]
        try:
            with torch.no_grad(), integer_execution(model):
                for round_index in range(self.warmup + self.rounds):
                    for i, ratio in enumerate(order):
                        switch_started = time.perf_counter()
                        set_ratio(model, ratio)
                        switch_seconds = time.perf_counter() - switch_started
                        layer_times.update({name: [] for name in layers})
                        forward_started = time.perf_counter()
                        model(example)
                        elapsed = time.perf_counter() - forward_started
                        if round_index < self.warmup:
                            continue  # first calls pack the weights of each level and compile nothing later
                        switches.append(switch_seconds)
                        totals[i].append(elapsed)
                        for name in layers:
                            per_layer[i][name].append(sum(layer_times[name]))
        finally:
            for hook in hooks:
                hook.remove()
            set_ratio(model, 0)

        def result(i: int) -> dict:
            return {"ratio": order[i], "latency_us": statistics.median(totals[i]) * 1e6, "cycles": None,
                    "layers": [{"name": name, "latency_us": statistics.median(times) * 1e6, "cycles": None}
                               for name, times in per_layer[i].items()]}

        int8 = result(0)
        results = [result(i) for i in range(1, len(order))]
        for row in results:
            row["speedup_vs_int8"] = int8["latency_us"] / row["latency_us"]
        return {"backend": self.name, "provenance": self.provenance, "hardware": self.hardware(), "model": model_name,
                "batch": int(example.shape[0]), "rounds": self.rounds, "int8_latency_us": int8["latency_us"],
                "ratios": results, "switch_us": statistics.median(switches) * 1e6}
