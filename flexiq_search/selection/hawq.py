"""Hessian-trace layer-wise assignment in the style of HAWQ-V2/V3: whole layers go 4-bit.

Sensitivity of layer l: Omega_l = Tr(H_l) / n_l * ||W4_l - W8_l||^2, the mean Hessian trace of the
loss with respect to its weights (Hutchinson's estimator, Rademacher probes) times the squared
weight perturbation that lowering the whole layer causes. The loss is the cross-entropy of the
INT8 model against its own predictions, so no labels are needed. Layers are ranked by
sensitivity per MAC, and each level takes the prefix of that ranking whose MACs come closest to
its share: the same MAC budget as the channel-wise methods, at layer granularity.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import HOST
from ..errors import FlexiqError
from ..quant.arithmetic import lowered_codes
from ..quant.convert import mixed_layers
from .base import (
    LayerSelection, Selection, SelectionStrategy, nested_boundaries, record_shifts, register_strategy, validate_levels,
)


def hessian_traces(model: nn.Module, images: torch.Tensor, probes: int, seed: int) -> dict[str, float]:
    """Hutchinson estimate of Tr(H) per eligible layer, at the INT8 point (straight-through rounding)."""
    qat = copy.deepcopy(model).eval()
    layers = mixed_layers(qat, eligible_only=True)
    for layer in mixed_layers(qat).values():
        layer.boundary = 0
        layer.start_qat()
    with torch.no_grad():
        labels = qat(images).argmax(dim=1)
    params = [layers[name].qat_weight for name in layers]
    loss = F.cross_entropy(qat(images), labels)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    generator = torch.Generator().manual_seed(seed)
    traces = torch.zeros(len(params), dtype=torch.float64, device=HOST)
    for _ in range(probes):
        # Rademacher probes drawn on the host (the same probes on any device), then moved
        vs = [(torch.randint(0, 2, p.shape, generator=generator, device=HOST).float() * 2 - 1).to(p.device)
              for p in params]
        hvs = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
        traces += torch.stack([(hv * v).sum().double() for hv, v in zip(hvs, vs)]).to(HOST)
    return {name: float(t) / probes for name, t in zip(layers, traces)}


def lowering_perturbation(layer) -> float:
    """||W4 - W8||^2 of the whole layer lowered, in weight units."""
    codes = layer.weight_codes.to(torch.int32)
    lowered = lowered_codes(codes, layer._weight_shift_per_column(), True)
    scale = layer.weight_scale.view(-1, *[1] * (codes.dim() - 1))
    return float(((lowered - codes).float() * scale).double().square().sum())


@register_strategy("hawq")
class HawqSelection(SelectionStrategy):
    """Whole layers to 4-bit in order of Hessian-trace sensitivity per MAC."""

    needs_images = True
    granularity = "layer"

    def __init__(self, *, budget: str = "global", seed: int = 0, probes: int = 8) -> None:
        super().__init__(budget=budget, seed=seed)
        if budget != "global":
            raise FlexiqError("hawq assigns whole layers to 4-bit: it needs the global budget")
        self.probes = probes

    def _select(self, model: nn.Module, levels: Sequence[float], images: torch.Tensor | None = None) -> Selection:
        images = self._require_images(images)
        levels = validate_levels(levels)
        layers = mixed_layers(model, eligible_only=True)
        traces = hessian_traces(model, images, self.probes, self.seed)
        sensitivity, macs = {}, {}
        for name, layer in layers.items():
            mean_trace = max(traces[name], 0.0) / layer.weight_codes.numel()
            sensitivity[name] = mean_trace * lowering_perturbation(layer)
            macs[name] = float(layer.group_macs().sum())
        ranking = sorted(layers, key=lambda n: sensitivity[n] / macs[n])
        cumulative = torch.tensor([macs[n] for n in ranking], dtype=torch.float64, device=HOST).cumsum(0)
        prefix = nested_boundaries(cumulative, float(cumulative[-1]), levels)
        selected = {}
        for position, name in enumerate(ranking):
            n_groups = layers[name].n_groups
            selected[name] = LayerSelection(list(range(n_groups)), [n_groups if position < k else 0 for k in prefix])
        provenance = {"seed": self.seed, "budget": self.budget, "probes": self.probes, "calibration": len(images),
                      "hessian_trace": traces, "sensitivity": sensitivity, "layer_order": ranking}
        group_size = next(iter(layers.values())).group_size
        return record_shifts(model, Selection(self.name, levels, group_size, selected, provenance))
