"""Uniform INT4: the baseline without selection and without extraction.

Every layer lowers the same share of its groups, in channel index order, and takes the top 4 bits
of each code (naive extraction, shift 4 for every group), as a plain INT4 quantizer of the INT8
model would. At 100% this is uniform INT4; the lower levels are "the same share everywhere".
"""

from __future__ import annotations

import base64
from typing import Sequence

import torch
from torch import nn

from ..devices import HOST
from ..quant.arithmetic import HIGH_BITS, LOW_BITS
from ..quant.convert import mixed_layers
from .base import Selection, SelectionStrategy, register_strategy, selection_from_scores

NAIVE_SHIFT = HIGH_BITS - LOW_BITS


@register_strategy("uniform-int4")
class UniformInt4Selection(SelectionStrategy):
    """Index-order groups, the same share in every layer, naive top-4-bit extraction."""

    def _select(self, model: nn.Module, levels: Sequence[float], images: torch.Tensor | None = None) -> Selection:
        layers = mixed_layers(model, eligible_only=True)
        # Harm per MAC = the group's position within its layer (as a fraction): a global ranking by it
        # fills every layer at the same pace, so the global budget is also uniform per layer.
        scores = {name: ((torch.arange(layer.n_groups, dtype=torch.float64, device=HOST) + 0.5) / layer.n_groups
                         * layer.group_macs().to(HOST))
                  for name, layer in layers.items()}
        selection = selection_from_scores(model, scores, levels, method=self.name, budget=self.budget)
        selection.extraction = "naive"
        for name, layer in layers.items():
            chosen = selection.layers[name]
            chosen.act_shift = [NAIVE_SHIFT] * layer.n_groups
            naive = torch.full_like(layer.weight_shift, NAIVE_SHIFT, device=HOST)
            chosen.weight_shift = base64.b64encode(naive.numpy().tobytes()).decode()
        return selection
