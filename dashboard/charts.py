"""Plotly figures of the dashboard, built from `data`'s DataFrames.

One look for all of them: a white template, axis titles with units, ratios as percentages, one
colour per latency backend (labelled with its provenance, "npu-sim (simulated)") or per study,
and hover texts that name the ratio, the selection method and the trial's config. Backends are
side by side with their own latency axes: a simulated NPU and a measured CPU differ by orders of
magnitude, so one axis would flatten one of them.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

TEMPLATE = "plotly_white"
PALETTE = qualitative.D3
INT8_GREY = "#9e9e9e"
TOP1_AXIS = "top-1 accuracy (%)"
LATENCY_AXIS = "latency (µs)"
RATIO_AXIS = "4-bit share of MACs"
POINT_HOVER = ("<b>%{customdata[0]}</b><br>ratio %{customdata[1]:.0%} · %{customdata[2]}<br>"
               "config: %{customdata[3]}<br>top-1 %{y:.2f}% · %{x:.1f} µs (%{customdata[4]:.2f}x INT8)"
               "<extra></extra>")
POINT_FIELDS = ["label", "ratio", "method", "config", "speedup_vs_int8"]


def colours(keys) -> dict:
    """A stable colour per key (backend label, study, trial), in order of first appearance."""
    return {key: PALETTE[i % len(PALETTE)] for i, key in enumerate(dict.fromkeys(keys))}


def tidy(figure: go.Figure, *, height: int, title: str, top: int = 80, bottom: int = 110) -> go.Figure:
    """The common layout: the title at the top left, the legend at the bottom below the axis titles
    (both placed in the figure's own pixels, so neither collides with subplot titles or ticks)."""
    figure.update_layout(
        template=TEMPLATE, height=height, margin=dict(l=70, r=20, t=top, b=bottom),
        title=dict(text=title, x=0, xanchor="left", y=1, yref="container", yanchor="top", pad=dict(t=14, l=10),
                   font=dict(size=17)),
        legend=dict(orientation="h", x=0, xanchor="left", y=0, yref="container", yanchor="bottom"),
        hoverlabel=dict(align="left"))
    return figure


def side_by_side(panels: list[str], **options) -> go.Figure:
    return make_subplots(rows=1, cols=max(len(panels), 1), subplot_titles=panels or None,
                         horizontal_spacing=0.08, **options)


def pareto(latencies: pd.DataFrame, front: pd.DataFrame) -> go.Figure:
    """Top-1 vs latency per backend: every stored (trial, ratio) point, and the Pareto front through them."""
    labels = list(dict.fromkeys(latencies["label"]))
    colour = colours(labels)
    figure = side_by_side(labels, shared_yaxes=True)
    for column, label in enumerate(labels, start=1):
        points = latencies[(latencies["label"] == label) & latencies["top1"].notna()]
        best = front[front["label"] == label].sort_values("latency_us")
        figure.add_trace(go.Scatter(
            x=points["latency_us"], y=points["top1"], mode="markers", name=f"{label}: all results",
            marker=dict(color=colour[label], size=9, opacity=0.35, line=dict(width=0)),
            customdata=points[POINT_FIELDS], hovertemplate=POINT_HOVER), row=1, col=column)
        figure.add_trace(go.Scatter(
            x=best["latency_us"], y=best["top1"], mode="lines+markers", name=f"{label}: Pareto front",
            line=dict(color=colour[label], width=2, shape="hv"),
            marker=dict(color=colour[label], size=11, symbol="diamond", line=dict(color="white", width=1)),
            customdata=best[POINT_FIELDS], hovertemplate=POINT_HOVER), row=1, col=column)
        figure.update_xaxes(title_text=LATENCY_AXIS, row=1, col=column)
    figure.update_yaxes(title_text=TOP1_AXIS, row=1, col=1)
    return tidy(figure, height=480, title="Accuracy vs latency, per latency backend")


def accuracy_latency_by_ratio(evaluations: pd.DataFrame, latencies: pd.DataFrame) -> go.Figure:
    """Top-1 and, per backend, latency against the 4-bit share; one line per trial, one colour per trial."""
    labels = list(dict.fromkeys(latencies["label"]))
    figure = side_by_side([TOP1_AXIS] + [f"{LATENCY_AXIS} on {label}" for label in labels])
    trial_colour = colours(evaluations["trial"])
    for trial, rows in evaluations.groupby("trial", sort=True):
        config = rows["config"].iloc[0]
        name = f"trial {trial} ({config})"
        figure.add_trace(go.Scatter(
            x=rows["ratio"], y=rows["top1"], mode="lines+markers", name=name, legendgroup=name,
            line=dict(color=trial_colour[trial]), customdata=rows[["method", "config"]],
            hovertemplate=f"{name}<br>ratio %{{x:.0%}} · %{{customdata[0]}}<br>top-1 %{{y:.2f}}%<extra></extra>"),
            row=1, col=1)
        for column, label in enumerate(labels, start=2):
            timed = latencies[(latencies["trial"] == trial) & (latencies["label"] == label)]
            figure.add_trace(go.Scatter(
                x=timed["ratio"], y=timed["latency_us"], mode="lines+markers", name=name, legendgroup=name,
                showlegend=False, line=dict(color=trial_colour[trial]), customdata=timed[["speedup_vs_int8"]],
                hovertemplate=f"{name}<br>{label}<br>ratio %{{x:.0%}}: %{{y:.1f}} µs "
                              "(%{customdata[0]:.2f}x INT8)<extra></extra>"), row=1, col=column)
    figure.update_xaxes(title_text=RATIO_AXIS, tickformat=".0%")
    figure.update_yaxes(title_text=TOP1_AXIS, row=1, col=1)
    for column in range(2, len(labels) + 2):
        figure.update_yaxes(title_text=LATENCY_AXIS, row=1, col=column)
    return tidy(figure, height=460, title="Accuracy and latency against the 4-bit ratio")


def channel_map(shares: pd.DataFrame, groups: pd.Series, title: str) -> go.Figure:
    """Heatmap: layers (top to bottom in model order) x nested levels, the share of 4-bit channel groups."""
    levels = [f"{level:.0%}" for level in shares.columns]
    counts = [[f"{round(share * groups[name])} of {groups[name]}" for share in row]
              for name, row in zip(shares.index, shares.to_numpy())]
    figure = go.Figure(go.Heatmap(
        z=shares.to_numpy(), x=levels, y=list(shares.index), zmin=0, zmax=1, colorscale="Blues",
        text=[[f"{share:.0%}" for share in row] for row in shares.to_numpy()], texttemplate="%{text}",
        customdata=counts, colorbar=dict(title="4-bit<br>groups", tickformat=".0%"),
        hovertemplate="%{y}<br>level %{x}: %{customdata} groups in 4-bit (%{z:.0%})<extra></extra>"))
    figure.update_xaxes(title_text="nested level (4-bit share of the model's MACs)", side="top")
    figure.update_yaxes(title_text="layer", autorange="reversed")
    return tidy(figure, height=170 + 24 * len(shares), title=title, top=130, bottom=20)


def layer_latency(layers: list[dict], int8_layers: list[dict], label: str, ratio: float) -> go.Figure:
    """Horizontal bars per layer: latency at `ratio` next to the same layer in INT8."""
    names = [layer["name"] for layer in layers]
    int8 = {layer["name"]: layer["latency_us"] for layer in int8_layers}
    figure = go.Figure([
        go.Bar(y=names, x=[int8.get(name) for name in names], orientation="h", name=f"INT8 on {label}",
               marker_color=INT8_GREY, hovertemplate="%{y}<br>INT8: %{x:.2f} µs<extra></extra>"),
        go.Bar(y=names, x=[layer["latency_us"] for layer in layers], orientation="h",
               name=f"{ratio:.0%} 4-bit on {label}", marker_color=PALETTE[0],
               hovertemplate=f"%{{y}}<br>{ratio:.0%} 4-bit: %{{x:.2f}} µs<extra></extra>"),
    ])
    figure.update_layout(barmode="group", bargap=0.25)
    figure.update_xaxes(title_text=LATENCY_AXIS)
    figure.update_yaxes(title_text="layer", autorange="reversed")
    return tidy(figure, height=180 + 26 * len(names), title="Per-layer latency", top=60, bottom=100)


def compare_fronts(fronts: pd.DataFrame) -> go.Figure:
    """Several studies' Pareto fronts, one colour per study, one panel per backend."""
    labels = list(dict.fromkeys(fronts["label"]))
    study_colour = colours(fronts["study"])
    figure = side_by_side(labels, shared_yaxes=True)
    for study, rows in fronts.groupby("study", sort=False):
        for column, label in enumerate(labels, start=1):
            best = rows[rows["label"] == label].sort_values("latency_us")
            figure.add_trace(go.Scatter(
                x=best["latency_us"], y=best["top1"], mode="lines+markers", name=study, legendgroup=study,
                showlegend=column == 1, line=dict(color=study_colour[study], width=2, shape="hv"),
                marker=dict(color=study_colour[study], size=9),
                customdata=best[POINT_FIELDS],
                hovertemplate=f"<b>{study}</b><br>" + POINT_HOVER.removeprefix("<b>%{customdata[0]}</b><br>")),
                row=1, col=column)
            figure.update_xaxes(title_text=LATENCY_AXIS, row=1, col=column)
    figure.update_yaxes(title_text=TOP1_AXIS, row=1, col=1)
    return tidy(figure, height=500, title="Pareto fronts of the chosen studies")
