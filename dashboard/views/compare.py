"""Compare: the Pareto fronts of several studies on one chart, one panel per latency backend.

Only studies on one dataset are offered together: a top-1 is only comparable on the same images.
Models may differ (that is what comparing fronts is for), and a running study shows its front so far.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data

DEFAULT_STUDIES = 4  # preselected: the newest few

url = data.database_url()
st.title("Compare studies")
summaries = data.studies(url)
if summaries.empty:
    st.info("No studies yet in this database. Start one with `flexiq search --model ... --db URL`.")
    st.stop()

datasets = list(dict.fromkeys(summaries["dataset"][::-1]))  # the newest study's dataset first
dataset = st.selectbox("Dataset", datasets, help="studies are compared on one dataset: their top-1 is measured there")
offered = summaries[summaries["dataset"] == dataset]
names = dict(zip(offered["id"], offered["name"]))
describe = {row.id: f"{row.name} (#{row.id}, {row.model}, {row.status})" for row in offered.itertuples()}
chosen = st.multiselect("Studies", list(names), default=list(names)[-DEFAULT_STUDIES:], format_func=describe.get)
st.caption(f"Offered: every study on **{dataset}** ({len(offered)}), since a top-1 compares only on one dataset; any "
           f"model, any status (a running study's front is the one so far); the newest {DEFAULT_STUDIES} preselected. "
           + (f"Shown: {', '.join(describe[i] for i in chosen)}." if chosen else ""))
if not chosen:
    st.info("Choose one or more studies to compare.")
    st.stop()

fronts = pd.concat([data.pareto_points(url, study_id).assign(study=names[study_id]) for study_id in chosen],
                   ignore_index=True)
if fronts.empty:
    st.info("None of the chosen studies has results yet.")
    st.stop()
missing = [names[i] for i in chosen if names[i] not in set(fronts["study"])]
if missing:
    st.caption(f"No results yet: {', '.join(missing)}.")
st.plotly_chart(charts.compare_fronts(fronts), key="compare", theme=None)
units = charts.backend_units(fronts)
fronts["latency"] = [units[label].text(us) for label, us in zip(fronts["label"], fronts["latency_us"])]
st.dataframe(fronts[["study", "label", "point", "trial", "ratio", "method", "config", "top1", "latency",
                     "speedup_vs_int8"]],
             hide_index=True, column_config={
                 "label": "backend",
                 "point": st.column_config.NumberColumn(
                     "point", help="the point's place on its backend's front, as `flexiq studies pareto` lists it"),
                 "ratio": st.column_config.NumberColumn("ratio (4-bit share)", format="percent"),
                 "top1": st.column_config.NumberColumn("top-1 (%)", format="%.2f"),
                 "latency": st.column_config.TextColumn(help="in the unit of its backend's panel"),
                 "speedup_vs_int8": st.column_config.NumberColumn("speed-up vs INT8", format="%.2fx"),
             })
