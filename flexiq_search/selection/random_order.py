"""Random selection: the floor any real strategy must beat."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..devices import HOST
from ..quant.convert import mixed_layers
from .base import Selection, SelectionStrategy, register_strategy, selection_from_scores


@register_strategy("random")
class RandomSelection(SelectionStrategy):
    """Groups in a seeded random order."""

    def _select(self, model: nn.Module, levels: Sequence[float], images: torch.Tensor | None = None) -> Selection:
        generator = torch.Generator().manual_seed(self.seed)
        layers = mixed_layers(model, eligible_only=True)
        # harm per MAC is what gets ranked: uniform random harm per MAC is a uniform random order
        scores = {name: torch.rand(layer.n_groups, generator=generator, dtype=torch.float64, device=HOST)
                        * layer.group_macs().to(HOST)
                  for name, layer in layers.items()}
        return selection_from_scores(model, scores, levels, method=self.name, budget=self.budget,
                                     provenance={"seed": self.seed})
