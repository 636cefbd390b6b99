"""Where a running search is: per running trial, the evolution's level, generation, best fitness and
candidates scored, from the checkpoint the search saves after every generation. Pages call this
inside a fragment that reruns every `data.REFRESH_SECONDS`."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data

FITNESS_HELP = "logit distance to the INT8 model on the calibration images: lower is better"


def human_duration(seconds: float) -> str:
    seconds = max(seconds, 0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def ago(moment: str | pd.Timestamp) -> str:
    return human_duration((pd.Timestamp.now(tz="UTC") - pd.Timestamp(moment)).total_seconds())


def show_running_trials(url: str, study_id: int) -> None:
    """A progress bar and the evolution's numbers for each running trial of the study."""
    entries = data.progress(url, study_id)
    if not entries:
        st.caption("No trial is running at this moment (the search is between trials, or its driver stopped).")
        return
    config = data.study_config(url, study_id)
    for entry in entries:
        name = f"Trial {entry['number']} ({data.config_label(entry['params'])})"
        if entry["levels"] is None:
            st.progress(0.0, text=f"{name}: preparing, no generation finished yet")
            continue
        generations = int(data.trial_config(config, entry["params"]).get("generations", 0))
        searched_levels = [level for level in entry["levels"] if level < 1]
        planned = max(generations * len(searched_levels), 1)  # an upper bound: a level stops early when stalled
        level = entry["level_ratio"]
        where = f"level {level:.0%}" if level is not None else "all levels searched"
        st.progress(min(entry["generations_done"] / planned, 1.0),
                    text=f"{name}: {where}, {entry['generations_done']} of at most {planned} generations")
        columns = st.columns(4)
        columns[0].metric("level (4-bit ratio)", where.removeprefix("level "),
                          help=f"{entry['levels_done']} of {len(entry['levels'])} levels done")
        columns[1].metric("generation in this level", f"{entry['generation']} / {generations}")
        best = entry["best_fitness"]
        columns[2].metric("best fitness", f"{best:.4g}" if best is not None else "-", help=FITNESS_HELP)
        columns[3].metric("candidates scored", f"{entry['scored']:,}")
        st.caption(f"Checkpoint saved {ago(entry['updated'])} ago.")
