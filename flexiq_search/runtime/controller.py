"""Controllers that pick the 4-bit ratio from the live signal (registry, like models and strategies).

The signal at each decision: the queue length and the recent latency, against the latency SLO.
`threshold` steps one level up (more 4-bit, faster) when latency or queue crosses a high mark and
one level down only after the signal has stayed under a low mark for `calm` decisions in a row:
the gap between the marks and the wait are the hysteresis that keeps it from flapping.
"""

from __future__ import annotations

import abc
from typing import Sequence

from ..registry import Registry

CONTROLLERS = Registry("controller")
register_controller = CONTROLLERS.register


def create_controller(name: str, **kwargs) -> "RatioController":
    return CONTROLLERS.create(name, **kwargs)


class RatioController(abc.ABC):
    """Decides the ratio before each batch. `levels` ascending, starting at 0.0 (INT8)."""

    name: str

    def __init__(self, levels: Sequence[float], slo_ms: float) -> None:
        if not levels or sorted(levels) != list(levels) or levels[0] != 0.0:
            raise ValueError("levels must be ascending and start at 0.0 (INT8)")
        if slo_ms <= 0:
            raise ValueError("the SLO must be positive")
        self.levels, self.slo_ms = list(levels), slo_ms

    @abc.abstractmethod
    def decide(self, current: float, queue_length: int, recent_latency_ms: float | None,
               arrival_rps: float | None = None) -> float:
        ...

    def observe(self, ratio: float, batch: int, service_ms: float) -> None:
        """A finished batch: controllers may learn each level's service time from it."""


@register_controller("static")
class StaticController(RatioController):
    """Always the same ratio (the INT8 and all-4-bit baselines)."""

    def __init__(self, levels: Sequence[float], slo_ms: float, ratio: float = 0.0) -> None:
        super().__init__(levels, slo_ms)
        if ratio not in self.levels:
            raise ValueError(f"ratio {ratio} is not a level {self.levels}")
        self.ratio = ratio

    def decide(self, current, queue_length, recent_latency_ms, arrival_rps=None):
        return self.ratio


@register_controller("threshold")
class ThresholdController(RatioController):
    """Latency and queue thresholds with hysteresis.

    Up when the recent latency passes `high` x SLO or the queue passes `queue_high`: to the lowest
    level whose observed service time per request carries the recent arrival rate at no more than
    `up_utilization` (one level up while a level's cost is still unknown). After any switch it holds
    for `hold` decisions (the new level needs time to drain the queue the old one built), unless the
    SLO itself is being missed. Down one level only after `calm` decisions in a row under `low` x SLO
    with a short queue, and only if the lower level would run at no more than `down_utilization`:
    the gaps between these marks are what keeps it from flapping.
    """

    def __init__(self, levels: Sequence[float], slo_ms: float, high: float = 0.8, low: float = 0.4,
                 queue_high: int = 32, queue_low: int = 1, calm: int = 20, hold: int = 8,
                 up_utilization: float = 0.9, down_utilization: float = 0.8) -> None:
        super().__init__(levels, slo_ms)
        if not 0 < low < high or not 0 < down_utilization < up_utilization <= 1:
            raise ValueError("thresholds need 0 < low < high and 0 < down_utilization < up_utilization <= 1")
        self.high, self.low, self.queue_high, self.queue_low = high, low, queue_high, queue_low
        self.calm, self.hold = calm, hold
        self.up_utilization, self.down_utilization = up_utilization, down_utilization
        self.per_request_ms: dict[float, float] = {}  # learned: service time per request at each level
        self._calm_streak = 0
        self._since_switch = hold

    def observe(self, ratio, batch, service_ms):
        previous = self.per_request_ms.get(ratio)
        sample = service_ms / batch
        self.per_request_ms[ratio] = sample if previous is None else 0.9 * previous + 0.1 * sample

    def _utilization(self, ratio: float, arrival_rps: float | None) -> float | None:
        cost = self.per_request_ms.get(ratio)
        return None if cost is None or arrival_rps is None else arrival_rps * cost / 1000

    def _switch(self, ratio: float) -> float:
        self._since_switch, self._calm_streak = 0, 0
        return ratio

    def decide(self, current, queue_length, recent_latency_ms, arrival_rps=None):
        self._since_switch += 1
        index = self.levels.index(current)
        latency = recent_latency_ms or 0.0
        overloaded = latency > self.high * self.slo_ms or queue_length > self.queue_high
        if overloaded and index < len(self.levels) - 1:
            self._calm_streak = 0
            if self._since_switch <= self.hold and latency <= self.slo_ms:
                return current
            for candidate in self.levels[index + 1:]:
                utilization = self._utilization(candidate, arrival_rps)
                if utilization is None:
                    return self._switch(candidate)  # not measured yet: one level at a time
                if utilization <= self.up_utilization:
                    return self._switch(candidate)
            return self._switch(self.levels[-1])
        if latency < self.low * self.slo_ms and queue_length <= self.queue_low and index > 0:
            self._calm_streak += 1
            utilization = self._utilization(self.levels[index - 1], arrival_rps)
            if self._calm_streak >= self.calm and (utilization is None or utilization <= self.down_utilization):
                return self._switch(self.levels[index - 1])
        elif not overloaded:
            self._calm_streak = 0
        return current
