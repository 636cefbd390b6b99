"""`flexiq export` (a stored study's trial -> a .flexiq file) and `flexiq serve-bench`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..config import SearchConfig, config_from_dict
from ..devices import HOST
from ..errors import FlexiqError
from .controller import create_controller
from .runtime import FlexiqRuntime
from .serving import arrivals, peak_classifier, rate_function, serve


def export_study(repo, study: str, out: str, trial: int | None = None, point: int | None = None) -> dict:
    """Export one trial of a stored study: `trial` by number, or the `point`-th Pareto point (fastest
    first) of the study's first backend, or by default the trial with the best mean top-1.

    The store keeps selections, not weights: the INT8 model is rebuilt from the study's checkpoint
    with the trial's quant config and calibration set (deterministic), then the stored selection is
    applied. Finetuned trials cannot be rebuilt that way and are refused.
    """
    from ..api import quantize
    from ..evaluation import prepare_model
    from ..selection import Selection

    found = repo.get_study(int(study) if str(study).isdigit() else study)
    if found is None:
        raise FlexiqError(f"no study {study!r} in this database")
    config: SearchConfig = config_from_dict(found["config"])
    results = repo.study_results(found["id"])
    trials = {row["trial"]: row for row in results["evaluations"]}
    if not trials:
        raise FlexiqError(f"study {found['name']!r} has no finished trial to export")
    if trial is not None:
        if trial not in trials:
            raise FlexiqError(f"study {found['name']!r} has no trial {trial} (trials: {sorted(trials)})")
        chosen = trial
    elif point is not None:  # the index `flexiq studies pareto` prints on the study's first backend
        backend = config.backends[0]
        front = [p for p in repo.pareto(found["id"]) if p["backend"] == backend]
        if not 0 <= point < len(front):
            raise FlexiqError(f"point {point} is outside the {backend} front (0..{len(front) - 1})")
        chosen = front[point]["trial"]
    else:
        def mean_top1(number: int) -> float:
            rows = [r["top1"] for r in results["evaluations"] if r["trial"] == number and r["ratio"] > 0]
            return sum(rows) / len(rows)

        chosen = max(trials, key=mean_top1)
    row = trials[chosen]
    trial_config = dataclasses.replace(config, **row["params"])
    if trial_config.finetune_epochs:
        raise FlexiqError(f"trial {chosen} was finetuned; finetuned weights are not stored, so it cannot be exported")
    prepared = prepare_model(config.model, config.dataset, config.checkpoint, weights=config.weights,
                             device=str(HOST))  # the serving runtime is the CPU integer path
    flexiq = quantize(prepared.model, prepared.bundle, trial_config.quant_config(), samples=trial_config.calibration,
                      model_kwargs=prepared.model_kwargs)
    flexiq.apply(Selection.from_json(repo.selection_for_trial(row["trial_id"])))
    selection = flexiq.selection
    accuracy = {r["ratio"]: r["top1"] for r in results["evaluations"]
                if r["trial"] == chosen and r["dataset"] == results["dataset"]}
    provenance = {"study": found["name"], "study_id": found["id"], "trial": chosen, "params": row["params"],
                  "dataset": results["dataset"], "samples": row["samples"]}
    path = flexiq.export(out, accuracy=accuracy, provenance=provenance)
    return {"path": str(path), "study": found["name"], "trial": chosen, "levels": list(selection.levels),
            "accuracy": accuracy}


def serve_bench(model_path: str, *, trace: str, slo_ms: float, duration_s: float, backend: str = "npu-sim",
                load: float = 0.4, max_batch: int = 8, max_requests: int = 200_000, seed: int = 0) -> dict:
    """Adaptive controller vs static INT8 vs static all-4-bit on one trace, side by side.

    `load`: the trace's base rate as a share of INT8 capacity (the steps trace peaks at 3x that).
    Each run's summary also splits p50 by load: `peak_p50_ms` / `offpeak_p50_ms` over the requests that
    arrived while the trace's rate was above / not above the midpoint of its min and max rate (plus
    `peak_slo_violation_rate`, `peak_requests`); all None for a flat trace (`poisson`).
    backend `npu-sim`: service times from the simulator's per-ratio latencies (a discrete-event
    simulation, provenance simulated); `cpu`: every batch really runs on this machine (measured).
    """
    runtime = FlexiqRuntime.load(model_path)
    levels = runtime.levels
    example = torch.randn(max_batch, *runtime.exported.manifest["input_shape"][1:],
                          generator=torch.Generator().manual_seed(seed))
    if backend == "npu-sim":
        from ..latency import create_backend

        measured = create_backend("npu-sim").measure(runtime.model, example[:1], levels, runtime.exported.manifest["model"])
        per_ratio_ms = {row["ratio"]: row["latency_us"] / 1000 for row in measured["ratios"]}
        service_ms = lambda ratio, batch: per_ratio_ms[ratio] * batch  # noqa: E731
        source = {"backend": "npu-sim", "provenance": "simulated", "hardware": measured["hardware"]}
        int8_ms = per_ratio_ms[0.0]
    elif backend == "cpu":
        import time

        def service_ms(ratio: float, batch: int) -> float:
            runtime.set_ratio(ratio)
            started = time.perf_counter()
            runtime(example[:batch])
            return (time.perf_counter() - started) * 1000

        from ..latency.cpu import cpu_description

        source = {"backend": "cpu", "provenance": "measured", "hardware": cpu_description()}
        int8_ms = min(service_ms(0.0, 1) for _ in range(5))
    else:
        raise FlexiqError(f"serve-bench backend must be npu-sim or cpu, got {backend!r}")
    base_rps = load * 1000.0 / int8_ms
    rate = rate_function(trace, base_rps, duration_s)
    times = arrivals(rate, duration_s, max_requests, seed)
    policies = {"adaptive": create_controller("threshold", levels=levels, slo_ms=slo_ms),
                "int8": create_controller("static", levels=levels, slo_ms=slo_ms, ratio=0.0),
                "int4": create_controller("static", levels=levels, slo_ms=slo_ms, ratio=levels[-1])}
    accuracy = runtime.exported.accuracy
    runs = {name: serve(times, controller, service_ms, max_batch, name) for name, controller in policies.items()}
    peak = peak_classifier(rate, duration_s)  # requests arriving above the trace's mid rate; None if flat
    return {"slo_ms": slo_ms, "runs": [run.summary(slo_ms, lambda r: accuracy.get(r, float("nan")), peak)
                                       for run in runs.values()],
            "switch_us": runtime.switch_microseconds(), "latency_source": source, "trace": trace,
            "base_rps": base_rps, "requests": len(times),
            "timeline": {name: run.timeline[:: max(1, len(run.timeline) // 2000)] for name, run in runs.items()}}


def plot_timeline(result: dict, out: str | Path) -> Path:
    """The ratio each policy ran at over time, as a standalone HTML (Plotly) page."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for name, points in result["timeline"].items():
        figure.add_trace(go.Scatter(x=[t for t, _ in points], y=[r * 100 for _, r in points], mode="lines",
                                    name=name, line={"shape": "hv"}))
    source = result["latency_source"]
    figure.update_layout(title=f"4-bit ratio over time ({result['trace']} trace, latency: {source['backend']}, "
                               f"{source['provenance']})", xaxis_title="time (s)", yaxis_title="4-bit share (%)")
    out = Path(out)
    figure.write_html(out, include_plotlyjs="cdn")
    return out
