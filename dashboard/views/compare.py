"""Compare: the Pareto fronts of several studies on one chart, one panel per latency backend."""

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

names = dict(zip(summaries["id"], summaries["name"]))
chosen = st.multiselect("Studies", list(names), default=list(names)[-DEFAULT_STUDIES:],
                        format_func=lambda i: f"{names[i]} (#{i})")
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
st.dataframe(fronts[["study", "label", "ratio", "method", "config", "top1", "latency_us", "speedup_vs_int8"]],
             hide_index=True, column_config={
                 "label": "backend",
                 "ratio": st.column_config.NumberColumn("4-bit ratio", format="percent"),
                 "top1": st.column_config.NumberColumn("top-1 (%)", format="%.2f"),
                 "latency_us": st.column_config.NumberColumn("latency (µs)", format="%.1f"),
                 "speedup_vs_int8": st.column_config.NumberColumn("speed-up vs INT8", format="%.2fx"),
             })
