"""Schedules: the recurring (nightly) searches in the store, when each runs next and how its last run
went, and the recent runs with a link to the study each one made."""

from __future__ import annotations

import streamlit as st

from dashboard import data

url = data.database_url()
st.title("Schedules")
table = data.schedules(url)
if table.empty:
    st.info('No schedules yet in this database. Add one with `flexiq schedule add NAME --cron "0 2 * * *" '
            "--config C.yaml --db URL` (and `--timezone` to read the cron in another zone than UTC); "
            "`flexiq scheduler` then starts its runs.")
    st.stop()
in_flight = data.schedule_runs(url)["status"].isin(data.IN_FLIGHT).any()


@st.fragment(run_every=data.REFRESH_SECONDS if in_flight else None)
def schedules_and_runs() -> None:
    """Both tables, redrawn on their own while a run is claimed or submitted."""
    shown = data.schedules(url)
    st.dataframe(shown, hide_index=True,
                 column_order=["name", "cron", "timezone", "enabled", "next_run", "last_slot", "last_status"],
                 column_config={
                     "timezone": "time zone",
                     "next_run": st.column_config.DatetimeColumn("next run (UTC)", format="YYYY-MM-DD HH:mm",
                                                                 help="empty for a disabled schedule"),
                     "last_slot": st.column_config.DatetimeColumn("last run's slot (UTC)", format="YYYY-MM-DD HH:mm"),
                     "last_status": "last run's status",
                 })
    for _, bad in shown[shown["problem"].notna()].iterrows():
        st.warning(f"Schedule {bad['name']!r} is skipped by the scheduler: {bad['problem']}")

    st.subheader("Recent runs")
    runs = data.schedule_runs(url)
    if runs.empty:
        st.info("No runs yet: `flexiq scheduler` starts a schedule's run at its next slot.")
        return
    st.dataframe(runs, hide_index=True,
                 column_order=["open", "slot", "schedule", "status", "job_status", "study", "submitter", "message"],
                 column_config={
                     "open": st.column_config.LinkColumn("", display_text="open", width="small",
                                                         help="the run's study, once its search has created it"),
                     "slot": st.column_config.DatetimeColumn("slot (UTC)", format="YYYY-MM-DD HH:mm"),
                     "job_status": st.column_config.TextColumn(
                         "job status", help="what the search job last reported (empty until it starts)"),
                 })
    st.caption(f"The newest {data.RUNS_SHOWN} runs at most, newest slot first. A run is *claimed* by a scheduler, "
               "*submitted* as a job, then *succeeded* or *failed*; each run's study is named "
               "`<schedule>-<slot, UTC>`.")


schedules_and_runs()
