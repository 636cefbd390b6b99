"""Studies: every search in the store with its status, timing and best accuracy at each 4-bit ratio;
filters, a sort order, links to each study's page and, while searches run, their progress."""

from __future__ import annotations

import streamlit as st

from dashboard import data
from dashboard.progress import show_running_trials

SORT_ORDERS = {"started": "started", "name": "name", "status": "status", "duration": "duration_s",
               "trials": "trials"}

url = data.database_url()
st.title("Studies")
table = data.studies(url)
if table.empty:
    st.info("No studies yet in this database. Start one with `flexiq search --model ... --db URL`; "
            "it appears here as soon as it starts.")
    st.stop()

name_part, statuses, models, datasets = st.columns([2, 1, 1, 1])
needle = name_part.text_input("Name contains", placeholder="any name")
status = statuses.multiselect("Status", sorted(table["status"].unique()))
model = models.multiselect("Model", sorted(table["model"].unique()))
dataset = datasets.multiselect("Dataset", sorted(table["dataset"].unique()))
order_by, direction = st.columns([1, 1])
sort_key = order_by.selectbox("Sort by", list(SORT_ORDERS) + [c for c in table.columns if c.startswith("top-1 @")])
descending = direction.toggle("Descending", value=True)


@st.fragment(run_every=data.REFRESH_SECONDS if (table["status"] == "running").any() else None)
def studies_table() -> None:
    """The table (and the running searches' progress), redrawn on its own while a search runs."""
    shown = data.studies(url)
    if needle:
        shown = shown[shown["name"].str.contains(needle, case=False, regex=False)]
    for column, chosen in (("status", status), ("model", model), ("dataset", dataset)):
        if chosen:
            shown = shown[shown[column].isin(chosen)]
    shown = shown.sort_values(SORT_ORDERS.get(sort_key, sort_key), ascending=not descending, na_position="last")
    shown = shown.assign(open=[data.study_link(study_id) for study_id in shown["id"]])
    best_columns = [c for c in shown.columns if c.startswith("top-1 @")]
    st.dataframe(
        shown, hide_index=True,
        column_order=["open", "id", "name", "status", "model", "dataset", "backends", "started", "duration_s",
                      "trials", *best_columns],
        column_config={
            "open": st.column_config.LinkColumn("", display_text="open", width="small"),
            "started": st.column_config.DatetimeColumn("started (UTC)", format="YYYY-MM-DD HH:mm"),
            "duration_s": st.column_config.NumberColumn("duration", format="%.0f s",
                                                        help="to now for a running study"),
            **{c: st.column_config.NumberColumn(c, format="%.2f %%") for c in best_columns},
        })
    st.caption(f"{len(shown)} of {len(table)} studies. *top-1 @ x% 4-bit*: the best top-1 accuracy of any trial "
               "with x% of the MACs in 4-bit, on the study's dataset (0% is the INT8 model).")
    for _, running in shown[shown["status"] == "running"].iterrows():
        st.subheader(f"Running: {running['name']}")
        show_running_trials(url, int(running["id"]))


studies_table()
