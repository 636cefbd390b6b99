"""Plotly figures of the dashboard, built from `data`'s DataFrames.

One look for all of them: a white template, axis titles with units, ratios as percentages, one
colour per latency backend (labelled with its provenance, "npu-sim (simulated)") or per study,
and hover texts that name the trial, the ratio, the selection method and the trial's config.
Backends are side by side with their own latency axes: a simulated NPU and a measured CPU differ by
orders of magnitude, so one axis would flatten one of them. Each latency axis (and table column)
reads in the unit `latency_unit` picks for its values: µs, ms or s.
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

TEMPLATE = "plotly_white"
PALETTE = qualitative.D3
INT8_GREY = "#9e9e9e"
KEPT_INT8 = "kept INT8"
TOP1_AXIS = "top-1 accuracy (%)"
RATIO_AXIS = "4-bit share of MACs"
POINT_FIELDS = ["label", "ratio", "method", "config", "speedup_vs_int8", "trial"]
FRONT_FIELDS = POINT_FIELDS + ["point"]  # `point`: the index `flexiq studies pareto` prints


class LatencyUnit(NamedTuple):
    """A unit latencies read well in: its symbol, its size in µs and the decimals worth showing."""

    symbol: str
    size_us: float
    decimals: int

    @property
    def axis_title(self) -> str:
        return f"latency ({self.symbol})"

    @property
    def number_format(self) -> str:
        """For a Streamlit NumberColumn."""
        return f"%.{self.decimals}f"

    def hover(self, field: str) -> str:
        """A Plotly hover placeholder showing `field` (already scaled) with the unit."""
        return f"%{{{field}:.{self.decimals}f}} {self.symbol}"

    def scale(self, latencies_us):
        return latencies_us / self.size_us

    def text(self, latency_us: float) -> str:
        """One latency with its unit, for a table that mixes backends ("7.3 µs", "12.079 ms")."""
        return f"{latency_us / self.size_us:.{self.decimals}f} {self.symbol}"


LATENCY_UNITS = (LatencyUnit("s", 1e6, 3), LatencyUnit("ms", 1e3, 3), LatencyUnit("µs", 1.0, 1))


def latency_unit(latencies_us) -> LatencyUnit:
    """The largest of s, ms and µs in which the largest of these latencies (in µs) is at least 1, so
    2500 µs reads 2.5 ms; µs when there are none. One unit per axis or table column."""
    largest = pd.Series(latencies_us, dtype=float).abs().max()
    return next((unit for unit in LATENCY_UNITS if largest >= unit.size_us), LATENCY_UNITS[-1])


def backend_units(results: pd.DataFrame) -> dict[str, LatencyUnit]:
    """One unit per backend label, from all of its results: its chart panels and table rows agree."""
    return {label: latency_unit(rows["latency_us"]) for label, rows in results.groupby("label", sort=False)}


def point_hover(unit: LatencyUnit, *, front: bool, study: str | None = None) -> str:
    """Hover text of a result point (customdata: `FRONT_FIELDS` on a front, else `POINT_FIELDS`): its
    backend (or study), trial, ratio, method and config, top-1 and latency; on a front, its `point`."""
    heading = f"<b>{study}</b> · %{{customdata[0]}}" if study else "<b>%{customdata[0]}</b>"
    where = " · Pareto point %{customdata[6]}" if front else ""
    return (f"{heading}<br>trial %{{customdata[5]}}{where}<br>ratio %{{customdata[1]:.0%}} 4-bit · "
            f"%{{customdata[2]}}<br>config: %{{customdata[3]}}<br>top-1 %{{y:.2f}}% · {unit.hover('x')} "
            "(%{customdata[4]:.2f}x INT8)<extra></extra>")


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
    colour, units = colours(labels), backend_units(latencies)
    figure = side_by_side(labels, shared_yaxes=True)
    for column, label in enumerate(labels, start=1):
        points = latencies[(latencies["label"] == label) & latencies["top1"].notna()]
        best = front[front["label"] == label].sort_values("latency_us")
        unit = units[label]
        figure.add_trace(go.Scatter(
            x=unit.scale(points["latency_us"]), y=points["top1"], mode="markers", name=f"{label}: all results",
            marker=dict(color=colour[label], size=9, opacity=0.35, line=dict(width=0)),
            customdata=points[POINT_FIELDS], hovertemplate=point_hover(unit, front=False)), row=1, col=column)
        figure.add_trace(go.Scatter(
            x=unit.scale(best["latency_us"]), y=best["top1"], mode="lines+markers", name=f"{label}: Pareto front",
            line=dict(color=colour[label], width=2, shape="hv"),
            marker=dict(color=colour[label], size=11, symbol="diamond", line=dict(color="white", width=1)),
            customdata=best[FRONT_FIELDS], hovertemplate=point_hover(unit, front=True)), row=1, col=column)
        figure.update_xaxes(title_text=unit.axis_title, row=1, col=column)
    figure.update_yaxes(title_text=TOP1_AXIS, row=1, col=1)
    return tidy(figure, height=480, title="Accuracy vs latency, per latency backend")


def accuracy_latency_by_ratio(evaluations: pd.DataFrame, latencies: pd.DataFrame) -> go.Figure:
    """Top-1 and, per backend, latency against the 4-bit share; one line per trial, one colour per trial."""
    labels = list(dict.fromkeys(latencies["label"]))
    units = backend_units(latencies)
    figure = side_by_side([TOP1_AXIS] + [f"{units[label].axis_title} on {label}" for label in labels])
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
            unit = units[label]
            figure.add_trace(go.Scatter(
                x=timed["ratio"], y=unit.scale(timed["latency_us"]), mode="lines+markers", name=name,
                legendgroup=name, showlegend=False, line=dict(color=trial_colour[trial]),
                customdata=timed[["speedup_vs_int8"]],
                hovertemplate=f"{name}<br>{label}<br>ratio %{{x:.0%}}: {unit.hover('y')} "
                              "(%{customdata[0]:.2f}x INT8)<extra></extra>"), row=1, col=column)
    figure.update_xaxes(title_text=RATIO_AXIS, tickformat=".0%")
    figure.update_yaxes(title_text=TOP1_AXIS, row=1, col=1)
    for column, label in enumerate(labels, start=2):
        figure.update_yaxes(title_text=units[label].axis_title, row=1, col=column)
    return tidy(figure, height=460, title="Accuracy and latency against the 4-bit ratio")


def channel_map(shares: pd.DataFrame, groups: pd.Series, title: str) -> go.Figure:
    """Heatmap: layers (top to bottom in model order) x nested levels, the share of 4-bit channel groups.

    Layers kept INT8 (rows of NaN in `shares`: not eligible for 4-bit) are grey cells saying so, in
    their place: a map without them would look like the whole model."""
    levels = [f"{level:.0%}" for level in shares.columns]
    kept = shares.isna().all(axis=1)
    eligible_z = [[None if k else share for share in row] for k, row in zip(kept, shares.to_numpy())]
    counts = [[f"{round(share * groups[name])} of {groups[name]}" if not k else "" for share in row]
              for name, k, row in zip(shares.index, kept, shares.to_numpy())]
    figure = go.Figure([
        go.Heatmap(
            z=eligible_z, x=levels, y=list(shares.index), zmin=0, zmax=1, colorscale="Blues", name="4-bit share",
            text=[["" if k else f"{share:.0%}" for share in row] for k, row in zip(kept, shares.to_numpy())],
            texttemplate="%{text}", customdata=counts, hoverongaps=False,
            colorbar=dict(title="4-bit<br>groups", tickformat=".0%"),
            hovertemplate="%{y}<br>level %{x}: %{customdata} groups in 4-bit (%{z:.0%})<extra></extra>"),
        go.Heatmap(
            z=[[0 if k else None for _ in levels] for k in kept], x=levels, y=list(shares.index), zmin=0, zmax=1,
            colorscale=[[0, INT8_GREY], [1, INT8_GREY]], showscale=False, name=KEPT_INT8,
            text=[[KEPT_INT8 if k else "" for _ in levels] for k in kept], texttemplate="%{text}",
            textfont=dict(color="white"), hoverongaps=False,
            hovertemplate=f"%{{y}}<br>{KEPT_INT8} at every level (not eligible for 4-bit)<extra></extra>"),
    ])
    figure.update_xaxes(title_text="nested level (4-bit share of the model's MACs)", side="top")
    figure.update_yaxes(title_text="layer", autorange="reversed")
    return tidy(figure, height=170 + 24 * len(shares), title=title, top=130, bottom=20)


def layer_latency(layers: list[dict], int8_layers: list[dict], label: str, ratio: float) -> go.Figure:
    """Horizontal bars per layer: latency at `ratio` next to the same layer in INT8."""
    names = [layer["name"] for layer in layers]
    int8 = {layer["name"]: layer["latency_us"] for layer in int8_layers}
    unit = latency_unit([layer["latency_us"] for layer in [*layers, *int8_layers]])
    figure = go.Figure([
        go.Bar(y=names, x=[unit.scale(int8[name]) if name in int8 else None for name in names], orientation="h",
               name=f"INT8 on {label}", marker_color=INT8_GREY,
               hovertemplate=f"%{{y}}<br>INT8: {unit.hover('x')}<extra></extra>"),
        go.Bar(y=names, x=[unit.scale(layer["latency_us"]) for layer in layers], orientation="h",
               name=f"{ratio:.0%} 4-bit on {label}", marker_color=PALETTE[0],
               hovertemplate=f"%{{y}}<br>{ratio:.0%} 4-bit: {unit.hover('x')}<extra></extra>"),
    ])
    figure.update_layout(barmode="group", bargap=0.25)
    figure.update_xaxes(title_text=unit.axis_title)
    figure.update_yaxes(title_text="layer", autorange="reversed")
    return tidy(figure, height=180 + 26 * len(names), title="Per-layer latency", top=60, bottom=100)


def compare_fronts(fronts: pd.DataFrame) -> go.Figure:
    """Several studies' Pareto fronts, one colour per study, one panel per backend."""
    labels = list(dict.fromkeys(fronts["label"]))
    study_colour, units = colours(fronts["study"]), backend_units(fronts)
    figure = side_by_side(labels, shared_yaxes=True)
    for study, rows in fronts.groupby("study", sort=False):
        for column, label in enumerate(labels, start=1):
            best = rows[rows["label"] == label].sort_values("latency_us")
            figure.add_trace(go.Scatter(
                x=units[label].scale(best["latency_us"]), y=best["top1"], mode="lines+markers", name=study,
                legendgroup=study, showlegend=column == 1, line=dict(color=study_colour[study], width=2, shape="hv"),
                marker=dict(color=study_colour[study], size=9), customdata=best[FRONT_FIELDS],
                hovertemplate=point_hover(units[label], front=True, study=study)), row=1, col=column)
    for column, label in enumerate(labels, start=1):
        figure.update_xaxes(title_text=units[label].axis_title, row=1, col=column)
    figure.update_yaxes(title_text=TOP1_AXIS, row=1, col=1)
    return tidy(figure, height=500, title="Pareto fronts of the chosen studies")
