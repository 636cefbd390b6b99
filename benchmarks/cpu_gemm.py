"""Integer CPU mixed GEMM against torch fp32 and int8 matmul, side by side in one run; writes the
`cpu_gemm` section of docs/RESULTS.md.

GEMM shapes (M x K x N) of ResNet-18/50 conv layers (im2col, batch 1, 224x224) and DeiT-S linears
(197 tokens). Codes are random with per-group ranges so that activation shifts take several values;
4-bit groups (group size 8) are a random subset of the given share. Timings: median of repeated
runs, the methods interleaved so that machine noise hits them alike. The mixed path is exact
(tests/kernels/test_cpu_gemm.py); this measures what it costs here.

    .venv/bin/python benchmarks/cpu_gemm.py
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kernels.cpu_gemm import mixed_gemm, pack_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ARTIFACTS, write_section  # noqa: E402

SHAPES = {
    "resnet18 layer1 3x3": (3136, 576, 64),
    "resnet18 layer3 3x3": (196, 2304, 256),
    "resnet50 layer2 1x1": (784, 512, 128),
    "resnet50 layer4 1x1": (49, 2048, 512),
    "deit-s qkv": (197, 384, 1152),
    "deit-s fc2": (197, 1536, 384),
}
RATIOS = [0, 0.25, 0.5, 0.75, 1.0]
GROUP = 8


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def run() -> list[dict]:
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    rows = []
    for name, (m, k, n) in SHAPES.items():
        groups = k // GROUP
        act_shift = torch.tensor(rng.integers(0, 5, groups))
        act = torch.tensor(rng.integers(-127, 128, (m, k)), dtype=torch.int32)
        weight = torch.tensor(rng.integers(-127, 128, (n, k)), dtype=torch.int8)
        weight_shift = torch.tensor(rng.integers(0, 5, (n, groups)))
        column_group = torch.arange(k) // GROUP
        a_f, w_f = act.float(), weight.float().t().contiguous()
        a_8, w_8 = act.clamp(-128, 127).to(torch.int8), weight.t().contiguous()
        packs = {}
        for ratio in RATIOS:
            low = torch.tensor(rng.permutation(groups) < round(ratio * groups))
            packs[ratio] = pack_weights(weight, column_group, low, act_shift, weight_shift)
        methods = {"fp32 matmul": lambda: a_f @ w_f, "int8 _int_mm": lambda: torch._int_mm(a_8, w_8)}
        for ratio, packed in packs.items():
            methods[f"mixed {ratio:.0%}"] = lambda packed=packed: mixed_gemm(act, packed, True)
        repeats = max(5, int(2e9 / (m * k * n)))
        for fn in methods.values():
            fn()  # warm-up
        totals = {label: [] for label in methods}
        for _ in range(3):  # interleave the methods
            for label, fn in methods.items():
                totals[label].append(median_time(fn, repeats))
        result = {label: float(np.median(v)) for label, v in totals.items()}
        rows.append({"shape": name, "m": m, "k": k, "n": n, "seconds": result})
        print(name, {k: f"{v * 1e3:.3f} ms" for k, v in result.items()}, flush=True)
    return rows


def render(rows: list[dict]) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        "## Integer CPU mixed GEMM: cost of each ratio against fp32 and int8 matmul",
        "",
        f"Produced by `benchmarks/cpu_gemm.py`, measured on this machine ({os.cpu_count()} cores, {cpu}, "
        f"torch {torch.__version__}); medians of interleaved runs. Numbers are time relative to torch's "
        "int8 matmul (`_int_mm`, lower is faster) on the same shape in the same run.",
        "",
        "| GEMM (M x K x N) | fp32 matmul | int8 `_int_mm` (ms) | mixed 0% | 25% | 50% | 75% | 100% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["seconds"]
        base = s["int8 _int_mm"]
        lines.append(f"| {r['shape']} ({r['m']}x{r['k']}x{r['n']}) | {s['fp32 matmul'] / base:.2f}x | {base * 1e3:.3f} | "
                     + " | ".join(f"{s[f'mixed {x:.0%}'] / base:.2f}x" for x in RATIOS) + " |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    rows = run()
    (ARTIFACTS / "cpu_gemm.json").write_text(json.dumps(rows, indent=1))
    text = render(rows)
    write_section("cpu_gemm", text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
