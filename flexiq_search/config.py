"""Versioned, validated configs.

Configs serialize to `{"_type", "_version", "_data"}` (torchao's convention) and load only for
types registered here, so a stored config from an older code version fails loudly instead of being
misread.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .quant.arithmetic import EXTRACTION_MODES

CONFIG_TYPES: dict[str, type] = {}
DEVICE_AUTO = "auto"  # the device spec meaning CUDA when present (`devices.resolve_device`)
DEVICE_HELP = "compute device: auto (CUDA when present, else cpu), cpu, cuda, cuda:N, mps"
BUDGET_MODES = ("global", "per-layer")  # where a ratio's 4-bit MAC share is spent


def versioned_config(type_name: str, version: int):
    """Register a dataclass as a storable config type with a schema version."""

    def wrap(cls):
        cls._config_type = type_name
        cls._config_version = version
        CONFIG_TYPES[type_name] = cls
        return cls

    return wrap


def config_to_dict(config: Any) -> dict:
    return {
        "_type": config._config_type,
        "_version": config._config_version,
        "_data": dataclasses.asdict(config),
    }


def config_from_dict(payload: dict) -> Any:
    try:
        type_name, version, data = payload["_type"], payload["_version"], payload["_data"]
    except (KeyError, TypeError) as exc:
        raise ValueError("not a versioned config: expected keys _type, _version, _data") from exc
    cls = CONFIG_TYPES.get(type_name)
    if cls is None:
        raise ValueError(f"unknown config type {type_name!r}; known: {', '.join(sorted(CONFIG_TYPES))}")
    upgrade = getattr(cls, "upgrade", None)
    while upgrade is not None and version < cls._config_version:
        data, version = upgrade(version, dict(data)), version + 1
    if version != cls._config_version:
        raise ValueError(f"{type_name} version {version} cannot be loaded by this code (expects {cls._config_version})")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{type_name}: unknown keys {sorted(unknown)}")
    return cls(**data)


@versioned_config("QuantConfig", 4)
@dataclass(frozen=True)
class QuantConfig:
    """How a model is turned into a FlexiQ mixed-precision model (method.md, "Quantization scheme").

    group_size: input channels that switch precision together (and share an extraction shift).
    observer / percentile: how activation scales are calibrated.
    extraction: "shift" (skip unused high bits) or "naive" (always the top 4 bits).
    keep_first_int8 / keep_last_int8: the first conv and the classifier never go 4-bit.
    budget: the 4-bit ratio is a MAC share of all eligible layers ("global") or of each layer.
    activation_shift: activation extraction shifts fixed at calibration ("static") or taken per
        sample from the live codes ("dynamic extraction"). Added in version 2.
    bias_correction: every level adds a per-output-channel offset that cancels the mean output
        shift its 4-bit groups cause, measured on the calibration images. Added in version 3 (stored
        configs of version 2 load with it off, as they were measured).
    keep_depthwise_int8: depthwise convs never go 4-bit and leave the MAC budget (their weights have
        one channel per output, so extraction cannot narrow them; 9% of EfficientNet-Lite0's MACs).
        Added in version 4 (older configs load with it off).
    """

    group_size: int = 8
    observer: str = "minmax"
    percentile: float = 99.99
    extraction: str = "shift"
    keep_first_int8: bool = True
    keep_last_int8: bool = True
    budget: str = "global"
    activation_shift: str = "static"
    bias_correction: bool = False
    keep_depthwise_int8: bool = False

    @staticmethod
    def upgrade(version: int, data: dict) -> dict:
        """Bring stored data of `version` to `version + 1`."""
        if version == 1:
            data.setdefault("activation_shift", "static")
        if version == 2:
            data.setdefault("bias_correction", False)
        if version == 3:
            data.setdefault("keep_depthwise_int8", False)
        return data

    def __post_init__(self) -> None:
        from .quant.modules import ACTIVATION_SHIFT_MODES
        from .quant.observers import OBSERVERS

        if not isinstance(self.group_size, int) or self.group_size < 1:
            raise ValueError(f"group_size must be a positive integer, got {self.group_size!r}")
        if self.observer not in OBSERVERS:
            raise ValueError(f"unknown observer {self.observer!r}; known: {', '.join(sorted(OBSERVERS))}")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.extraction not in EXTRACTION_MODES:
            raise ValueError(f"unknown extraction {self.extraction!r}; expected one of {EXTRACTION_MODES}")
        if self.budget not in BUDGET_MODES:
            raise ValueError(f"budget must be one of {BUDGET_MODES}, got {self.budget!r}")
        if self.activation_shift not in ACTIVATION_SHIFT_MODES:
            raise ValueError(f"activation_shift must be one of {ACTIVATION_SHIFT_MODES}, got {self.activation_shift!r}")
        if not isinstance(self.bias_correction, bool):
            raise ValueError(f"bias_correction must be true or false, got {self.bias_correction!r}")
        if not isinstance(self.keep_depthwise_int8, bool):
            raise ValueError(f"keep_depthwise_int8 must be true or false, got {self.keep_depthwise_int8!r}")


# The quantization measured best on pretrained ImageNet models (docs/RESULTS.md, "Pretrained ImageNet
# models"): the defaults of `select`, `evaluate`, `finetune`, `search` and the demo. `QuantConfig()`
# itself stays method.md's baseline (group size 8, min/max, static shifts), which the ablation starts from.
RECOMMENDED_QUANT = {"group_size": 1, "observer": "percentile", "activation_shift": "dynamic", "bias_correction": True,
                     "keep_depthwise_int8": True}

SEARCH_SPACE_KEYS = ("group_size", "activation_shift", "observer", "bias_correction", "keep_depthwise_int8",
                     "population", "generations", "calibration", "islands", "finetune_epochs", "finetune_lr")


@versioned_config("SearchConfig", 5)
@dataclass(frozen=True)
class SearchConfig:
    """One FlexiQ search study: what to search, how hard, where latency comes from.

    The Optuna outer search (NSGA-II, `trials` > 1) draws the keys named in `search_space` from
    their listed choices; the first trial always runs the values given here. Objectives per trial:
    mean top-1 over the levels (maximize) and mean latency over the levels on the first backend
    (minimize).
    """

    model: str
    dataset: str
    checkpoint: str | None = None
    weights: str | None = None  # the model's weights file (safetensors or a state dict); else pretrained / cache
    name: str | None = None  # study name; default "<model>-<dataset>-seed<seed>"
    backends: tuple[str, ...] = ("npu-sim",)
    ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    trials: int = 1
    seed: int = 0
    workers: int = 1  # fitness actors on the Ray cluster
    device: str = DEVICE_AUTO  # where fitness, evaluation and finetuning compute: auto = CUDA when present
    islands: int = 1
    migration_interval: int = 4
    population: int = 12
    generations: int = 8
    metric: str = "kl"  # measured to track accuracy better than logit MSE (docs/RESULTS.md)
    calibration: int = 256
    calibration_data: str | None = None  # a dataset spec to calibrate on; else the dataset's own calibration split
    calibration_share: float = 0.2  # of a single image folder, held out (seeded) to calibrate and never scored
    eval_samples: int | None = 2000
    group_size: int = RECOMMENDED_QUANT["group_size"]
    activation_shift: str = RECOMMENDED_QUANT["activation_shift"]
    observer: str = RECOMMENDED_QUANT["observer"]
    bias_correction: bool = RECOMMENDED_QUANT["bias_correction"]
    keep_depthwise_int8: bool = RECOMMENDED_QUANT["keep_depthwise_int8"]
    finetune_epochs: int = 0
    finetune_lr: float = 1e-4
    finetune_samples: int | None = 2000
    search_space: dict = dataclasses.field(default_factory=dict)

    @staticmethod
    def upgrade(version: int, data: dict) -> dict:
        """Version 2 added observer and bias_correction (and made the recommended settings the
        defaults), version 3 keep_depthwise_int8 (and calibration_data / calibration_share, whose
        defaults are what older versions did), version 4 weights (any model source: a timm name or
        package.module:factory; None is what older versions did), version 5 device (auto: on the CPU
        machines older versions ran on, what they did); stored configs keep what they ran with."""
        if version == 1:
            data.setdefault("group_size", 8)
            data.setdefault("activation_shift", "static")
            data.setdefault("observer", "minmax")
            data.setdefault("bias_correction", False)
        if version == 2:
            data.setdefault("keep_depthwise_int8", False)
        return data

    def quant_config(self) -> QuantConfig:
        """The QuantConfig every trial of this config converts with."""
        return QuantConfig(**{key: getattr(self, key) for key in RECOMMENDED_QUANT})

    def __post_init__(self) -> None:
        from .selection.fitness import FITNESS_METRICS

        for key in ("backends", "ratios"):  # lists from YAML or stored JSON: the same config as tuples
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        for key in ("trials", "workers", "islands", "migration_interval", "population", "calibration"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        for key in ("generations", "finetune_epochs", "seed"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
        if self.eval_samples is not None and (not isinstance(self.eval_samples, int) or self.eval_samples < 1):
            raise ValueError(f"eval_samples must be a positive integer or null, got {self.eval_samples!r}")
        if not self.backends:
            raise ValueError("backends must name at least one latency backend")
        if not self.ratios or any(not isinstance(r, (int, float)) or not 0 < r <= 1 for r in self.ratios):
            raise ValueError(f"ratios must be numbers in (0, 1], got {list(self.ratios)}")
        if not isinstance(self.calibration_share, (int, float)) or not 0 < self.calibration_share < 1:
            raise ValueError(f"calibration_share must be in (0, 1), got {self.calibration_share!r}")
        if self.metric not in FITNESS_METRICS:
            raise ValueError(f"metric must be one of {FITNESS_METRICS}, got {self.metric!r}")
        self.quant_config()  # validates the quantization keys
        self.evolution()  # validates population, generations, islands against the strategy itself
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must name a device (auto, cpu, cuda, cuda:N), got {self.device!r}")
        if not isinstance(self.search_space, dict):
            raise ValueError("search_space must map parameter names to lists of choices")
        for key, choices in self.search_space.items():
            if key not in SEARCH_SPACE_KEYS:
                raise ValueError(f"search_space: unknown parameter {key!r}; searchable: {', '.join(SEARCH_SPACE_KEYS)}")
            if not isinstance(choices, (list, tuple)) or not choices:
                raise ValueError(f"search_space: {key} needs a non-empty list of choices")
            for choice in choices:
                dataclasses.replace(self, search_space={}, **{key: choice})  # every choice must validate

    def evolution(self):
        """The evolutionary selection every trial of this config runs."""
        from .selection.evolution import EvolutionarySelection

        return EvolutionarySelection(seed=self.seed, population=self.population, generations=self.generations,
                                     islands=self.islands, migration_interval=self.migration_interval,
                                     metric=self.metric)

    @property
    def study_name(self) -> str:
        return self.name or f"{self.model}-{self.dataset}-seed{self.seed}"
