"""Study: one search's results. Its Pareto fronts per latency backend (a chart, and a table numbered
as `flexiq export --point` takes them), accuracy and latency against the 4-bit ratio, a trial's
channel map (the layers kept INT8 included) and per-layer latency, the Optuna trials, and the
selection and config files to download. While the search runs, the page redraws itself with its
progress."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from dashboard import charts, data
from dashboard.progress import ago, human_duration, show_running_trials

url = data.database_url()
summaries = data.studies(url)
if summaries.empty:
    st.info("No studies yet in this database. Start one with `flexiq search --model ... --db URL`.")
    st.stop()

names = dict(zip(summaries["id"], summaries["name"]))
requested = st.query_params.get("study")
index = len(names) - 1  # the newest study when none is asked for
if requested is not None:
    if requested.isdigit() and int(requested) in names:
        index = list(names).index(int(requested))
    else:
        st.error(f"Study {requested!r} not found in this database: choose one below.")
        index = None
study_id = st.selectbox("Study", list(names), index=index, format_func=lambda i: f"{names[i]} (#{i})",
                        placeholder="choose a study")
if study_id is None:
    st.stop()
st.query_params["study"] = str(study_id)
study = data.study(url, study_id)
if study is None:  # deleted since the list was read
    st.error(f"Study {study_id} not found in this database.")
    st.stop()
summary = summaries[summaries["id"] == study_id].iloc[0]
running = study["status"] == "running"

st.title(study["name"])
st.markdown(f"**{study['status']}** · {study['model']} on {study['dataset']} · latency backends: "
            f"{', '.join(study['backends'])} · started {pd.Timestamp(study['created']):%Y-%m-%d %H:%M} UTC · "
            f"{'running for' if running else 'took'} {human_duration(summary['duration_s'])} · "
            f"{summary['trials']} trial(s)")
if running and not pd.isna(summary["heartbeat"]):
    st.caption(f"The search driver last reported {ago(summary['heartbeat'])} ago (it does after every generation).")


FRONT_TABLE_COLUMNS = ["label", "point", "trial", "ratio", "top1", "latency", "speedup_vs_int8", "method", "config"]


def plot(figure, key: str) -> None:
    st.plotly_chart(figure, key=key, theme=None)


@st.fragment(run_every=data.REFRESH_SECONDS if running else None)
def progress_and_results() -> None:
    """Everything that grows while the search runs; redrawn every few seconds until it ends."""
    if running:
        current = data.study(url, study_id)
        if current is not None and current["status"] != "running":
            st.rerun(scope="app")  # finished: redraw once more without the timer
        st.subheader("Progress")
        show_running_trials(url, study_id)
    evaluations, latencies = data.results(url, study_id)
    if latencies.empty:
        st.info("No results yet: a trial's accuracy and latencies are stored when the trial ends.")
    else:
        front = data.pareto_points(url, study_id)
        plot(charts.pareto(latencies, front), "pareto")
        show_front(front, latencies)
        plot(charts.accuracy_latency_by_ratio(evaluations, latencies), "by-ratio")
        show_trial(evaluations, latencies)
    st.subheader("Trials")
    st.caption("The study's Optuna trials (NSGA-II) and their objectives, as `flexiq studies show` prints them: the "
               "mean top-1 and the mean latency per backend over the 4-bit levels (Optuna ranks on the first "
               f"backend's, {study['backends'][0]}).")
    trials, latency_formats = data.trials(url, study_id).drop(columns="trial_id"), {}
    for backend in study["backends"]:  # each backend's mean latencies in their own unit
        stored = data.mean_latency_column(backend)
        unit = charts.latency_unit(trials[stored])
        shown = f"mean latency on {backend} ({unit.symbol})"
        trials[stored] = unit.scale(trials[stored])
        trials = trials.rename(columns={stored: shown})
        latency_formats[shown] = st.column_config.NumberColumn(format=unit.number_format)
    st.dataframe(trials, hide_index=True, column_config={
        "mean top-1 (%)": st.column_config.NumberColumn(format="%.2f"),
        **latency_formats,
        "started": st.column_config.DatetimeColumn("started (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "finished": st.column_config.DatetimeColumn("finished (UTC)", format="YYYY-MM-DD HH:mm:ss"),
    })


def show_front(front: pd.DataFrame, latencies: pd.DataFrame) -> None:
    """The Pareto points as a table, numbered as `flexiq studies pareto` numbers them, saying which
    backend's numbers `flexiq export --point` takes; latencies in the unit of their backend's panel."""
    first = front.loc[front["backend"] == study["backends"][0], "label"]
    export_backend = first.iloc[0] if not first.empty else study["backends"][0]
    units = charts.backend_units(latencies)
    table = front.assign(latency=[units[label].text(us) for label, us in zip(front["label"], front["latency_us"])])
    st.dataframe(table[FRONT_TABLE_COLUMNS], hide_index=True, column_config={
        "label": "backend",
        "point": st.column_config.NumberColumn(
            "point", help="the point's place on its backend's front, fastest first; `flexiq export --point` "
                          f"takes the first backend's, {export_backend}"),
        "ratio": st.column_config.NumberColumn("ratio (4-bit share)", format="percent"),
        "top1": st.column_config.NumberColumn("top-1 (%)", format="%.2f"),
        "latency": st.column_config.TextColumn(help="in the unit of its backend's panel above"),
        "speedup_vs_int8": st.column_config.NumberColumn("speed-up vs INT8", format="%.2fx"),
    })
    st.caption(f"The Pareto points of each backend, fastest first, as `flexiq studies pareto {study_id}` lists them. "
               f"`flexiq export --study {study_id} --point N` exports point N of the first backend, "
               f"**{export_backend}**; a point of another backend exports with `--trial` and its trial.")


def show_trial(evaluations: pd.DataFrame, latencies: pd.DataFrame) -> None:
    """One trial's channel map, per-layer latency and downloads (the best mean top-1 first)."""
    st.subheader("A trial's selection")
    mean_top1 = evaluations[evaluations["ratio"] > 0].groupby("trial")["top1"].mean().sort_values(ascending=False)
    configs = dict(zip(latencies["trial"], latencies["config"]))
    trial = st.selectbox("Trial", list(mean_top1.index), key="trial",
                         format_func=lambda t: f"trial {t} ({configs.get(t, '')}), mean top-1 {mean_top1[t]:.2f}%")
    if trial is None:
        return
    rows = latencies[latencies["trial"] == trial]
    trial_id = int(rows["trial_id"].iloc[0])
    selection = data.selection_json(url, trial_id)
    channels, per_layer = st.columns(2)
    with channels:
        shares = data.channel_shares(selection, data.layer_names(rows["layers"]))
        plot(charts.channel_map(shares, data.group_counts(selection), f"Channel map of trial {trial}"), "channel-map")
        kept = shares.index[shares.isna().all(axis=1)]
        if len(kept):
            st.caption(f"Grey, {charts.KEPT_INT8}: {len(kept)} layer(s) the quant config keeps INT8 at every level "
                       "(not eligible for 4-bit: e.g. the first conv, the classifier, depthwise convs).")
        else:
            st.caption("No layer is kept INT8 in this model." if rows["layers"].notna().any() else
                       "Only the layers eligible for 4-bit: this result has no per-layer latencies to name the "
                       "layers kept INT8.")
    with per_layer:
        backend_column, ratio_column = st.columns(2)
        label = backend_column.selectbox("Backend", list(dict.fromkeys(rows["label"])), key="layer-backend")
        on_backend = rows[rows["label"] == label]
        ratio = ratio_column.selectbox("Ratio", [r for r in on_backend["ratio"] if r > 0], key="layer-ratio",
                                       format_func=data.ratio_label)
        layers = on_backend.set_index("ratio")["layers"]
        if ratio is None or layers.get(ratio) is None or layers.get(0.0) is None:
            st.info("No per-layer latencies stored for this result (recorded before the store kept them).")
        else:
            plot(charts.layer_latency(layers[ratio], layers[0.0], label, ratio), "layer-latency")
    config = data.trial_config(data.study_config(url, study_id), rows["params"].iloc[0])
    prefix = f"{study['name']}-trial{trial}"
    selection_file, config_file = st.columns(2)
    selection_file.download_button("Download the selection (JSON)", selection, file_name=f"{prefix}-selection.json",
                                   mime="application/json", key="download-selection", on_click="ignore",
                                   help="for `flexiq evaluate --selection` or `flexiq finetune --selection`")
    config_file.download_button("Download the search config (JSON)", json.dumps(config, indent=1),
                                file_name=f"{prefix}-config.json", mime="application/json", key="download-config",
                                on_click="ignore", help="this trial's config, for `flexiq search --config`")


progress_and_results()
