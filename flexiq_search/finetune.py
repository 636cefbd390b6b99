"""Quantization-aware finetuning of the one INT8 model that serves every ratio (method.md, "Search").

Each batch samples one ratio level (INT8 included) and trains the shared latent weights through
straight-through rounding, distilled from the FP32 model (KL at a temperature, optionally mixed
with the label loss). Scales, shifts and the channel selection stay fixed, so the result is still
one INT8 weight set plus per-level boundaries.

The result is saved as a *quantized checkpoint*: the FP32 weights (for the FP32 row and as the
teacher), the converted model's state, its QuantConfig and its selection, all plain tensors and
JSON, loaded with `weights_only=True` and rebuilt by converting the registry model again.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .config import QuantConfig, config_from_dict, config_to_dict, versioned_config
from .data import DatasetBundle, fixed_subset
from .devices import module_device
from .errors import FlexiqError, first_line
from .models import create_model
from .models.checkpoint import save_atomically
from .quant.convert import mixed_layers, set_ratio
from .selection import Selection
from .training import augment

QUANTIZED_FORMAT = "flexiq-quantized-checkpoint"
QUANTIZED_VERSION = 1


@versioned_config("FinetuneConfig", 1)
@dataclass(frozen=True)
class FinetuneConfig:
    """epochs over `train_samples` images (None: the whole train split); Adam at `lr`."""

    epochs: int = 1
    lr: float = 1e-4
    train_samples: int | None = 10000
    batch_size: int = 128
    temperature: float = 2.0
    label_weight: float = 0.0  # weight of the cross-entropy on labels beside distillation
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or (self.train_samples is not None and self.train_samples < 1):
            raise ValueError("epochs, batch_size and train_samples must be at least 1")
        if not self.lr > 0 or not self.temperature > 0 or not 0 <= self.label_weight <= 1:
            raise ValueError("lr and temperature must be positive, label_weight in [0, 1]")


def finetune(qmodel: nn.Module, teacher: nn.Module, bundle: DatasetBundle, config: FinetuneConfig | None = None,
             progress: bool = True) -> dict:
    """Train `qmodel` (converted, selection applied) in place; returns the loss history summary."""
    config = config or FinetuneConfig()
    levels = [0.0] + sorted({float(r) for layer in mixed_layers(qmodel, eligible_only=True).values()
                             for r in layer.level_ratios.tolist()})
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    data = fixed_subset(bundle.train, config.train_samples, config.seed)
    loader = DataLoader(data, batch_size=config.batch_size, shuffle=True, generator=generator,
                        drop_last=len(data) > config.batch_size)
    layers = list(mixed_layers(qmodel).values())
    # Trains where the quantized model lives; the teacher runs where it lives (augmentation: host).
    device, teacher_device = module_device(qmodel), module_device(teacher)
    for layer in layers:
        layer.start_qat()
    qmodel.eval()  # no BN statistics or dropout: only the quantized weights learn
    teacher = teacher.eval()
    optimizer = torch.optim.Adam([p for p in qmodel.parameters() if p.requires_grad], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * len(loader))
    temperature, max_shift = config.temperature, max(1, bundle.image_size // 10)
    history = []
    try:
        for epoch in range(config.epochs):
            bar = tqdm(loader, desc=f"finetune epoch {epoch + 1}/{config.epochs}", disable=not progress,
                       mininterval=1.0, leave=False)
            running = math.nan
            for images, labels in bar:
                images = augment(images, flip=bundle.train_flip, max_shift=max_shift, generator=generator)
                images, labels = images.to(device), labels.to(device)
                set_ratio(qmodel, rng.choice(levels))
                with torch.no_grad():
                    teacher_logits = teacher(images.to(teacher_device)).to(device)
                    target = F.log_softmax(teacher_logits / temperature, dim=1)
                logits = qmodel(images)
                loss = F.kl_div(F.log_softmax(logits / temperature, dim=1), target, log_target=True,
                                reduction="batchmean") * temperature ** 2
                if config.label_weight:
                    loss = (1 - config.label_weight) * loss + config.label_weight * F.cross_entropy(logits, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                running = loss.item() if math.isnan(running) else 0.95 * running + 0.05 * loss.item()
                bar.set_postfix(loss=f"{running:.4f}", refresh=False)
            bar.close()
            history.append(running)
    finally:
        for layer in layers:
            layer.finish_qat()
        set_ratio(qmodel, 0)
    return {"epochs": config.epochs, "final_loss": history, "levels": levels, "train_samples": len(data)}


def save_quantized_checkpoint(path: str | os.PathLike, qmodel: nn.Module, float_model: nn.Module, *,
                              model_name: str, model_kwargs: dict, dataset: str, input_shape: list[int],
                              selection: Selection, finetune_config: FinetuneConfig | None = None,
                              metrics: dict | None = None) -> None:
    """Write atomically (temp file + rename): a crash never leaves half a checkpoint."""
    payload = {
        "format": QUANTIZED_FORMAT,
        "version": QUANTIZED_VERSION,
        "model": model_name,
        "model_kwargs": dict(model_kwargs),
        "dataset": dataset,
        "input_shape": list(input_shape),
        "fp32_state": {k: v.detach().cpu() for k, v in float_model.state_dict().items()},
        "quant_state": {k: v.detach().cpu() for k, v in qmodel.state_dict().items()},
        "quant_config": config_to_dict(qmodel.flexiq_config),
        "selection": selection.to_json(),
        "finetune": config_to_dict(finetune_config) if finetune_config else None,
        "metrics": metrics or {},
    }
    save_atomically(payload, path)


def is_quantized_checkpoint(payload: dict) -> bool:
    return isinstance(payload, dict) and payload.get("format") == QUANTIZED_FORMAT


def load_quantized_checkpoint(payload: dict) -> tuple[nn.Module, nn.Module, Selection, QuantConfig]:
    """(FP32 model, converted model with its selection applied, selection, quant config)."""
    if payload.get("version") != QUANTIZED_VERSION:
        raise FlexiqError(f"quantized checkpoint version {payload.get('version')} is not supported")
    from .api import restore

    float_model = create_model(payload["model"], **payload["model_kwargs"])
    try:
        float_model.load_state_dict(payload["fp32_state"])
        quant = config_from_dict(payload["quant_config"])
        selection = Selection.from_json(payload["selection"])
        flexiq = restore(float_model, quant, payload["input_shape"], payload["quant_state"], selection)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise FlexiqError(f"quantized checkpoint does not fit {payload['model']}: {first_line(exc)}") from None
    return flexiq.float_model, flexiq.quantized, selection, quant
