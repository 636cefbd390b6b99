"""The serving benchmark: a request-rate trace replayed against one model whose ratio a controller
picks, with batching; latency percentiles, throughput, SLO violations, ratio over time and the
accuracy implied by the ratios used.

The event loop keeps a virtual clock. A batch's service time comes from `service_ms(ratio, batch)`:
either the per-ratio latencies of a simulator backend (a discrete-event simulation, labelled
simulated) or the wall time of really running the runtime on this machine (measured). Arrivals are
Poisson with the trace's rate at that moment, from a seeded generator, and bounded in count and
simulated time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import FlexiqError
from .controller import RatioController

TRACES = ("poisson", "steps")


def rate_function(trace: str, base_rps: float, duration_s: float) -> Callable[[float], float]:
    """Requests per second at time t: constant (`poisson`), low -> 3x -> low -> 3x (`steps`, the
    paper's fluctuating load), or piecewise constant from a CSV of `time_s,rate_rps` (`file:PATH`)."""
    if trace == "poisson":
        return lambda t: base_rps
    if trace == "steps":
        quarter = duration_s / 4
        return lambda t: base_rps * (3.0 if int(t // quarter) % 2 == 1 else 1.0)
    if trace.startswith("file:"):
        path = Path(trace[5:])
        try:
            rows = [tuple(float(x) for x in line.split(",")[:2]) for line in path.read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
        except (OSError, ValueError) as exc:
            raise FlexiqError(f"trace file {path}: {exc}") from None
        if not rows:
            raise FlexiqError(f"trace file {path} has no time_s,rate_rps rows")
        rows.sort()

        def from_file(t: float) -> float:
            rate = rows[0][1]
            for start, value in rows:
                if start > t:
                    break
                rate = value
            return rate

        return from_file
    raise FlexiqError(f"unknown trace {trace!r}; use poisson, steps or file:PATH")


def sampled_rates(rate: Callable[[float], float], duration_s: float) -> list[float]:
    """The trace's rate at 1001 evenly spaced times over [0, duration_s] (its min and max as used here)."""
    return [rate(t * duration_s / 1000) for t in range(1001)]


def peak_classifier(rate: Callable[[float], float], duration_s: float) -> Callable[[float], bool] | None:
    """Whether a request arriving at time t arrived during a load peak: the trace's rate at t is above
    the midpoint between the trace's min and max rate (sampled as in `sampled_rates`). None for a flat
    trace (min == max), which has no peak."""
    rates = sampled_rates(rate, duration_s)
    low, high = min(rates), max(rates)
    if math.isclose(low, high):
        return None
    midpoint = (low + high) / 2
    return lambda t: rate(t) > midpoint


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest-rank p-th percentile of an ascending list; None for an empty list."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def arrivals(rate: Callable[[float], float], duration_s: float, max_requests: int, seed: int) -> list[float]:
    """Arrival times of a Poisson process with a time-varying rate (thinning), in seconds."""
    rng = random.Random(seed)
    peak = max(sampled_rates(rate, duration_s))
    times, t = [], 0.0
    while len(times) < max_requests:
        t += rng.expovariate(peak)
        if t >= duration_s:
            break
        if rng.random() < rate(t) / peak:
            times.append(t)
    return times


@dataclass
class RunResult:
    policy: str
    latencies_ms: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # ratio each request was served at
    arrivals_s: list[float] = field(default_factory=list)  # arrival time (s) of each request, same order
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (time s, ratio) at each batch
    switches: int = 0
    duration_s: float = 0.0

    def summary(self, slo_ms: float, accuracy: Callable[[float], float],
                peak: Callable[[float], bool] | None = None) -> dict:
        """Latency percentiles, throughput, SLO violations, mean accuracy and switches over all requests,
        plus the same p50 split by load: `peak_p50_ms`, `peak_slo_violation_rate` and `peak_requests`
        over the requests whose ARRIVAL time `peak` marks as a load peak (see `peak_classifier`: the
        trace's rate then is above the midpoint of its min and max rate), `offpeak_p50_ms` over the
        others. Without `peak` (a flat trace has no peak) these keys are None, as is a side with no
        requests."""
        ordered = sorted(self.latencies_ms)
        split: dict = {"peak_p50_ms": None, "offpeak_p50_ms": None, "peak_slo_violation_rate": None,
                       "peak_requests": None}
        if peak is not None:
            flags = [peak(arrived) for arrived in self.arrivals_s]
            at_peak = sorted(latency for latency, flag in zip(self.latencies_ms, flags) if flag)
            off_peak = sorted(latency for latency, flag in zip(self.latencies_ms, flags) if not flag)
            split = {"peak_p50_ms": percentile(at_peak, 50), "offpeak_p50_ms": percentile(off_peak, 50),
                     "peak_slo_violation_rate": (sum(latency > slo_ms for latency in at_peak) / len(at_peak)
                                                 if at_peak else None),
                     "peak_requests": len(at_peak)}
        return {"policy": self.policy, "p50_ms": percentile(ordered, 50), "p90_ms": percentile(ordered, 90),
                "p99_ms": percentile(ordered, 99), "throughput_rps": len(ordered) / self.duration_s,
                "slo_violation_rate": sum(latency > slo_ms for latency in ordered) / len(ordered),
                "mean_accuracy": sum(accuracy(r) for r in self.ratios) / len(self.ratios),
                "switches": self.switches, "requests": len(ordered), **split}


def serve(arrival_times: list[float], controller: RatioController, service_ms: Callable[[float, int], float],
          max_batch: int, policy: str, window: int = 32) -> RunResult:
    """Replay arrivals through one server with batching; the controller decides before each batch."""
    if not arrival_times:
        raise FlexiqError("the trace produced no requests (raise the rate or the duration)")
    result = RunResult(policy)
    clock, next_arrival, ratio = 0.0, 0, None
    queue: list[float] = []
    while next_arrival < len(arrival_times) or queue:
        if not queue:  # idle until the next request
            clock = max(clock, arrival_times[next_arrival])
        while next_arrival < len(arrival_times) and arrival_times[next_arrival] <= clock:
            queue.append(arrival_times[next_arrival])
            next_arrival += 1
        recent = result.latencies_ms[-window:]
        since = max(0, next_arrival - window)  # recent arrival rate: the last `window` arrivals
        span = clock - arrival_times[since] if next_arrival > since else 0.0
        arrival_rps = (next_arrival - since) / span if span > 0 else None
        decided = controller.decide(controller.levels[0] if ratio is None else ratio, len(queue),
                                    sorted(recent)[len(recent) // 2] if recent else None, arrival_rps)
        if ratio is not None and decided != ratio:
            result.switches += 1
        ratio = decided
        batch, queue = queue[:max_batch], queue[max_batch:]
        result.timeline.append((clock, ratio))
        batch_ms = service_ms(ratio, len(batch))
        controller.observe(ratio, len(batch), batch_ms)
        clock += batch_ms / 1000.0
        for arrived in batch:
            result.latencies_ms.append((clock - arrived) * 1000.0)
            result.ratios.append(ratio)
            result.arrivals_s.append(arrived)
    result.duration_s = max(clock, arrival_times[-1])
    return result
