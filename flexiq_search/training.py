"""Training of FP32 base models and their accuracy measurement."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .data import DatasetBundle, fixed_subset
from .devices import HOST, module_device


def augment(images: torch.Tensor, *, flip: bool, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Random translations (zero-padded crop) and, where meaningful, horizontal flips of a batch
    (drawn on the host from `generator`: the same augmentation on any device)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=float(images.min()))
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator, device=HOST)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator, device=HOST)
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if flip:
        mask = (torch.rand(n, generator=generator, device=HOST) < 0.5).to(images.device)
        out[mask] = out[mask].flip(-1)
    return out


def train_model(model: nn.Module, bundle: DatasetBundle, *, epochs: int, batch_size: int = 128, lr: float = 0.1,
                weight_decay: float = 5e-4, seed: int = 0, train_samples: int | None = None,
                progress: bool = True) -> nn.Module:
    """SGD with Nesterov momentum, one-cycle cosine schedule, light augmentation."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data = fixed_subset(bundle.train, train_samples, seed)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator, drop_last=len(data) > batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(loader), pct_start=0.15)
    max_shift = max(1, bundle.image_size // 10)
    device = module_device(model)  # trains where the model lives; augmentation is seeded on the host
    model.train()
    for epoch in range(epochs):
        bar = tqdm(loader, desc=f"train epoch {epoch + 1}/{epochs}", disable=not progress, mininterval=1.0, leave=False)
        running = math.nan
        for images, labels in bar:
            images = augment(images, flip=bundle.train_flip, max_shift=max_shift, generator=generator)
            images, labels = images.to(device), labels.to(device)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running = loss.item() if math.isnan(running) else 0.95 * running + 0.05 * loss.item()
            bar.set_postfix(loss=f"{running:.3f}", refresh=False)
        bar.close()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Dataset, *, batch_size: int = 256, num_classes: int, desc: str = "evaluate",
             progress: bool = True) -> tuple[float, float | None]:
    """Top-1 and top-5 accuracy in percent; top-5 only where it means something (> 10 classes)."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size)
    correct1 = correct5 = total = 0
    with_top5 = num_classes > 10
    device = module_device(model)
    for images, labels in tqdm(loader, desc=desc, disable=not progress, mininterval=1.0, leave=False):
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += int((top[:, 0] == labels).sum())
        correct5 += int((top == labels[:, None]).any(dim=1).sum())
        total += len(labels)
    if total == 0:
        raise ValueError("no samples to evaluate")
    return 100.0 * correct1 / total, (100.0 * correct5 / total if with_top5 else None)
