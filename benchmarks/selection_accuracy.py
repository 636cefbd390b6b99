"""Channel-selection evidence, run by hand; writes the `selection_accuracy` section of docs/RESULTS.md.

1. The paper's Table-2 shape: methods x 0/25/50/75/100% 4-bit, top-1 on Fashion-MNIST for the
   project's ResNet-20 and a MobileNetV2 trained here (FP32 and INT8 beside them), with each
   level's calibration fitness (logit MSE to INT8).
2. The Table-7 ablation at 75%: range -> greedy -> evolution -> + dynamic extraction -> + finetuning.
3. Search speed: candidate evaluations per second with and without the layer-prefix cache, and
   where the time goes.
4. Pretrained EfficientNet-Lite0 (no labelled ImageNet offline): top-1 agreement with FP32 on crops
   of the offline photos, per ratio and method.

Every stage stores its result in benchmarks/artifacts/selection_accuracy.json as soon as it ends;
a rerun skips finished stages (delete the file, or pass --fresh, to start over).

    .venv/bin/python benchmarks/selection_accuracy.py [--samples 10000] [--fresh]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from flexiq_search.config import QuantConfig
from flexiq_search.data import fixed_subset
from flexiq_search.evaluation import calibration_batches, prepare_model
from flexiq_search.finetune import FinetuneConfig, finetune
from flexiq_search.models import create_model
from flexiq_search.quant.convert import convert_model, mac_share_4bit, set_ratio
from flexiq_search.selection import Selection, apply_selection, create_strategy
from flexiq_search.selection.fitness import FitnessEvaluator, current_masks
from flexiq_search.training import accuracy

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import ARTIFACTS, ROOT, offline_photo_crops, write_section  # noqa: E402

LEVELS = [0.25, 0.5, 0.75, 1.0]
BASELINES = ["uniform-int4", "random", "range", "hawq", "greedy-error"]
EVOLUTION = {"population": 16, "generations": 20, "patience": 6}
STATE = ARTIFACTS / "selection_accuracy.json"
FINETUNE_SAMPLES = 20000
# The ablation chain (+ dynamic extraction, + finetuning) starts from the KL-fitness search: a probe
# on the ResNet-20 at 75% found KL to INT8 tracking accuracy far better than logit MSE (RESULTS.md).
CHAIN = "evolution-kl"
MODELS = {  # name: (epochs, training samples) of the FP32 base model trained with `flexiq train`
    "resnet20": (5, None),
    "mobilenetv2_100": (5, None),
}


def load_state(fresh: bool) -> dict:
    return common.load_state(STATE, fresh)


def save_state(state: dict) -> None:
    common.save_state(STATE, state)


def ensure_checkpoint(name: str) -> Path:
    epochs, samples = MODELS[name]
    path = ARTIFACTS / f"{name}-fashion-mnist-e{epochs}.pt"
    if not path.is_file():
        extra = ["--train-samples", str(samples)] if samples else []
        subprocess.run([str(ROOT / ".venv" / "bin" / "flexiq"), "train", "--model", name, "--dataset", "fashion-mnist",
                        "--epochs", str(epochs), "--out", str(path), *extra], check=True)
    return path


def level_fitness(model, images) -> dict[str, list[float]]:
    """Logit MSE and KL to INT8 at every level of the selection installed in `model`."""
    fitness = {}
    for metric in ("mse", "kl"):
        evaluator = FitnessEvaluator(model, images, metric=metric, cache_bytes=0)
        fitness[metric] = []
        for ratio in LEVELS:
            set_ratio(model, ratio)
            fitness[metric].append(evaluator(current_masks(model)))
    set_ratio(model, 0)
    return fitness


def measure_levels(model, test, classes, label: str) -> dict:
    row = {"top1": {}, "mac_share": {}}
    for ratio in LEVELS:
        set_ratio(model, ratio)
        row["top1"][str(ratio)] = accuracy(model, test, num_classes=classes, desc=f"{label} {ratio:.0%}",
                                           progress=False)[0]
        row["mac_share"][str(ratio)] = mac_share_4bit(model)
    set_ratio(model, 0)
    return row


def table2(name: str, samples: int, state: dict) -> None:
    """Every method on one Fashion-MNIST model; stores rows in state["table2"][name] one by one."""
    rows = state.setdefault("table2", {}).setdefault(name, {})
    prepared = prepare_model(name, "fashion-mnist", str(ensure_checkpoint(name)))
    bundle = prepared.bundle
    test = fixed_subset(bundle.test, samples)
    batches = calibration_batches(bundle, 512)
    search_images = torch.cat(batches)[:256]
    static = convert_model(prepared.model, batches, QuantConfig())
    dynamic = convert_model(prepared.model, batches, QuantConfig(activation_shift="dynamic"))
    if "reference" not in rows:
        rows["reference"] = {
            "fp32": accuracy(prepared.model, test, num_classes=bundle.num_classes, progress=False)[0],
            "int8": accuracy(static, test, num_classes=bundle.num_classes, progress=False)[0],
            "samples": len(test), "calibration": 512, "search_images": len(search_images),
        }
        save_state(state)
    print(f"{name}: FP32 {rows['reference']['fp32']:.2f} INT8 {rows['reference']['int8']:.2f}", flush=True)
    stored = state.setdefault("selections", {}).setdefault(name, {})
    selections = {method: Selection.from_json(text) for method, text in stored.items()}
    for method in BASELINES + ["evolution", "evolution-kl"]:
        if method in rows:
            continue
        options = dict(EVOLUTION, progress=True, metric="kl" if method.endswith("kl") else "mse") \
            if method.startswith("evolution") else {}
        started = time.perf_counter()
        selection = create_strategy(method.split("-kl")[0], seed=0, **options).select(static, LEVELS, search_images)
        selections[method] = selection
        stored[method] = selection.to_json()
        model = copy.deepcopy(static)
        apply_selection(model, selection)
        seconds = time.perf_counter() - started
        rows[method] = {**measure_levels(model, test, bundle.num_classes, method),
                        "fitness": level_fitness(model, search_images), "select_seconds": seconds,
                        "evaluations": selection.provenance.get("evaluations", 0)}
        save_state(state)
        print(f"{name} {method}: {rows[method]['top1']} fitness {rows[method]['fitness']} ({seconds:.0f} s)", flush=True)
    if "evolution+dynamic" not in rows:
        model = copy.deepcopy(dynamic)
        apply_selection(model, selections[CHAIN])
        rows["evolution+dynamic"] = {**measure_levels(model, test, bundle.num_classes, "dynamic"),
                                     "fitness": level_fitness(model, search_images)}
        save_state(state)
        print(f"{name} evolution+dynamic: {rows['evolution+dynamic']['top1']}", flush=True)
    for base in ("evolution+dynamic", "uniform-int4"):
        key = f"{base}+finetune"
        if key in rows:
            continue
        source = dynamic if base == "evolution+dynamic" else static
        model = copy.deepcopy(source)
        apply_selection(model, selections[CHAIN if base.startswith("evolution") else base])
        config = FinetuneConfig(epochs=1, lr=1e-4, train_samples=FINETUNE_SAMPLES, batch_size=128)
        started = time.perf_counter()
        finetune(model, prepared.model, bundle, config, progress=True)
        rows[key] = {**measure_levels(model, test, bundle.num_classes, key),
                     "finetune": dataclasses.asdict(config), "finetune_seconds": time.perf_counter() - started}
        save_state(state)
        print(f"{name} {key}: {rows[key]['top1']}", flush=True)


def converted_resnet20() -> tuple[torch.nn.Module, torch.Tensor]:
    """The Fashion-MNIST ResNet-20 converted (512 calibration images) and the 256 search images."""
    prepared = prepare_model("resnet20", "fashion-mnist", str(ensure_checkpoint("resnet20")))
    batches = calibration_batches(prepared.bundle, 512)
    return convert_model(prepared.model, batches, QuantConfig()), torch.cat(batches)[:256]


def search_speed(state: dict) -> None:
    """Evolution on the ResNet-20 at 50%, with and without the prefix cache, same seed (same candidates)."""
    if "speed" in state:
        return
    static, images = converted_resnet20()
    results = {}
    for label, cache_bytes in (("no cache", 0), ("prefix cache", 2 << 30)):
        strategy = create_strategy("evolution", seed=0, population=16, generations=8, patience=100,
                                   cache_bytes=cache_bytes)
        started = time.perf_counter()
        selection = strategy.select(static, [0.5], images)
        seconds = time.perf_counter() - started
        p = selection.provenance
        results[label] = {"seconds": seconds, "evaluations": p["evaluations"],
                          "evaluations_per_second": p["evaluations"] / seconds,
                          "forward_seconds": p["timing"]["forward_seconds"],
                          "layer_compute_share": p["layer_computes"] / p["layer_calls"], "fitness": p["fitness"][0],
                          "cache_mib": p["cache_mib"]}
        print(f"speed {label}: {results[label]}", flush=True)
    state["speed"] = results
    save_state(state)


def forward_profile(state: dict) -> None:
    """Which operators a candidate evaluation spends its time in (torch profiler, self CPU time)."""
    if "profile" in state:
        return
    static, images = converted_resnet20()
    apply_selection(static, create_strategy("range").select(static, [0.5]))
    set_ratio(static, 0.5)
    with torch.no_grad():
        static(images)  # warm-up
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            for _ in range(3):
                static(images)
    events = profiler.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shares = {e.key: e.self_cpu_time_total / total for e in events}
    top = dict(sorted(shares.items(), key=lambda kv: -kv[1])[:8])
    state["profile"] = {"top_ops": top, "convolution": sum(v for k, v in shares.items() if "conv" in k)}
    save_state(state)
    print(f"profile: {state['profile']}", flush=True)


def efficientnet_agreement(state: dict) -> None:
    """Top-1 agreement with FP32 of the pretrained EfficientNet-Lite0, on 256 crops of the offline photos."""
    done = state.setdefault("efficientnet", {})
    model = create_model("efficientnet_lite0", pretrained=True).eval()
    calibration = offline_photo_crops(model, 64, seed=1)
    images = offline_photo_crops(model, 256, seed=2)
    search_images = calibration[:16]
    with torch.no_grad():
        reference = torch.cat([model(chunk) for chunk in images.split(64)]).argmax(1)
    static = convert_model(model, calibration.split(32), QuantConfig())

    def agreement(qmodel) -> float:
        with torch.no_grad():
            predicted = torch.cat([qmodel(chunk) for chunk in images.split(64)]).argmax(1)
        return 100.0 * float((predicted == reference).double().mean())

    if "int8" not in done:
        done["int8"] = agreement(static)
        save_state(state)
    for method, options in (("uniform-int4", {}), ("random", {}), ("range", {}), ("hawq", {"probes": 2}),
                            ("greedy-error", {}),
                            ("evolution", {"population": 8, "generations": 6, "patience": 3, "metric": "kl",
                                           "progress": True})):
        if method in done:
            continue
        started = time.perf_counter()
        selection = create_strategy(method, seed=0, **options).select(static, LEVELS, search_images)
        qmodel = copy.deepcopy(static)
        apply_selection(qmodel, selection)
        row = {"agreement": {}, "select_seconds": time.perf_counter() - started}
        for ratio in LEVELS:
            set_ratio(qmodel, ratio)
            row["agreement"][str(ratio)] = agreement(qmodel)
        done[method] = row
        done.setdefault("selections", {})[method] = selection.to_json()
        save_state(state)
        print(f"efficientnet {method}: {row}", flush=True)
    if "evolution+dynamic" not in done and "evolution" in done.get("selections", {}):
        dynamic = convert_model(model, calibration.split(32), QuantConfig(activation_shift="dynamic"))
        apply_selection(dynamic, Selection.from_json(done["selections"]["evolution"]))
        row = {"agreement": {}, "select_seconds": done["evolution"]["select_seconds"]}
        for ratio in LEVELS:
            set_ratio(dynamic, ratio)
            row["agreement"][str(ratio)] = agreement(dynamic)
        done["evolution+dynamic"] = row
        save_state(state)
        print(f"efficientnet evolution+dynamic: {row}", flush=True)


METHOD_ROWS = ["uniform-int4", "uniform-int4+finetune", "random", "range", "hawq", "greedy-error", "evolution",
               "evolution-kl", "evolution+dynamic", "evolution+dynamic+finetune"]
LABELS = {
    "uniform-int4": "uniform INT4 (naive top 4 bits, same share per layer)",
    "uniform-int4+finetune": "uniform INT4 + finetuning",
    "random": "random", "range": "value-range greedy", "hawq": "HAWQ-style (whole layers, Hessian trace)",
    "greedy-error": "per-layer error greedy", "evolution": "evolution, MSE fitness (default)",
    "evolution-kl": "evolution, KL fitness",
    "evolution+dynamic": "evolution (KL) + dynamic extraction",
    "evolution+dynamic+finetune": "evolution (KL) + dynamic extraction + finetuning",
}


def render(state: dict, seconds: float) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        "## Channel selection: methods side by side (the paper's Tables 2 and 7)",
        "",
        f"Produced by `benchmarks/selection_accuracy.py` on {os.cpu_count()} cores ({cpu}, torch {torch.__version__}); "
        "its stages resume from `benchmarks/artifacts/selection_accuracy.json`, which also holds every "
        "selection and per-row timings. Fake-quant forward with the exact integer arithmetic, CPU. "
        "Group size 8, global MAC budget, first conv and classifier INT8, min/max calibration on 512 training "
        "images; searches and fitness use 256 of them. Fitness columns: logit MSE and KL(INT8 || candidate) "
        "on those images, the two metrics the search offers (lower is better). Evolution: population 16, up to 20 generations per level, early stop after 6 "
        "without improvement. Finetuning: 1 epoch over 20k training images, Adam 1e-4, distillation from FP32 "
        "(temperature 2), a ratio level sampled per batch.",
        "",
    ]
    for name, rows in state.get("table2", {}).items():
        ref = rows["reference"]
        lines += [
            f"### {name} on Fashion-MNIST: top-1 % on {ref['samples']} test images "
            f"(FP32 {ref['fp32']:.2f}, INT8 {ref['int8']:.2f})",
            "",
            "| method | 0% | 25% | 50% | 75% | 100% | MSE to INT8 at 25/50/75% | KL to INT8 at 25/50/75% |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for method in METHOD_ROWS:
            if method not in rows:
                continue
            row = rows[method]
            int8 = ref["int8"] if "finetune" not in method else None
            first = f"{int8:.2f}" if int8 is not None else "-"
            fitness = " | ".join("/".join(f"{f:.3g}" for f in row["fitness"][m][:3]) if "fitness" in row else "-"
                                 for m in ("mse", "kl"))
            lines.append(f"| {LABELS[method]} | {first} | " + " | ".join(
                f"{row['top1'][str(r)]:.2f}" for r in LEVELS) + f" | {fitness} |")
        lines.append("")
        if all(k in rows for k in ("range", "greedy-error", "evolution", "evolution+dynamic", "evolution+dynamic+finetune")):
            steps = [("value-range selection", "range"), ("per-layer error greedy", "greedy-error"),
                     ("evolutionary search (KL fitness)", "evolution-kl"), ("+ dynamic extraction", "evolution+dynamic"),
                     ("+ finetuning", "evolution+dynamic+finetune")]
            lines += [f"Ablation at 75% 4-bit ({name}, cumulative, the paper's Table 7):", "",
                      "| step | top-1 % | change |", "|---|---|---|"]
            previous = None
            for label, key in steps:
                value = rows[key]["top1"]["0.75"]
                change = "" if previous is None else f"{value - previous:+.2f}"
                lines.append(f"| {label} | {value:.2f} | {change} |")
                previous = value
            lines.append("")
    speed = state.get("speed")
    if speed:
        lines += ["### Search speed (ResNet-20, 256 calibration images, 50% level, 8 generations, same seed)", "",
                  "| fitness evaluator | evaluations | seconds | evaluations/s | time in model forwards | "
                  "layer forwards computed | cache |", "|---|---|---|---|---|---|---|"]
        for label, r in speed.items():
            lines.append(f"| {label} | {r['evaluations']} | {r['seconds']:.1f} | {r['evaluations_per_second']:.2f} | "
                         f"{r['forward_seconds'] / r['seconds']:.0%} | {r['layer_compute_share']:.0%} | "
                         f"{r['cache_mib']:.0f} MiB |")
        a, b = speed["no cache"], speed["prefix cache"]
        lines += ["", f"Speed-up of the prefix cache, measured side by side in one run: "
                  f"{b['evaluations_per_second'] / a['evaluations_per_second']:.2f}x evaluations per second "
                  f"(same fitness: {a['fitness']:.6g} vs {b['fitness']:.6g}).", ""]
    profile = state.get("profile")
    if profile:
        lines += ["Inside a candidate's forward (ResNet-20, 256 images, 50% level; torch profiler, self CPU time): "
                  f"convolutions {profile['convolution']:.0%}; top operators "
                  + ", ".join(f"`{k}` {v:.0%}" for k, v in profile["top_ops"].items()) + ".", ""]
    effnet = state.get("efficientnet")
    if effnet and len(effnet) > 1:
        lines += ["### Pretrained EfficientNet-Lite0 (ImageNet weights): top-1 agreement with FP32, %", "",
                  f"256 random resized crops of scikit-learn's two offline photos (no labelled ImageNet here); "
                  f"calibration and search on other crops of the same photos (16 for the search). "
                  f"INT8 agrees on {effnet['int8']:.1f}%. Evolution: population 8, up to 6 generations, KL fitness; "
                  f"its selection is also evaluated with dynamic extraction.", "",
                  "| method | 25% | 50% | 75% | 100% | selection seconds |", "|---|---|---|---|---|---|"]
        for method, row in effnet.items():
            if method in ("int8", "selections"):
                continue
            label = {"evolution": "evolution, KL fitness"}.get(method, LABELS.get(method, method))
            lines.append(f"| {label} | " + " | ".join(
                f"{row['agreement'][str(r)]:.1f}" for r in LEVELS) + f" | {row['select_seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--stages", default="table2,speed,profile,efficientnet")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny searches and samples, separate state file, RESULTS.md untouched")
    args = parser.parse_args()
    global STATE, FINETUNE_SAMPLES
    if args.quick:
        STATE = ARTIFACTS / "selection_accuracy_quick.json"
        FINETUNE_SAMPLES = 512
        EVOLUTION.update(population=4, generations=1)
        MODELS.pop("mobilenetv2_100")
        args.samples = min(args.samples, 300)
    torch.set_num_threads(os.cpu_count() or 1)
    state = load_state(args.fresh)
    started = time.perf_counter()
    stages = args.stages.split(",")
    if "table2" in stages:
        for name in MODELS:
            table2(name, args.samples, state)
    if "speed" in stages:
        search_speed(state)
    if "profile" in stages:
        forward_profile(state)
    if "efficientnet" in stages:
        efficientnet_agreement(state)
    text = render(state, time.perf_counter() - started)
    if not args.quick:
        write_section("selection_accuracy", text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
