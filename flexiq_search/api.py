"""The Python front door: any model -> one INT8 model whose 4-bit share switches at run time.

    fq = flexiq_search.quantize(model, calibration_images)      # QuantConfig: the recommended one
    fq.select("evolution", ratios=[0.25, 0.5, 0.75, 1.0])
    fq.set_ratio(0.5); logits = fq(images)
    fq.evaluate(labelled_data); fq.latency("cpu"); fq.export("model.flexiq")

`model` is an `nn.Module` or a model source (a registered name, a timm architecture, or
`package.module:factory`); data is a tensor of images, an (images, labels) pair, any `Dataset` or
`DataLoader` of (image, label) pairs, or a dataset spec such as `imagefolder:PATH`. Results are
dataclasses. The pieces underneath (quant.convert, selection, finetune, latency, runtime.export)
stay usable alone; this module only composes them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .config import QuantConfig, RECOMMENDED_QUANT
from .errors import FlexiqError

DEFAULT_LEVELS = (0.25, 0.5, 0.75, 1.0)
UNLABELLED = -1  # the label of images given without labels (calibration, label-free finetuning)


@dataclass(frozen=True)
class LevelAccuracy:
    """Accuracy at one ratio (0 = INT8), with the share of eligible MACs actually run in 4-bit."""

    ratio: float
    top1: float
    top5: float | None
    mac_share_4bit: float


@dataclass(frozen=True)
class Evaluation:
    samples: int
    fp32_top1: float
    fp32_top5: float | None
    levels: list[LevelAccuracy]

    def at(self, ratio: float) -> LevelAccuracy:
        for level in self.levels:
            if abs(level.ratio - ratio) < 1e-9:
                return level
        raise FlexiqError(f"ratio {ratio} was not evaluated ({[lv.ratio for lv in self.levels]})")


@dataclass(frozen=True)
class LatencyReport:
    """Latency per ratio from one backend; `provenance` says measured (on `hardware`) or simulated."""

    backend: str
    provenance: str
    hardware: dict
    int8_us: float
    ratios_us: dict[float, float]
    raw: dict = dataclasses.field(repr=False, default_factory=dict)


def as_dataset(data: Any, model: nn.Module | None = None, *, split: str = "test") -> Dataset:
    """`data` as a Dataset of (image, label) pairs (label -1 where none was given). A dataset spec or
    a `DatasetBundle` gives its `split` ("train" calibrates, "test" is scored; never the same images)."""
    from .data import DatasetBundle

    if isinstance(data, DatasetBundle):
        return data.test if split == "test" else data.train
    if isinstance(data, str):
        from .data import get_dataset

        bundle = get_dataset(data, model=model)
        return bundle.test if split == "test" else bundle.train
    if isinstance(data, torch.Tensor):
        if data.dim() != 4:
            raise FlexiqError(f"images must be a (N, C, H, W) tensor, got shape {tuple(data.shape)}")
        return TensorDataset(data, torch.full((len(data),), UNLABELLED))
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return TensorDataset(*data)
    if isinstance(data, DataLoader):
        return data.dataset
    if isinstance(data, Dataset):
        return data
    raise FlexiqError(f"data must be images, (images, labels), a Dataset, a DataLoader or a dataset spec; "
                      f"got {type(data).__name__}")


def image_batches(data: Any, model: nn.Module | None, samples: int) -> list[torch.Tensor]:
    """A fixed sample of `samples` images of `data` (the same on every run, and the same sample the
    CLI's `--calibration N` takes), in batches."""
    from .data import image_batches_of, sample_images

    return image_batches_of(sample_images(as_dataset(data, model, split="train"), samples))


def build_model(source: str, weights: str | None = None, **model_kwargs) -> nn.Module:
    """A float model from its source, with offline pretrained weights or `weights`."""
    from .models import create_model

    return create_model(source, pretrained=True, weights=weights, **model_kwargs).eval()


class FlexiQModel(nn.Module):
    """One INT8 model (`quantized`) plus the float model it came from (the teacher and FP32 baseline).

    Calling it runs the quantized model at the current ratio; `select` (or `apply`) gives it its
    nested 4-bit channel sets, `set_ratio` switches between them at no cost.
    """

    def __init__(self, float_model: nn.Module, quantized: nn.Module, quant: QuantConfig, input_shape: Sequence[int],
                 source: str | None = None, model_kwargs: dict | None = None) -> None:
        super().__init__()
        self.float_model, self.quantized, self.quant = float_model.eval(), quantized.eval(), quant
        self.input_shape = list(input_shape)
        self.source = source or getattr(float_model, "flexiq_model_name", None)  # create_model names its models
        self.model_kwargs = dict(model_kwargs or {})
        self.selection = None
        self.calibration_images = None  # kept for measuring selections; dropped by export
        self.last_evaluation: Evaluation | None = None  # what export writes as the levels' accuracy

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.quantized(images)

    @property
    def levels(self) -> list[float]:
        return list(self.selection.levels) if self.selection is not None else []

    def set_ratio(self, ratio: float) -> None:
        """Run `ratio` of the eligible MACs in 4-bit (0 = INT8); a level of the applied selection."""
        from .quant.convert import set_ratio

        if ratio and not any(abs(ratio - level) < 1e-9 for level in self.levels):
            raise FlexiqError(f"ratio {ratio} is not a level of the selection {self.levels}; select first")
        set_ratio(self.quantized, ratio)

    def select(self, method: str = "evolution", ratios: Sequence[float] = DEFAULT_LEVELS, data: Any = None,
               samples: int = 64, seed: int = 0, **options):
        """Choose the 4-bit channels of every level with a registered strategy (`flexiq_search.selection`)
        and apply them. Measuring strategies score on `data` (default: the calibration images)."""
        from .selection import create_strategy

        images = self.calibration_images if data is None else torch.cat(image_batches(data, self.float_model, samples))
        strategy = create_strategy(method, budget=self.quant.budget, seed=seed, **options)
        self.apply(strategy.select(self.quantized, list(ratios), images[:samples]))
        return self.selection

    def apply(self, selection) -> None:
        """Install a stored selection (a `Selection` or the path of its JSON)."""
        from .selection import Selection, apply_selection

        if isinstance(selection, (str, os.PathLike)):
            selection = Selection.load(selection)
        apply_selection(self.quantized, selection)
        self.selection = selection

    @torch.no_grad()
    def evaluate(self, data: Any, ratios: Sequence[float] | None = None, samples: int | None = None,
                 batch_size: int = 64) -> Evaluation:
        """Top-1/top-5 of FP32, INT8 and every level on labelled `data` (a spec scores its test split,
        never its calibration share); `samples` takes a fixed subset."""
        from .data import fixed_subset
        from .quant.convert import mac_share_4bit
        from .training import accuracy

        dataset = fixed_subset(as_dataset(data, self.float_model), samples)
        if len(dataset) == 0:
            raise FlexiqError("no images to evaluate")
        if int(dataset[0][1]) == UNLABELLED:
            raise FlexiqError("evaluate needs labelled data: pass (images, labels), a labelled Dataset or a spec")
        classes = int(self.float_model(dataset[0][0][None]).shape[1])
        fp32 = accuracy(self.float_model, dataset, batch_size=batch_size, num_classes=classes, progress=False)
        levels = []
        for ratio in [0.0, *(self.levels if ratios is None else [r for r in ratios if r > 0])]:
            self.set_ratio(ratio)
            top1, top5 = accuracy(self.quantized, dataset, batch_size=batch_size, num_classes=classes, progress=False)
            levels.append(LevelAccuracy(float(ratio), top1, top5, mac_share_4bit(self.quantized)))
        self.set_ratio(0)
        self.last_evaluation = Evaluation(len(dataset), fp32[0], fp32[1], levels)
        return self.last_evaluation

    def latency(self, backend: str = "cpu", batch: int = 1) -> LatencyReport:
        """Latency of INT8 and every level on a backend (`flexiq_search.latency`); one that cannot
        run here raises BackendUnavailable, it never invents numbers."""
        from .latency import create_backend

        if not self.levels:
            raise FlexiqError("select (or apply) a selection before measuring its latency")
        example = torch.zeros([batch, *self.input_shape[1:]])
        raw = create_backend(backend).measure(self.quantized, example, [0.0, *self.levels], self.source or "model")
        self.set_ratio(0)
        per_ratio = {float(r["ratio"]): r["latency_us"] for r in raw["ratios"]}
        int8 = per_ratio.pop(0.0)  # every backend reports INT8 as ratio 0 (as a search stores it)
        return LatencyReport(raw["backend"], raw["provenance"], raw["hardware"], int8, per_ratio, raw)

    def finetune(self, data: Any, config=None) -> dict:
        """Label-free distillation from the float model on `data` (images; labels are not needed),
        every level trained (a level drawn per batch); see `flexiq_search.finetune`."""
        from .data import DatasetBundle
        from .finetune import FinetuneConfig, finetune

        if not self.levels:
            raise FlexiqError("select (or apply) a selection before finetuning")
        dataset = as_dataset(data, self.float_model, split="train")
        config = config or FinetuneConfig(label_weight=0.0)
        shape = self.input_shape
        bundle = DatasetBundle("finetuning data", dataset, dataset, num_classes=0, in_chans=shape[1],
                               image_size=shape[-1], train_flip=shape[-1] > 32)
        return finetune(self.quantized, self.float_model, bundle, config, progress=False)

    def export(self, path: str | os.PathLike, accuracy: dict[float, float] | None = None,
               provenance: dict | None = None) -> Path:
        """One deployable `.flexiq` file (INT8 codes, shifts, selection, and the model's source so
        `load` can rebuild it wherever that source is importable). `accuracy` (ratio -> top-1, what
        serve-bench reports per level) defaults to the last `evaluate`'s."""
        from .runtime.export import export_model

        if self.selection is None:
            raise FlexiqError("select (or apply) a selection before exporting")
        if not self.source:
            raise FlexiqError("this model has no source to rebuild it from; quantize it by name "
                              "(a registered name, a timm architecture or package.module:factory)")
        if accuracy is None and self.last_evaluation is not None:
            accuracy = {level.ratio: level.top1 for level in self.last_evaluation.levels}
        return export_model(path, self.quantized, model_name=self.source, model_kwargs=self.model_kwargs,
                            input_shape=[1, *self.input_shape[1:]], quant=self.quant, selection=self.selection,
                            accuracy=accuracy or {}, provenance=provenance or {"source": "flexiq_search.api"})

    @staticmethod
    def load(path: str | os.PathLike):
        """The exported model (`runtime.export.ExportedModel`: the converted model and its manifest)."""
        from .runtime.export import load_export

        return load_export(path)


def quantize(model: nn.Module | str, calibration: Any, config: QuantConfig | None = None, *, samples: int = 512,
             weights: str | None = None, model_kwargs: dict | None = None, **source_kwargs) -> FlexiQModel:
    """Calibrate and convert `model` into one INT8 FlexiQ model (no 4-bit level yet: `select` next).

    `config` defaults to the recommended quantization (config.RECOMMENDED_QUANT, measured on
    ImageNet in docs/RESULTS.md). A model given by source keeps it, so `export` can name it;
    `source_kwargs` go to its factory. `model_kwargs`: how an already built model's source rebuilds it
    (what export stores). Every command of the CLI, the search and export convert through here.
    """
    from .quant.convert import convert_model

    float_model = build_model(model, weights, **source_kwargs) if isinstance(model, str) else model.eval()
    config = config or QuantConfig(**RECOMMENDED_QUANT)
    batches = calibration if _is_batches(calibration) else image_batches(calibration, float_model, samples)
    quantized = convert_model(float_model, batches, config)
    flexiq = FlexiQModel(float_model, quantized, config, list(batches[0].shape),
                         model_kwargs={**(model_kwargs or {}), **source_kwargs})
    flexiq.calibration_images = torch.cat(batches)
    return flexiq


def _is_batches(data: Any) -> bool:
    """A list of image tensors: calibration already sampled and batched (used as given)."""
    return isinstance(data, list) and bool(data) and all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in data)


def restore(float_model: nn.Module, quant: QuantConfig, input_shape: Sequence[int], state: dict,
            selection=None, *, source: str | None = None, model_kwargs: dict | None = None) -> FlexiQModel:
    """A FlexiQ model rebuilt from stored values (an export, a finetuned checkpoint): converting once
    on a blank image builds the module structure, then `state` replaces every value. Raises what
    `load_state_dict` raises on a state of another model (callers say which file)."""
    from .quant.convert import convert_model

    float_model = float_model.eval()
    quantized = convert_model(float_model, [torch.zeros(list(input_shape))], quant)
    quantized.load_state_dict(state)
    flexiq = FlexiQModel(float_model, quantized, quant, input_shape, source, model_kwargs)
    if selection is not None:
        flexiq.apply(selection)
    return flexiq
