"""The deployable FlexiQ model file (`.flexiq`): one INT8 model, every ratio level, no pickle.

Layout: the magic line `FLEXIQ-EXPORT\\n`, the SHA-256 of the rest (32 bytes), then a safetensors
blob. The blob's tensors are the converted model's state (INT8 weight codes, scales, per-layer
channel orders, extraction shifts, per-level boundaries); its metadata holds the JSON manifest
(format version, model and how to rebuild it, quant config, selection, accuracy measured at each
level, provenance). Loading reads only JSON and raw tensors (safetensors), checks the digest
first, so a truncated or altered file is refused with one clear line before anything is built.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import QuantConfig, config_from_dict, config_to_dict
from ..errors import FlexiqError, first_line

MAGIC = b"FLEXIQ-EXPORT\n"
FORMAT = "flexiq-export"
VERSION = 1
DIGEST_BYTES = 32


@dataclass
class ExportedModel:
    """A loaded export: the converted model (selection applied) and its manifest."""

    qmodel: nn.Module
    manifest: dict

    @property
    def levels(self) -> list[float]:
        return list(self.manifest["levels"])

    @property
    def accuracy(self) -> dict[float, float]:
        return {float(ratio): top1 for ratio, top1 in self.manifest["accuracy"].items()}


def export_model(path: str | os.PathLike, qmodel: nn.Module, *, model_name: str, model_kwargs: dict,
                 input_shape: list[int], quant: QuantConfig, selection, accuracy: dict[float, float],
                 provenance: dict) -> Path:
    """Write the export atomically (a crash never leaves half a file)."""
    from safetensors.torch import save

    manifest = {"format": FORMAT, "version": VERSION, "model": model_name, "model_kwargs": model_kwargs,
                "input_shape": list(input_shape), "quant_config": config_to_dict(quant),
                "selection": json.loads(selection.to_json()), "levels": list(selection.levels),
                "accuracy": {str(float(r)): float(a) for r, a in sorted(accuracy.items())}, "provenance": provenance}
    tensors = {name: value.detach().contiguous().cpu() for name, value in qmodel.state_dict().items()}
    blob = save(tensors, metadata={"flexiq_manifest": json.dumps(manifest, sort_keys=True)})
    path = Path(path)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as handle:
            temporary = handle.name
            handle.write(MAGIC + hashlib.sha256(blob).digest() + blob)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except OSError as exc:
        if temporary and os.path.exists(temporary):
            os.unlink(temporary)
        raise FlexiqError(f"cannot write {path}: {exc.strerror or first_line(exc)}") from None
    return path


def read_export(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """The manifest and tensors of an export, after checking its magic, digest and format."""
    from safetensors.torch import load

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FlexiqError(f"cannot read {path}: {exc.strerror}") from None
    if not data.startswith(MAGIC):
        raise FlexiqError(f"{path} is not a flexiq export (no {MAGIC.strip().decode()} header)")
    digest, blob = data[len(MAGIC):len(MAGIC) + DIGEST_BYTES], data[len(MAGIC) + DIGEST_BYTES:]
    if len(digest) < DIGEST_BYTES or hashlib.sha256(blob).digest() != digest:
        raise FlexiqError(f"{path} is truncated or altered (checksum mismatch); export it again")
    try:
        header_size = struct.unpack("<Q", blob[:8])[0]
        manifest = json.loads(json.loads(blob[8:8 + header_size])["__metadata__"]["flexiq_manifest"])
        tensors = load(blob)
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise FlexiqError(f"{path} is not a readable flexiq export: {exc}") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise FlexiqError(f"{path}: export format {manifest.get('format')} v{manifest.get('version')} is not "
                          f"supported (expects {FORMAT} v{VERSION})")
    return manifest, tensors


def load_export(path: str | os.PathLike) -> ExportedModel:
    """Rebuild the converted model from an export: structure from the model registry, every value from the file."""
    from ..api import restore
    from ..models import create_model
    from ..selection import Selection

    manifest, tensors = read_export(path)
    try:
        quant = config_from_dict(manifest["quant_config"])
        model = create_model(manifest["model"], **manifest["model_kwargs"])
        flexiq = restore(model, quant, manifest["input_shape"], tensors,
                         Selection.from_json(json.dumps(manifest["selection"])))
    except (RuntimeError, KeyError, ValueError) as exc:
        raise FlexiqError(f"{path} does not fit model {manifest.get('model')}: {first_line(exc)}") from None
    return ExportedModel(flexiq.quantized.eval(), manifest)
