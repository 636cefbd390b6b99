"""Per-layer error greedy: lower first the groups whose lowering alone adds the least layer error.

Unlike the value-range estimate, the error is measured: each group is lowered on its own and the
layer's output on calibration inputs (as the INT8 model feeds it) is compared with the INT8
output. The errors, relative to the layer's output power, are ranked per MAC like any score.
Each layer is judged alone, so errors that grow through later layers are not seen (the search sees them).
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from ..devices import module_device
from ..quant.convert import mixed_layers
from ..quant.modules import MixedPrecisionLayer
from .base import Selection, SelectionStrategy, register_strategy, selection_from_scores


@torch.no_grad()
def layer_output_errors(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """[G] per eligible layer: relative output error power when only that group runs in 4-bit.

    Measured inside one INT8 forward, each layer as the forward reaches it: only one layer's input
    is alive at a time (holding every layer's input for 240 photos at 260 px took 19 GB)."""
    int8 = copy.deepcopy(model)
    for layer in mixed_layers(int8).values():
        layer.boundary = 0
    errors: dict[str, torch.Tensor] = {}
    hooks = [layer.register_forward_pre_hook(lambda _m, inputs, name=name, layer=layer:
                                             errors.__setitem__(name, _relative_errors(layer, inputs[0])))
             for name, layer in mixed_layers(int8, eligible_only=True).items()]
    try:
        int8(images.to(module_device(int8)))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: errors[name] for name in mixed_layers(int8, eligible_only=True)}


def _relative_errors(layer: MixedPrecisionLayer, x: torch.Tensor) -> torch.Tensor:
    """[G] the layer's output error power, relative to its output power, lowering each group alone."""
    codes = layer.quantize_input(x)
    output_scale = (layer.act_scale * layer.weight_scale).double()
    power = max(float(layer.output_mean_square), 1e-30)
    centered = layer.group_bias_shift is not None  # bias correction cancels each group's mean shift
    # From the inputs' second moments where the layer allows (exact, no output tensor per group),
    # else from each group's lowering delta.
    mean_square = layer.group_lowering_errors(codes, centered)
    if mean_square is None:
        mean_square = torch.zeros(layer.n_groups, dtype=torch.float64, device=layer.device)
        for group in range(layer.n_groups):
            delta, outputs = layer.lowering_delta(group, x)
            delta = delta.double() * layer._view_channels(output_scale[outputs], delta.dim())
            if centered:
                dims = [d for d in range(delta.dim()) if d != layer.channel_dim % delta.dim()]
                delta = delta - delta.mean(dim=dims, keepdim=True)
            mean_square[group] = float(delta.square().sum()) / (delta.numel() // len(outputs) * layer.out_channels)
    return mean_square / power


@register_strategy("greedy-error")
class GreedyErrorSelection(SelectionStrategy):
    """Rank groups by measured layer-output error per MAC; fill each level in that order."""

    needs_images = True

    def _select(self, model: nn.Module, levels: Sequence[float], images: torch.Tensor | None = None) -> Selection:
        errors = layer_output_errors(model, self._require_images(images))
        return selection_from_scores(model, errors, levels, method=self.name, budget=self.budget,
                                     provenance={"calibration": len(images)})
