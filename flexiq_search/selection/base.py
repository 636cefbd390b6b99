"""What every channel-selection strategy produces, and the registry they live in.

A strategy looks at a converted (calibrated, frozen) model and returns a `Selection`: for each
eligible layer, its channel groups in the order they turn 4-bit and one boundary per ratio level.
Because levels only move boundaries along one order, a lower level's 4-bit set is always inside a
higher level's (nesting).
"""

from __future__ import annotations

import abc
import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from ..config import BUDGET_MODES
from ..errors import FlexiqError
from ..quant.convert import mixed_layers

SELECTION_FORMAT = "flexiq-selection"
SELECTION_VERSION = 1


@dataclass
class LayerSelection:
    order: list[int]  # channel groups, in the order they turn 4-bit
    boundaries: list[int]  # 4-bit group count at each level (non-decreasing)


@dataclass
class Selection:
    """Per-layer channel orders and nested per-level boundaries, plus how they were found."""

    method: str
    levels: list[float]
    group_size: int
    layers: dict[str, LayerSelection]
    provenance: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"format": SELECTION_FORMAT, "version": SELECTION_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> "Selection":
        payload = json.loads(text)
        if payload.get("format") != SELECTION_FORMAT or payload.get("version") != SELECTION_VERSION:
            raise FlexiqError("not a flexiq selection of a supported version")
        layers = {name: LayerSelection(**layer) for name, layer in payload["layers"].items()}
        return cls(payload["method"], payload["levels"], payload["group_size"], layers, payload.get("provenance", {}))


def apply_selection(model: nn.Module, selection: Selection) -> None:
    """Install a selection's orders and boundaries into a converted model (ratio reset to 0)."""
    layers = mixed_layers(model, eligible_only=True)
    if set(selection.layers) != set(layers):
        missing = sorted(set(layers) ^ set(selection.layers))
        raise FlexiqError(f"selection does not match the model's eligible layers (e.g. {missing[0]})")
    for name, layer in layers.items():
        chosen = selection.layers[name]
        layer.apply_selection(chosen.order, chosen.boundaries, list(selection.levels))


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
    prefix = torch.cat([torch.zeros(1, dtype=cumulative_macs.dtype), cumulative_macs])
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
    if budget == "per-layer":
        for name, layer in layers.items():
            macs = layer.group_macs()
            order = torch.argsort(scores[name] / macs, stable=True)
            bounds = nested_boundaries(macs[order].cumsum(0), float(macs.sum()), levels)
            selected[name] = LayerSelection(order.tolist(), bounds)
    elif budget == "global":
        names = list(layers)
        macs = torch.cat([layers[n].group_macs() for n in names])
        harm = torch.cat([scores[n].double() for n in names]) / macs
        owner = torch.cat([torch.full((layers[n].n_groups,), i) for i, n in enumerate(names)])
        local = torch.cat([torch.arange(layers[n].n_groups) for n in names])
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
    return Selection(method, levels, group_size, selected, dict(provenance or {}, budget=budget))


class SelectionStrategy(abc.ABC):
    """A way of choosing 4-bit channel groups.

    Life cycle: construct with keyword-only options, then `select(model, levels)` on a converted
    model; the result is a `Selection` that `apply_selection` installs. Strategies must be
    deterministic for a given seed. Every strategy takes the MAC budget mode and a seed.
    """

    name: str

    def __init__(self, *, budget: str = "global", seed: int = 0) -> None:
        if budget not in BUDGET_MODES:
            raise ValueError(f"budget must be one of {BUDGET_MODES}, got {budget!r}")
        self.budget = budget
        self.seed = seed

    @abc.abstractmethod
    def select(self, model: nn.Module, levels: Sequence[float]) -> Selection:
        ...


STRATEGIES: dict[str, Callable[..., SelectionStrategy]] = {}


def register_strategy(name: str):
    def wrap(cls):
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return wrap


def list_strategies() -> list[str]:
    return sorted(STRATEGIES)


def create_strategy(name: str, **kwargs) -> SelectionStrategy:
    if name not in STRATEGIES:
        raise FlexiqError(f"unknown selection method {name!r}; known: {', '.join(list_strategies())}")
    return STRATEGIES[name](**kwargs)
