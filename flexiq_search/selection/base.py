"""What every channel-selection strategy produces, and the registry they live in.

A strategy looks at a converted (calibrated, frozen) model and returns a `Selection`: for each
eligible layer, its channel groups in the order they turn 4-bit and one boundary per ratio level.
Because levels only move boundaries along one order, a lower level's 4-bit set is always inside a
higher level's (nesting).
"""

from __future__ import annotations

import abc
import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import nn

from ..config import BUDGET_MODES
from ..devices import HOST, module_device
from ..errors import FlexiqError
from ..quant.arithmetic import MAX_SHIFT
from ..quant.convert import mixed_layers, restore_calibrated_shifts
from ..registry import Registry

SELECTION_FORMAT = "flexiq-selection"
SELECTION_VERSION = 2  # 2 added the extraction mode and the shifts; version 1 files still load


@dataclass
class LayerSelection:
    order: list[int]  # channel groups, in the order they turn 4-bit
    boundaries: list[int]  # 4-bit group count at each level (non-decreasing)
    act_shift: list[int] | None = None  # [G] static activation extraction shifts
    weight_shift: str | None = None  # [O, G] weight extraction shifts, uint8 bytes in base64


@dataclass
class Selection:
    """Per-layer channel orders, nested per-level boundaries and shifts, plus how they were found."""

    method: str
    levels: list[float]
    group_size: int
    layers: dict[str, LayerSelection]
    provenance: dict = field(default_factory=dict)
    extraction: str | None = None  # "shift" or "naive"; None: keep the model's

    def to_json(self) -> str:
        return json.dumps({"format": SELECTION_FORMAT, "version": SELECTION_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> "Selection":
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FlexiqError(f"selection file is not JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(payload, dict) or payload.get("format") != SELECTION_FORMAT \
                or payload.get("version") not in (1, SELECTION_VERSION):
            raise FlexiqError("not a flexiq selection of a supported version")
        try:
            layers = {name: LayerSelection(**layer) for name, layer in payload["layers"].items()}
            selection = cls(payload["method"], payload["levels"], payload["group_size"], layers,
                            payload.get("provenance", {}), payload.get("extraction"))
        except (KeyError, TypeError, AttributeError) as exc:
            raise FlexiqError(f"malformed flexiq selection: {exc}") from None
        for name, layer in layers.items():  # read now: a bad shift must fail before any data is loaded
            shifts = list(layer.act_shift or [])
            if layer.weight_shift is not None:
                shifts += list(base64.b64decode(layer.weight_shift))
            wrong = [s for s in shifts if not isinstance(s, int) or not 0 <= s <= MAX_SHIFT]
            if wrong:
                raise FlexiqError(f"selection layer {name}: extraction shift {wrong[0]} is outside 0..{MAX_SHIFT}")
        return selection

    @classmethod
    def load(cls, path: str) -> "Selection":
        try:
            text = open(path).read()
        except OSError as exc:
            raise FlexiqError(f"cannot read selection {path}: {exc.strerror}") from None
        return cls.from_json(text)


def record_shifts(model: nn.Module, selection: Selection) -> Selection:
    """Store the model's extraction mode and shifts in the selection (they define its 4-bit operands)."""
    for name, layer in mixed_layers(model, eligible_only=True).items():
        chosen = selection.layers[name]
        chosen.act_shift = layer.act_shift.tolist()
        chosen.weight_shift = base64.b64encode(layer.weight_shift.to(HOST).numpy().tobytes()).decode()
        selection.extraction = layer.extraction
    return selection


def apply_selection(model: nn.Module, selection: Selection) -> None:
    """Install a selection's orders, boundaries and shifts into a converted model (ratio reset to 0)."""
    layers = mixed_layers(model, eligible_only=True)
    if set(selection.layers) != set(layers):
        missing = sorted(set(layers) ^ set(selection.layers))
        raise FlexiqError(f"selection does not match the model's eligible layers (e.g. {missing[0]})")
    group_size = next(iter(layers.values())).group_size
    if selection.group_size != group_size:
        raise FlexiqError(f"selection was made for group size {selection.group_size}, the model has {group_size}")
    for name, layer in layers.items():
        chosen = selection.layers[name]
        try:
            # Shifts first: the level bias offsets hold only for the shifts calibration measured them with.
            if chosen.act_shift is not None and chosen.weight_shift is not None:
                weight_shift = torch.frombuffer(bytearray(base64.b64decode(chosen.weight_shift)), dtype=torch.uint8)
                if weight_shift.numel() != layer.weight_shift.numel():
                    raise ValueError("selection shifts do not fit the layer's channel groups")
                layer.install_shifts(selection.extraction or layer.extraction,
                                     torch.tensor(chosen.act_shift, dtype=torch.uint8, device=layer.device),
                                     weight_shift.view_as(layer.weight_shift).to(layer.device))
            else:
                layer.restore_calibrated_shifts()
            layer.apply_selection(chosen.order, chosen.boundaries, list(selection.levels))
        except ValueError as exc:
            raise FlexiqError(f"selection does not fit layer {name}: {exc}") from None


def validate_levels(levels: Sequence[float]) -> list[float]:
    levels = sorted(float(r) for r in levels if r > 0)
    if any(not 0 < r <= 1 for r in levels):
        raise ValueError(f"ratio levels must lie in (0, 1], got {levels}")
    if len(set(levels)) != len(levels):
        raise ValueError(f"ratio levels must be distinct, got {levels}")
    return levels


def nested_boundaries(cumulative_macs: torch.Tensor, total_macs: float, levels: Sequence[float]) -> list[int]:
    """For each level, the prefix length of a ranking whose 4-bit MACs come closest to ratio x total.

    Ties go to the longer prefix; ratio 1 always takes every group. Prefixes of one ranking, so nested.
    """
    prefix = torch.cat([torch.zeros(1, dtype=cumulative_macs.dtype, device=cumulative_macs.device), cumulative_macs])
    boundaries = []
    for ratio in levels:
        if ratio >= 1:
            boundaries.append(len(cumulative_macs))
            continue
        distance = (prefix - ratio * total_macs).abs()
        best = torch.nonzero(distance <= distance.min() * (1 + 1e-12)).max()
        boundaries.append(int(best))
    return boundaries


def selection_from_scores(model: nn.Module, scores: dict[str, torch.Tensor], levels: Sequence[float], *,
                          method: str, budget: str, provenance: dict | None = None) -> Selection:
    """Turn per-group harm scores (lower = safer in 4-bit) into a nested selection.

    budget="global": one ranking of harm per MAC over all eligible layers, so a level's MAC share
    is spent where it hurts least; "per-layer": every layer reaches the level's share on its own.
    """
    levels = validate_levels(levels)
    layers = mixed_layers(model, eligible_only=True)
    if not layers:
        raise FlexiqError("the model has no layer eligible for 4-bit")
    selected: dict[str, LayerSelection] = {}
    scores = {name: score.to(HOST, torch.float64) for name, score in scores.items()}  # layers may be on a GPU
    if budget == "per-layer":
        for name, layer in layers.items():
            macs = layer.group_macs().to(HOST)
            order = torch.argsort(scores[name] / macs, stable=True)
            bounds = nested_boundaries(macs[order].cumsum(0), float(macs.sum()), levels)
            selected[name] = LayerSelection(order.tolist(), bounds)
    elif budget == "global":
        names = list(layers)
        macs = torch.cat([layers[n].group_macs().to(HOST) for n in names])
        harm = torch.cat([scores[n] for n in names]) / macs
        owner = torch.cat([torch.full((layers[n].n_groups,), i, device=HOST) for i, n in enumerate(names)])
        local = torch.cat([torch.arange(layers[n].n_groups, device=HOST) for n in names])
        ranking = torch.argsort(harm, stable=True)
        global_bounds = nested_boundaries(macs[ranking].cumsum(0), float(macs.sum()), levels)
        for i, name in enumerate(names):
            mine = owner[ranking] == i
            order = local[ranking][mine]
            position = torch.cumsum(mine.long(), 0)  # my groups among the first k of the ranking
            bounds = [int(position[k - 1]) if k > 0 else 0 for k in global_bounds]
            selected[name] = LayerSelection(order.tolist(), bounds)
    else:
        raise ValueError(f"budget must be one of {BUDGET_MODES}, got {budget!r}")
    group_size = next(iter(layers.values())).group_size
    return record_shifts(model, Selection(method, levels, group_size, selected, dict(provenance or {}, budget=budget)))


class SelectionStrategy(abc.ABC):
    """A way of choosing 4-bit channel groups.

    Life cycle: construct with keyword-only options, then `select(model, levels, images)` on a
    converted model; the result is a `Selection` that `apply_selection` installs. Strategies must
    be deterministic for a given seed. Every strategy takes the MAC budget mode and a seed.
    Strategies that measure (`needs_images`) get calibration images; the others ignore them.
    """

    name: str
    needs_images = False
    granularity = "group"  # "layer": whole layers switch precision (a coarser MAC budget)

    def __init__(self, *, budget: str = "global", seed: int = 0) -> None:
        if budget not in BUDGET_MODES:
            raise ValueError(f"budget must be one of {BUDGET_MODES}, got {budget!r}")
        self.budget = budget
        self.seed = seed

    def select(self, model: nn.Module, levels: Sequence[float], images: torch.Tensor | None = None,
               **options) -> Selection:
        """Choose on the shifts calibration set: foreign ones an earlier selection installed (uniform
        INT4's naive extraction) are undone first, so a strategy never scores another's operands.
        Measuring strategies compute where the model lives: move the model to choose the device."""
        restore_calibrated_shifts(model)
        if images is not None:
            images = images.to(module_device(model))
        return self._select(model, levels, images, **options)

    @abc.abstractmethod
    def _select(self, model: nn.Module, levels: Sequence[float], images: torch.Tensor | None = None) -> Selection:
        ...

    def _require_images(self, images: torch.Tensor | None) -> torch.Tensor:
        if images is None or len(images) == 0:
            raise FlexiqError(f"selection method {self.name!r} needs calibration images")
        return images


STRATEGIES = Registry("selection method")
register_strategy = STRATEGIES.register
list_strategies = STRATEGIES.names


def create_strategy(name: str, **kwargs) -> SelectionStrategy:
    return STRATEGIES.create(name, **kwargs)
