"""The FlexiQ runtime: inference on the integer CPU kernels with a ratio switch that only moves
boundaries.

At load, every level's boundary of every layer becomes a plain Python int and every level's weights
are packed once (the integer kernels cache them per set of 4-bit groups), so `set_ratio` is a loop
of integer assignments: nothing is computed, allocated or packed when the load changes.
"""

from __future__ import annotations

import os
import time

import torch

from ..errors import FlexiqError
from ..quant.convert import mixed_layers
from ..quant.integer import integer_execution
from .export import ExportedModel, load_export


class FlexiqRuntime:
    """One exported model, served at a switchable 4-bit ratio (0 = INT8, or one of its levels)."""

    def __init__(self, exported: ExportedModel) -> None:
        self.exported = exported
        self.model = exported.qmodel
        self.levels = [0.0] + exported.levels
        layers = list(mixed_layers(self.model).values())
        # Per level: (the layer's attribute dict, its boundary, its bias-correction offset). Writing
        # the dict entries skips nn.Module.__setattr__'s parameter/buffer/module checks (3x faster;
        # `boundary` is a plain int, the offset a tensor made once here).
        self._plan: dict[float, list[tuple[dict, int, torch.Tensor | None]]] = {}
        for ratio in self.levels:
            boundaries = []
            for layer in layers:
                layer.set_ratio(ratio)
                boundaries.append((layer.__dict__, int(layer.boundary), layer.bias_offset))
            self._plan[ratio] = boundaries
        self._integer = integer_execution(self.model)
        self._integer.__enter__()  # for the runtime's life
        example = torch.zeros(1, *exported.manifest["input_shape"][1:])
        with torch.no_grad():
            for ratio in self.levels:  # pack every level's weights now, not on the first request
                self.set_ratio(ratio)
                self.model(example)
        self.set_ratio(0.0)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FlexiqRuntime":
        return cls(load_export(path))

    def set_ratio(self, ratio: float) -> None:
        plan = self._plan.get(ratio)
        if plan is None:
            raise FlexiqError(f"ratio {ratio} is not a level of this model {self.levels}")
        for attributes, boundary, offset in plan:
            attributes["boundary"] = boundary
            attributes["bias_offset"] = offset
        self.ratio = ratio

    def accuracy(self, ratio: float) -> float | None:
        """Top-1 measured for this level when the model was exported."""
        return self.exported.accuracy.get(ratio)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def switch_microseconds(self, repeats: int = 2000) -> float:
        """Median wall time of one ratio switch (alternating between the extreme levels)."""
        times = []
        for i in range(repeats):
            target = self.levels[-1] if i % 2 == 0 else self.levels[0]
            started = time.perf_counter_ns()
            self.set_ratio(target)
            times.append(time.perf_counter_ns() - started)
        self.set_ratio(0.0)
        times.sort()
        return times[len(times) // 2] / 1000.0
