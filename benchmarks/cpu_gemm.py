"""Integer CPU path against torch fp32 and int8, side by side in one run; writes the `cpu_gemm`
section of docs/RESULTS.md.

1. GEMM shapes (M x K x N) of ResNet-18/50 conv layers (im2col, batch 1, 224x224) and DeiT-S
   linears (197 tokens): torch fp32 matmul, torch int8 `_int_mm`, and the mixed GEMM (extraction +
   `_int_mm`) at each ratio. Codes are random with several shift values; 4-bit groups (group size
   8) are a random subset of the given share.
2. Whole models at batch 1, 224x224 (random weights: time does not depend on them): the FP32
   model, the fake-quant model and the integer path (`quant.integer`) at each ratio.

Timings: medians of repeated runs, the methods interleaved so that machine noise hits them alike.
The integer path is exact (tests/kernels/test_cpu_gemm.py, tests/quant/test_integer.py); this
measures what it costs here.

    .venv/bin/python benchmarks/cpu_gemm.py [--skip-models]
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

from kernels.cpu_gemm import EIGHT_BIT, mixed_gemm, pack_weights

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
        act = torch.tensor(rng.integers(-127, 128, (m, k)), dtype=torch.int8)
        weight = torch.tensor(rng.integers(-127, 128, (n, k)), dtype=torch.int8)
        weight_shift = torch.tensor(rng.integers(0, 5, (n, groups)))
        column_group = torch.arange(k) // GROUP
        a_f, w_f = act.float(), weight.float().t().contiguous()
        a_8, w_8 = act, weight.t().contiguous()
        packs = {}
        for ratio in RATIOS:
            low = torch.tensor(rng.permutation(groups) < round(ratio * groups))[column_group]
            a_shift = torch.where(low, act_shift[column_group], EIGHT_BIT).to(torch.int8)[None, :]
            w_shift = torch.where(low[None, :], weight_shift[:, column_group], EIGHT_BIT).to(torch.int8)
            packs[ratio] = (a_shift, pack_weights(weight, w_shift))
        methods = {"fp32 matmul": lambda: a_f @ w_f, "int8 _int_mm": lambda: torch._int_mm(a_8, w_8)}
        for ratio, (a_shift, packed) in packs.items():
            methods[f"mixed {ratio:.0%}"] = lambda a_shift=a_shift, packed=packed: mixed_gemm(a_8, a_shift, packed, True)
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


MODELS = ["resnet18", "resnet50", "mobilenetv2_100", "deit_small"]


def run_models() -> list[dict]:
    """Batch-1 forwards: FP32, fake-quant and integer path at each ratio, interleaved."""
    import copy

    from flexiq_search.quant.convert import convert_model, set_ratio
    from flexiq_search.quant.integer import integer_execution
    from flexiq_search.models import create_model
    from flexiq_search.selection import apply_selection, create_strategy

    rows = []
    for name in MODELS:
        torch.manual_seed(0)
        model = create_model(name).eval()
        images = torch.randn(8, 3, 224, 224)
        fake = convert_model(model, images.split(4))
        apply_selection(fake, create_strategy("range").select(fake, RATIOS[1:]))
        integer = copy.deepcopy(fake)
        example = images[:1]
        methods = {"fp32": lambda: model(example)}
        for ratio in (0, 1.0):
            methods[f"fake-quant {ratio:.0%}"] = lambda ratio=ratio: (set_ratio(fake, ratio), fake(example))
        for ratio in RATIOS:
            methods[f"integer {ratio:.0%}"] = lambda ratio=ratio: (set_ratio(integer, ratio), integer(example))
        with torch.no_grad(), integer_execution(integer):
            for fn in methods.values():
                fn()  # warm-up: packs each level's weights, compiles the numba kernels
            totals = {label: [] for label in methods}
            for _ in range(3):
                for label, fn in methods.items():
                    totals[label].append(median_time(fn, 5))
        result = {label: float(np.median(v)) for label, v in totals.items()}
        rows.append({"model": name, "seconds": result})
        print(name, {k: f"{v * 1e3:.1f} ms" for k, v in result.items()}, flush=True)
    return rows


def render(rows: list[dict], model_rows: list[dict]) -> str:
    from flexiq_search.latency.cpu import cpu_description

    cpu = cpu_description()["cpu"]
    lines = [
        "## Integer CPU mixed GEMM: cost of each ratio against fp32 and int8 matmul",
        "",
        f"Produced by `benchmarks/cpu_gemm.py`, measured on this machine ({os.cpu_count()} cores, {cpu}, "
        f"torch {torch.__version__}); medians of interleaved runs. GEMM numbers are time relative to torch's "
        "int8 matmul (`_int_mm`, lower is faster) on the same shape in the same run; the mixed GEMM includes "
        "extracting the 4-bit activations from INT8 codes.",
        "",
        "| GEMM (M x K x N) | fp32 matmul | int8 `_int_mm` (ms) | mixed 0% | 25% | 50% | 75% | 100% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["seconds"]
        base = s["int8 _int_mm"]
        lines.append(f"| {r['shape']} ({r['m']}x{r['k']}x{r['n']}) | {s['fp32 matmul'] / base:.2f}x | {base * 1e3:.3f} | "
                     + " | ".join(f"{s[f'mixed {x:.0%}'] / base:.2f}x" for x in RATIOS) + " |")
    if model_rows:
        lines += [
            "",
            "Whole models, batch 1, 224x224, same run: milliseconds per forward (the integer path's speed-up",
            "over its own INT8 level in brackets).",
            "",
            "| model | fp32 | fake-quant 0% | fake-quant 100% | integer 0% | 25% | 50% | 75% | 100% |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in model_rows:
            s = r["seconds"]
            base = s["integer 0%"]
            cells = [f"{s['fp32'] * 1e3:.1f}", f"{s['fake-quant 0%'] * 1e3:.1f}", f"{s['fake-quant 100%'] * 1e3:.1f}",
                     f"{base * 1e3:.1f}"]
            cells += [f"{s[f'integer {x:.0%}'] * 1e3:.1f} ({base / s[f'integer {x:.0%}']:.2f}x)" for x in RATIOS[1:]]
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    rows = run()
    model_rows = [] if "--skip-models" in sys.argv else run_models()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "cpu_gemm.json").write_text(json.dumps({"gemm": rows, "models": model_rows}, indent=1))
    text = render(rows, model_rows)
    write_section("cpu_gemm", text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
