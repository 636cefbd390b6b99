"""NPU simulator evidence, run by hand; writes the `npu_latency` section of docs/RESULTS.md.

1. SCALE-Sim agreement: INT8 compute cycles of ResNet-18/50 conv layers (as GEMMs, batch 1) from
   SCALE-Sim 3 itself and from kernels/npu_sim.py, on 16x16 and 32x32 arrays, OS and WS, and how
   much faster ours is on the same layers.
2. Speed-up over INT8 at 25/50/75/100% 4-bit for ResNet-18, ResNet-50, MobileNetV2 and DeiT-S
   shapes (224x224, batch 1, random weights: only the shapes and the selection's layout matter),
   with the range selection spending the share globally and the same share in every layer.

    .venv/bin/python benchmarks/npu_latency.py [--render-only]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from flexiq_search.config import QuantConfig
from flexiq_search.latency import create_backend
from flexiq_search.latency.npu import layer_gemms
from flexiq_search.models import create_model
from flexiq_search.quant.convert import convert_model
from flexiq_search.selection import apply_selection, create_strategy
from kernels.npu_sim import NpuConfig, compute_cycles, layer_cycles
from kernels.scalesim_reference import scalesim_gemm_cycles

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ARTIFACTS, write_section  # noqa: E402

RATIOS = [0, 0.25, 0.5, 0.75, 1.0]
MODELS = ["resnet18", "resnet50", "mobilenetv2_100", "deit_small"]
# (M, N, K) of conv layers at 224x224, batch 1: output positions, filters, channels x taps.
AGREEMENT_LAYERS = {
    "resnet18": [(3136, 64, 576), (784, 128, 1152), (196, 256, 2304), (49, 512, 4608)],
    "resnet50": [(3136, 64, 64), (784, 512, 128), (196, 256, 2304), (49, 2048, 512)],
}


def agreement() -> list[dict]:
    rows = []
    for size in (16, 32):
        for dataflow in ("os", "ws"):
            layers = [shape for shapes in AGREEMENT_LAYERS.values() for shape in shapes]
            started = time.perf_counter()
            reference = scalesim_gemm_cycles(layers, size, size, dataflow)
            scalesim_seconds = time.perf_counter() - started
            m, n, k = (np.array(c) for c in zip(*layers))
            started = time.perf_counter()
            for _ in range(100):
                ours = compute_cycles(m, n, k, NpuConfig(rows=size, cols=size, dataflow=dataflow))
            ours_seconds = (time.perf_counter() - started) / 100
            errors = [abs(a - b) / b for a, b in zip(ours.tolist(), reference)]
            rows.append({"array": f"{size}x{size}", "dataflow": dataflow, "layers": len(layers),
                         "max_error": max(errors), "scalesim_seconds": scalesim_seconds, "ours_seconds": ours_seconds,
                         "scalesim_cycles": reference, "our_cycles": ours.tolist()})
            print(rows[-1], flush=True)
    return rows


def speedups() -> list[dict]:
    rows = []
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(16, 3, 224, 224, generator=generator)
    for name in MODELS:
        torch.manual_seed(0)
        float_model = create_model(name).eval()
        for budget in ("global", "per-layer"):
            qmodel = convert_model(float_model, images.split(8), QuantConfig(budget=budget))
            apply_selection(qmodel, create_strategy("range", budget=budget).select(qmodel, RATIOS[1:]))
            for dataflow in ("os", "ws"):
                started = time.perf_counter()
                result = create_backend("npu-sim", config=NpuConfig(dataflow=dataflow)).measure(
                    qmodel, images[:1], RATIOS, name)
                seconds = time.perf_counter() - started
                shapes = layer_gemms(qmodel, images[:1])
                memory_bound = 0
                for layer in result["ratios"][0]["layers"]:
                    s = shapes[layer["name"]]
                    c = layer_cycles(s["m"], s["n"], s["k"], NpuConfig(dataflow=dataflow), groups=s["groups"],
                                     input_bytes=s["input_bytes"])
                    memory_bound += int(c["memory"].sum() > c["compute"].sum())
                rows.append({"model": name, "budget": budget, "dataflow": dataflow, "seconds": seconds,
                             "speedup": [r["speedup_vs_int8"] for r in result["ratios"]],
                             "int8_us": result["ratios"][0]["latency_us"], "switch_us": result["switch_us"],
                             "layers": len(result["ratios"][0]["layers"]), "memory_bound_layers": memory_bound})
                print(rows[-1], flush=True)
    return rows


def render(agree: list[dict], speed: list[dict]) -> str:
    config = NpuConfig()
    lines = [
        "## NPU simulator: agreement with SCALE-Sim and 4-bit speed-ups",
        "",
        "Produced by `benchmarks/npu_latency.py`. Simulated, not measured: `kernels/npu_sim.py`, a "
        f"systolic array ({config.rows}x{config.cols} PEs unless stated, {config.clock_mhz:.0f} MHz, "
        f"{config.dram_bytes_per_cycle:.0f} B/cycle DRAM, one INT8 or {config.int4_macs_per_pe} INT4 MACs per PE "
        f"per cycle, {config.shift_cycles} cycle per 4-bit group shift, weights and activations INT8 in DRAM).",
        "",
        "### INT8 compute cycles against SCALE-Sim 3.0.0 (ResNet-18 and ResNet-50 conv layers as GEMMs)",
        "",
        "| array | dataflow | layers | max relative difference | SCALE-Sim seconds | ours seconds | ours faster by |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in agree:
        lines.append(f"| {r['array']} | {r['dataflow']} | {r['layers']} | {r['max_error']:.2e} | "
                     f"{r['scalesim_seconds']:.1f} | {r['ours_seconds']:.1e} | {r['scalesim_seconds'] / r['ours_seconds']:.0f}x |")
    lines += ["", "### Speed-up over INT8 (224x224, batch 1; range selection on random weights)", "",
              "| model | budget | dataflow | INT8 latency us | 25% | 50% | 75% | 100% | 50% share of the 100% gain | "
              "memory-bound layers at INT8 | simulation seconds |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in speed:
        s = r["speedup"]
        share = (s[2] - 1) / (s[4] - 1) if s[4] > 1 else float("nan")  # the paper's "50% gets 40% of the speed-up"
        lines.append(f"| {r['model']} | {r['budget']} | {r['dataflow']} | {r['int8_us']:.0f} | "
                     + " | ".join(f"{x:.3f}x" for x in s[1:]) + f" | {share:.0%} | {r['memory_bound_layers']}/{r['layers']} | "
                     f"{r['seconds']:.2f} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    stored = ARTIFACTS / "npu_latency.json"
    if "--render-only" in sys.argv:
        data = json.loads(stored.read_text())
        agree, speed = data["agreement"], data["speedups"]
    else:
        agree = agreement()
        speed = speedups()
        stored.write_text(json.dumps({"agreement": agree, "speedups": speed}, indent=1))
    text = render(agree, speed)
    write_section("npu_latency", text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
