"""What the benchmark scripts share: their section of docs/RESULTS.md and the offline photo crops."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import torch

from flexiq_search.allocator import keep_freed_memory

keep_freed_memory()  # large activations are reused, not page-faulted in again (flexiq_search/allocator.py)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "benchmarks" / "artifacts"
RESULTS = ROOT / "docs" / "RESULTS.md"


def write_section(name: str, text: str) -> None:
    """Replace the `name` section of docs/RESULTS.md (between its markers), keeping the others."""
    marker_start, marker_end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{marker_start}\n{text}{marker_end}\n"
    existing = RESULTS.read_text() if RESULTS.is_file() else "# Measured results\n\nEvery number here was produced by a script under `benchmarks/`.\n\n"
    if marker_start in existing:
        head, rest = existing.split(marker_start, 1)
        after = rest.split(marker_end, 1)[1].lstrip("\n")
        existing = head + block + ("\n" + after if after else "")
    else:
        existing = existing.rstrip("\n") + "\n\n" + block
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(existing)


def load_state(path: Path, fresh: bool) -> dict:
    """A benchmark's stored stage results ({} when starting over), so a rerun skips finished stages."""
    return {} if fresh or not path.is_file() else json.loads(path.read_text())


def save_state(path: Path, state: dict) -> None:
    """Write the stage results atomically: an interrupted run keeps every stage it finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def offline_photo_crops(model: torch.nn.Module, count: int, seed: int) -> torch.Tensor:
    """Random resized crops (timm's training transform for `model`) of scikit-learn's two photos.

    The only natural RGB images available offline: enough to compare a quantized model's top-1
    with its FP32 model's, not to measure ImageNet accuracy.
    """
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config({}, model=model), is_training=True)
    torch.manual_seed(seed)
    random.seed(seed)  # timm's RandomResizedCrop draws from Python's generator
    photos = [Image.fromarray(img) for img in load_sample_images().images]
    return torch.stack([transform(photos[i % 2]) for i in range(count)])
