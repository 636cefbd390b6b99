"""Foundation evidence, run by hand (about 15-30 minutes on 2 cores); writes a section of docs/RESULTS.md.

1. Accuracy table: a ResNet-20 trained on Fashion-MNIST by `flexiq train`; FP32, INT8 and each
   4-bit ratio with range selection (and random selection as the floor), at group sizes 8 and 1.
2. The layer experiment behind the paper's Figure 1: one layer's output error at 50% 4-bit with
   naive top-4-bit lowering vs extraction, weights only and weights + activations, on the
   Fashion-MNIST ResNet-20 and on the real ImageNet EfficientNet-Lite0.

    .venv/bin/python benchmarks/foundation_accuracy.py [--epochs 5] [--samples 10000]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from torch import nn

from flexiq_search.config import QuantConfig
from flexiq_search.evaluation import calibration_batches, evaluate_ratios, prepare_model
from flexiq_search.quant.convert import capture_layer_inputs, convert_model, fold_batchnorm, mixed_layers
from flexiq_search.selection import create_strategy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ARTIFACTS, ROOT, offline_photo_crops, write_section  # noqa: E402

RATIOS = [0, 0.25, 0.5, 0.75, 1.0]


def ensure_checkpoint(epochs: int) -> Path:
    path = ARTIFACTS / f"resnet20-fashion-mnist-e{epochs}.pt"
    if not path.is_file():
        subprocess.run([str(ROOT / ".venv" / "bin" / "flexiq"), "train", "--model", "resnet20", "--dataset",
                        "fashion-mnist", "--epochs", str(epochs), "--out", str(path)], check=True)
    return path


def accuracy_tables(prepared, samples: int) -> list[dict]:
    reports = []
    for group_size in (8, 1):
        for method, budget in (("range", "global"), ("random", "global"), ("range", "per-layer")):
            started = time.perf_counter()
            report = evaluate_ratios(prepared, RATIOS, samples=samples,
                                     quant=QuantConfig(group_size=group_size, budget=budget), method=method)
            report["group_size"], report["budget"] = group_size, budget
            print(f"group {group_size} {method} {budget}: " + ", ".join(
                f"{r['ratio']:.2f}->{r['top1']:.2f}" for r in report["ratios"]) + f" ({time.perf_counter() - started:.0f} s)",
                flush=True)
            reports.append(report)
    return reports


def layer_error(float_model: nn.Module, calibration: list[torch.Tensor], images: torch.Tensor, layer_name: str,
                group_size: int) -> dict:
    """Relative L2 error of one layer's output vs its float output at 50% 4-bit (per-layer budget)."""
    float_layer = float_model.get_submodule(layer_name)
    row = {"layer": layer_name, "group_size": group_size}
    for extraction in ("naive", "shift"):
        qmodel = convert_model(float_model, calibration, QuantConfig(group_size=group_size, extraction=extraction))
        layer = mixed_layers(qmodel)[layer_name]
        x = capture_layer_inputs(qmodel, images)[layer_name]
        with torch.no_grad():
            reference = float_layer(x)
            norm = float(reference.norm())
            selection = create_strategy("range", budget="per-layer").select(qmodel, [0.5])
            chosen = selection.layers[layer_name]
            layer.apply_selection(chosen.order, chosen.boundaries, [0.5])
            layer.set_ratio(0)
            row["int8"] = float((layer(x) - reference).norm()) / norm
            layer.set_ratio(0.5)
            _, weight = layer.effective_operands(x)  # lowered weights; activations stay INT8 below
            int8_act = layer.quantize_input(x).double()
            weights_only = layer.dequantize(layer._accumulate(int8_act, weight.double()))
            row[f"{extraction}_weights"] = float((weights_only - reference).norm()) / norm
            row[f"{extraction}_both"] = float((layer(x) - reference).norm()) / norm
            row["shift_hist"] = np.bincount(layer.weight_shift.flatten().numpy(), minlength=5).tolist()
    return row


def figure1_rows(prepared) -> list[dict]:
    rows = []
    # Fashion-MNIST ResNet-20, a middle 3x3 conv (on a copy: folding changes the module tree)
    model = copy.deepcopy(prepared.model)
    calib = calibration_batches(prepared.bundle, 256)
    images = torch.stack([prepared.bundle.test[i][0] for i in range(256)])
    fold_batchnorm(model, images[:2])
    for group_size in (1, 8):
        rows.append({"model": "resnet20 (Fashion-MNIST)", **layer_error(model, calib, images, "layers.4.conv1", group_size)})
    # pretrained EfficientNet-Lite0 on the two offline photos (random crops)
    from flexiq_search.models import create_model

    effnet = create_model("efficientnet_lite0", pretrained=True).eval()
    images = offline_photo_crops(effnet, 32, seed=0)
    fold_batchnorm(effnet, images[:2])
    calib = [images[:16], images[16:]]
    for group_size in (1, 8):
        rows.append({"model": "efficientnet_lite0 (ImageNet)",
                     **layer_error(effnet, calib, images, "blocks.5.0.conv_pw", group_size)})
    return rows


def render(reports: list[dict], rows: list[dict], checkpoint: Path, seconds: float) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        "## Foundation: accuracy of range selection, and extraction vs naive lowering",
        "",
        f"Produced by `benchmarks/foundation_accuracy.py` ({seconds / 60:.0f} min on {os.cpu_count()} cores, {cpu}, "
        f"torch {torch.__version__}). Fake-quant forward (exact integer arithmetic), CPU.",
        "",
        f"### ResNet-20 on Fashion-MNIST (`{checkpoint.name}`, trained by `flexiq train`), top-1 % on "
        f"{reports[0]['samples']} test images",
        "",
        "Calibration: 512 training images, min/max observer; first conv and classifier INT8. Budget: the "
        "4-bit MAC share spent over all eligible layers (global) or in every layer (per-layer).",
        "",
        "| group size | selection | budget | FP32 | INT8 | 25% | 50% | 75% | 100% | 4-bit MAC share at 25/50/75% |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        accs = {e["ratio"]: e["top1"] for e in r["ratios"]}
        shares = "/".join(f"{e['mac_share_4bit']:.3f}" for e in r["ratios"] if 0 < e["ratio"] < 1)
        lines.append(f"| {r['group_size']} | {r['method']} | {r['budget']} | {r['fp32']['top1']:.2f} | {r['int8']['top1']:.2f} | "
                     + " | ".join(f"{accs[k]:.2f}" for k in (0.25, 0.5, 0.75, 1.0)) + f" | {shares} |")
    lines += [
        "",
        "### One layer at 50% 4-bit: naive top-4-bit lowering vs extraction (the paper's Figure 1)",
        "",
        "Relative L2 error of the layer output against its float (BN-folded) output; half of the layer's "
        "MACs in 4-bit, chosen by the range ranking (per-layer budget). `weights` lowers only the weights "
        "(activations stay INT8), `both` lowers weights and activations (static activation shift).",
        "",
        "| model | layer | group size | INT8 | naive, weights | extraction, weights | naive, both | extraction, both | weight shifts 0/1/2/3/4 (count) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['model']} | `{row['layer']}` | {row['group_size']} | {row['int8']:.2%} | "
                     f"{row['naive_weights']:.2%} | {row['shift_weights']:.2%} | {row['naive_both']:.2%} | "
                     f"{row['shift_both']:.2%} | {'/'.join(map(str, row['shift_hist']))} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=10000)
    args = parser.parse_args()
    started = time.perf_counter()
    checkpoint = ensure_checkpoint(args.epochs)
    prepared = prepare_model("resnet20", "fashion-mnist", str(checkpoint))
    rows = figure1_rows(prepared)
    for row in rows:
        print(json.dumps(row), flush=True)
    reports = accuracy_tables(prepared, args.samples)
    text = render(reports, rows, checkpoint, time.perf_counter() - started)
    (ARTIFACTS / "foundation_accuracy.json").write_text(json.dumps({"reports": reports, "layer_rows": rows}, indent=1))
    write_section("foundation_accuracy", text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
