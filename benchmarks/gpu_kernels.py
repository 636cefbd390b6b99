"""The GPU side, run by hand on a CUDA machine: the Triton mixed GEMM checked bit-exact against the
project's int64 reference, timed against the INT8 GEMM a user would run instead (cuBLAS through
`torch._int_mm`) at 0-100% 4-bit, and one fitness batch on the GPU beside an FP32 forward.

One JSON line per result on stdout. Without CUDA (or under TRITON_INTERPRET=1, whose timings are CPU
emulation) it says why on stderr and exits 3: it never reports a number it did not measure on a GPU.

    .venv/bin/python benchmarks/gpu_kernels.py [--rounds 50] [--device cuda:0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flexiq_search.quant.arithmetic import extraction_shift, mixed_accumulator  # noqa: E402

# ResNet-50's convolutions as im2col GEMMs at 224x224, batch 1 ([M, K, N]), and one batch-8 layer.
SHAPES = [(3136, 576, 64), (784, 1152, 128), (196, 2304, 256), (49, 4608, 512), (8 * 196, 2304, 256)]
SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)
GROUP_SIZE = 8
EXIT_NO_CUDA = 3


def unavailable_reason() -> str | None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "TRITON_INTERPRET=1 runs Triton kernels in a CPU interpreter, whose timings are not GPU timings"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    return None


def layer(rng: np.random.Generator, m: int, k: int, n: int):
    """Signed INT8 activation rows and weights with channel ranges that differ, and their shifts."""
    ranges = rng.choice([3, 15, 40, 127], size=k)
    act = np.clip(rng.integers(-ranges, ranges + 1, size=(m, k)), -127, 127)
    weight = rng.integers(-127, 128, size=(n, k)) // rng.choice([1, 4, 16], size=(n, 1))
    groups = k // GROUP_SIZE
    act_shift = extraction_shift(np.abs(act).reshape(m, groups, GROUP_SIZE).max(axis=(0, 2)), True)
    weight_shift = extraction_shift(np.abs(weight).reshape(n, groups, GROUP_SIZE).max(axis=2), True)
    return act, weight, act_shift, weight_shift


def cuda_us(fn, rounds: int, device: torch.device) -> float:
    """Median microseconds of `fn` over CUDA-event-timed rounds (after warm-up)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


def gemms(device: torch.device, rounds: int) -> None:
    from kernels import triton_gemm

    rng = np.random.default_rng(0)
    gpu = torch.cuda.get_device_name(device)
    for m, k, n in SHAPES:
        act, weight, act_shift, weight_shift = layer(rng, m, k, n)
        codes = torch.tensor(act, dtype=torch.int8, device=device)
        weight_t = torch.tensor(weight, dtype=torch.int8, device=device).T.contiguous()  # [K, N]
        int8_us = cuda_us(lambda: torch._int_mm(codes, weight_t), rounds, device)
        column_group = torch.arange(k) // GROUP_SIZE
        for share in SHARES:
            low = torch.tensor(rng.permutation(k // GROUP_SIZE) < round(share * k // GROUP_SIZE))
            packed = triton_gemm.pack_weights(torch.tensor(weight, dtype=torch.int8), column_group, low,
                                              torch.tensor(act_shift), torch.tensor(weight_shift))
            packed = dataclasses.replace(packed, **{field.name: getattr(packed, field.name).to(device)
                                                    for field in dataclasses.fields(packed)})  # no copies timed
            ours = triton_gemm.mixed_gemm(codes, packed, True)
            expected = mixed_accumulator(act, weight, np.arange(k), act_shift, weight_shift, low.numpy(),
                                         GROUP_SIZE, True)
            exact = bool(np.array_equal(ours.cpu().numpy().astype(np.int64), expected))
            triton_us = cuda_us(lambda: triton_gemm.mixed_gemm(codes, packed, True), rounds, device)
            print(json.dumps({"result": "mixed_gemm", "gpu": gpu, "m": m, "k": k, "n": n, "share_4bit": share,
                              "bit_exact": exact, "triton_us": triton_us, "int_mm_us": int8_us,
                              "speedup_vs_int_mm": int8_us / triton_us, "provenance": "measured (CUDA events)"}),
                  flush=True)


def fitness(device: torch.device, rounds: int) -> None:
    """Candidates per second of the fitness forward on the GPU beside one FP32 forward (the floor)."""
    from flexiq_search.models import create_model
    from flexiq_search.quant.convert import convert_model, set_ratio
    from flexiq_search.selection import apply_selection, create_strategy
    from flexiq_search.selection.fitness import FitnessEvaluator, current_masks

    torch.manual_seed(0)
    for name, size, batch in (("resnet20", 32, 256), ("efficientnet_lite0", 224, 64)):
        model = create_model(name, pretrained=False, **({"num_classes": 10} if name == "resnet20" else {})).eval()
        model.to(device)
        images = torch.randn(batch, 3, size, size, device=device)
        qmodel = convert_model(model, [images[:32]])
        apply_selection(qmodel, create_strategy("range").select(qmodel, [0.5]))
        set_ratio(qmodel, 0.5)
        masks = current_masks(qmodel)
        evaluator = FitnessEvaluator(qmodel, images, metric="kl", cache_bytes=0)
        evaluator.per_image(masks)  # warm-up
        with torch.no_grad():
            fp32_us = cuda_us(lambda: model(images), rounds, device)
        candidate_us = cuda_us(lambda: (evaluator._memo.clear(), evaluator.per_image(masks)), max(3, rounds // 5),
                               device)
        print(json.dumps({"result": "fitness", "gpu": torch.cuda.get_device_name(device), "model": name,
                          "images": batch, "candidate_us": candidate_us, "fp32_forward_us": fp32_us,
                          "candidate_per_fp32_forward": candidate_us / fp32_us,
                          "candidates_per_s": 1e6 / candidate_us, "provenance": "measured (CUDA events)"}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        print(f"gpu_kernels: cannot run here: {reason}", file=sys.stderr)
        return EXIT_NO_CUDA
    from flexiq_search.devices import resolve_device

    device = resolve_device(args.device)
    with torch.cuda.device(device):
        gemms(device, args.rounds)
        fitness(device, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
