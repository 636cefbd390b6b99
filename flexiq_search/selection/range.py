"""Value-range selection: lower first the groups whose values span the smallest range.

A group whose INT8 codes use few bits loses nothing when extracted (shift 0) and little when the
shift is small. The score estimates the output noise that lowering a group adds, relative to the
layer's output power, from calibration statistics alone (no extra forward passes):

    noise(g) = sum over outputs o and taps k of channels c in g of
               E[a_c^2] * dw(o, g)^2 + E[w_ock^2] * da(g)^2,
    dw(o, g)^2 = s_w[o]^2 (4^shift_w(o, g) - 1) / 12,   da(g)^2 = s_a^2 (4^shift_a(g) - 1) / 12,

the extra rounding variance of a step 2^shift times coarser. Groups are ranked by noise per MAC.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..quant.convert import mixed_layers
from ..quant.modules import MixedPrecisionLayer
from .base import Selection, SelectionStrategy, register_strategy, selection_from_scores


def range_noise(layer: MixedPrecisionLayer) -> torch.Tensor:
    """[G] estimated relative output noise power added by lowering each group to 4-bit."""
    out, cols = layer.weight_group.shape
    weight = layer.weight_codes.double().reshape(out, cols, -1) * layer.weight_scale.double().view(-1, 1, 1)
    weight_power = weight.square().sum(dim=2)  # [O, columns]
    act_power = layer.act_channel_mean_square.double()[layer.weight_channel]  # [O, columns]
    shift_w = layer.weight_shift.double().gather(1, layer.weight_group)  # [O, columns]
    dw2 = layer.weight_scale.double().square().view(-1, 1) * (4.0 ** shift_w - 1) / 12
    da2 = float(layer.act_scale) ** 2 * (4.0 ** layer.act_shift.double() - 1) / 12  # [G]
    taps = weight.shape[2]
    per_column = act_power * dw2 * taps + weight_power * da2[layer.weight_group]
    noise = torch.zeros(layer.n_groups, dtype=torch.float64, device=layer.device)
    noise.scatter_add_(0, layer.weight_group.flatten(), per_column.flatten())
    return noise / (out * max(float(layer.output_mean_square), 1e-30))


@register_strategy("range")
class RangeSelection(SelectionStrategy):
    """Rank groups by estimated noise per MAC (value-range based), fill each level in that order.

    Deterministic: the seed is accepted for the common strategy interface and not used.
    """

    def _select(self, model: nn.Module, levels: Sequence[float], images: torch.Tensor | None = None) -> Selection:
        scores = {name: range_noise(layer) for name, layer in mixed_layers(model, eligible_only=True).items()}
        return selection_from_scores(model, scores, levels, method=self.name, budget=self.budget)
