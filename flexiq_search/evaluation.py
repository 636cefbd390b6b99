"""The accuracy table of a FlexiQ model: FP32, INT8 and every 4-bit ratio level.

Its dict is the `flexiq evaluate --json` contract: later code may add keys, never change these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .config import QuantConfig, config_to_dict
from .data import (CALIBRATION_BATCH, DEFAULT_CALIBRATION_SHARE, DatasetBundle, calibration_source, dataset_items,
                   fixed_subset, get_dataset, image_batches_of, parse_dataset_spec, sample_images)
from .devices import AUTO, module_device, resolve_device
from .errors import FlexiqError, first_line
from .models import create_model, get_model_entry, load_checkpoint_model
from .models.checkpoint import CHECKPOINT_FORMAT, check_model_name, read_checkpoint
from .api import quantize
from .quant.convert import mac_share_4bit, set_ratio
from .selection import Selection, apply_selection, create_strategy
from .training import accuracy


@dataclass
class PreparedModel:
    """A float model with the data it is evaluated on; for a quantized (finetuned) checkpoint,
    also its converted model, selection and quant config, which replace conversion and selection."""

    name: str
    model: nn.Module
    bundle: DatasetBundle
    quantized: nn.Module | None = None
    selection: Selection | None = None
    quant: QuantConfig | None = None
    model_kwargs: dict | None = None  # how the registry rebuilds the model (saved with derived checkpoints)

    @property
    def device(self) -> torch.device:
        """Where the models live, so where everything made from them computes."""
        return module_device(self.model)


def load_data(dataset: str, model: nn.Module, *, calibration_data: str | None = None,
              calibration_share: float = DEFAULT_CALIBRATION_SHARE, fold: int = 0) -> DatasetBundle:
    """The dataset for `model`, with calibration images that are never scored.

    With `calibration_data` (any dataset spec, e.g. a folder of unlabelled images) calibration comes
    from there and all of `dataset`'s test split is scored; otherwise from its train split, or from a
    seeded held-out share of a single image folder.
    """
    if calibration_data is None:
        return get_dataset(dataset, model=model, calibration_share=calibration_share, fold=fold)
    bundle = get_dataset(dataset, model=model, calibration_share=0)
    bundle.train = calibration_source(calibration_data, model=model)
    bundle.split = f"calibration from {calibration_data}, evaluation on {bundle.name}"
    return bundle


@torch.no_grad()
def check_runs_on(model: nn.Module, bundle: DatasetBundle, model_name: str) -> None:
    """One blank forward at the dataset's image size: a model that cannot run there (a ViT patch
    larger than the image, a stem that pools 8 px away) fails in one line before training or calibrating."""
    was_training = model.training
    try:
        model.eval()(torch.zeros(1, bundle.in_chans, bundle.image_size, bundle.image_size, device=module_device(model)))
    except (RuntimeError, AssertionError, ValueError) as exc:  # timm asserts on a fixed input size
        raise FlexiqError(f"model {model_name} cannot run on the {bundle.image_size}x{bundle.image_size} images of "
                          f"{bundle.name} ({bundle.in_chans} channel(s)): {first_line(exc)}") from None
    finally:
        model.train(was_training)


def prepare_model(model_name: str, dataset: str, checkpoint: str | None = None, *, weights: str | None = None,
                  device: str | None = AUTO, **data_options) -> PreparedModel:
    """The FP32 model (from a checkpoint, `weights`, or offline pretrained weights) and its dataset
    (`load_data`), on `device` (`resolve_device`: auto is CUDA when present)."""
    target = resolve_device(device)  # an unusable device fails before any data or weights are read
    prepared = _prepared_on_host(model_name, dataset, checkpoint, weights=weights, **data_options)
    prepared.model.to(target)
    if prepared.quantized is not None:
        prepared.quantized.to(target)
    return prepared


def _prepared_on_host(model_name: str, dataset: str, checkpoint: str | None, *, weights: str | None,
                      **data_options) -> PreparedModel:
    from .finetune import QUANTIZED_FORMAT, is_quantized_checkpoint, load_quantized_checkpoint

    get_model_entry(model_name)  # unknown names fail before any data or weights are read
    parse_dataset_spec(dataset)
    if data_options.get("calibration_data"):
        parse_dataset_spec(data_options["calibration_data"])
    if checkpoint and weights:
        raise FlexiqError("give --checkpoint or --weights, not both")
    if not checkpoint:
        model = create_model(model_name, pretrained=True, weights=weights).eval()
        bundle = load_data(dataset, model, **data_options)
        check_runs_on(model, bundle, model_name)
        return PreparedModel(model_name, model, bundle, model_kwargs={})
    payload = read_checkpoint(checkpoint, formats=(CHECKPOINT_FORMAT, QUANTIZED_FORMAT))
    check_model_name(checkpoint, payload, model_name)
    if is_quantized_checkpoint(payload):
        model, qmodel, selection, quant = load_quantized_checkpoint(payload)
        return PreparedModel(model_name, model, load_data(dataset, model, **data_options), qmodel, selection, quant,
                             payload["model_kwargs"])
    model, _ = load_checkpoint_model(checkpoint, expected_model=model_name, payload=payload)
    bundle = load_data(dataset, model, **data_options)
    check_runs_on(model, bundle, model_name)
    return PreparedModel(model_name, model, bundle, model_kwargs=payload["model_kwargs"])


def calibration_set(bundle: DatasetBundle, samples: int):
    """A fixed sample of the calibration split (the same images on every run)."""
    return sample_images(bundle.train, samples, f"{bundle.name} ({bundle.split})")


def calibration_batches(bundle: DatasetBundle, samples: int, batch_size: int = CALIBRATION_BATCH) -> list[torch.Tensor]:
    """`calibration_set` as batches of images."""
    return image_batches_of(calibration_set(bundle, samples), batch_size)


def data_provenance(bundle: DatasetBundle, calibration, evaluated) -> dict:
    """Which images calibrated and which were scored (paths in a folder, else sample indices)."""
    return {"split": bundle.split, "label_space": bundle.label_space,
            "calibration": {"count": len(calibration), "items": dataset_items(calibration)},
            "evaluation": {"count": len(evaluated), "items": dataset_items(evaluated)}}


def evaluate_ratios(prepared: PreparedModel, ratios: Sequence[float], *, calibration: int = 512,
                    samples: int | None = None, quant: QuantConfig | None = None, method: str = "range",
                    selection: Selection | None = None, batch_size: int = 256, progress: bool = True) -> dict:
    """FP32, INT8 and per-ratio accuracy, with the MAC share actually run in 4-bit at each level.

    The selection is, in order of precedence: the quantized checkpoint's, `selection`, or one made
    by `method` (measuring methods get the calibration images).
    """
    if prepared.quantized is not None:
        if selection is not None:
            raise FlexiqError("a quantized checkpoint carries its own selection; drop --selection")
        quant, selection = prepared.quant, prepared.selection
    quant = quant or QuantConfig()
    for ratio in ratios:
        if not 0 <= ratio <= 1:
            raise FlexiqError(f"ratio {ratio} is outside [0, 1]")
        if selection is not None and ratio > 0 and not any(abs(ratio - lv) < 1e-9 for lv in selection.levels):
            raise FlexiqError(f"ratio {ratio} is not a level of the selection {selection.levels}")
    bundle = prepared.bundle
    if not bundle.labelled:
        raise FlexiqError(f"{bundle.name} holds unlabelled images: pass it as --calibration-data, not --dataset")
    test = fixed_subset(bundle.test, samples)
    if len(test) == 0:
        raise FlexiqError(f"{bundle.name} has no images to evaluate ({bundle.split})")
    classes = bundle.num_classes

    def measure(model: nn.Module, desc: str) -> dict:
        top1, top5 = accuracy(model, test, batch_size=batch_size, num_classes=classes, desc=desc, progress=progress)
        return {"top1": top1, "top5": top5}

    report = {"model": prepared.name, "dataset": bundle.name, "samples": len(test), "device": str(prepared.device)}
    report["fp32"] = measure(prepared.model, "FP32")
    calibration_images = calibration_set(bundle, calibration)
    batches = image_batches_of(calibration_images)
    if prepared.quantized is not None:
        qmodel = prepared.quantized
        set_ratio(qmodel, 0)
    else:
        qmodel = quantize(prepared.model, batches, quant).quantized
    report["int8"] = measure(qmodel, "INT8")
    levels = sorted({float(r) for r in ratios if r > 0})
    if selection is None and levels:
        selection = create_strategy(method, budget=quant.budget).select(qmodel, levels, torch.cat(batches))
    if selection is not None and prepared.quantized is None:
        apply_selection(qmodel, selection)
    report["ratios"] = []
    for ratio in ratios:
        set_ratio(qmodel, ratio)
        result = report["int8"] if ratio == 0 else measure(qmodel, f"{ratio:.0%} 4-bit")
        report["ratios"].append({"ratio": float(ratio), **result, "mac_share_4bit": mac_share_4bit(qmodel)})
    report["method"] = selection.method if selection else None
    report["calibration"] = selection.provenance.get("calibration", calibration) if prepared.quantized is not None \
        else calibration
    report["quant_config"] = config_to_dict(quant)
    report["data"] = data_provenance(bundle, calibration_images, test)
    return report


def format_report(report: dict) -> str:
    """The accuracy table as people read it."""
    has_top5 = report["fp32"]["top5"] is not None
    header = f"{'precision':<14}{'4-bit MACs':>11}{'top-1 %':>10}" + (f"{'top-5 %':>10}" if has_top5 else "")
    lines = [
        f"{report['model']} on {report['dataset']}: {report['samples']} test samples, "
        f"calibration {report['calibration']}, selection {report['method'] or '-'}",
        f"data: {report['data']['split']}; labels: {report['data']['label_space']}",
        header,
        "-" * len(header),
    ]

    def row(label: str, share: str, result: dict) -> str:
        text = f"{label:<14}{share:>11}{result['top1']:>10.2f}"
        return text + (f"{result['top5']:>10.2f}" if has_top5 else "")

    lines.append(row("FP32", "-", report["fp32"]))
    lines.append(row("INT8", "0.0%", report["int8"]))
    for entry in report["ratios"]:
        if entry["ratio"] > 0:
            lines.append(row(f"{entry['ratio']:.0%} 4-bit", f"{entry['mac_share_4bit']:.1%}", entry))
    return "\n".join(lines)
