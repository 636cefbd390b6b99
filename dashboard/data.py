"""The store's contents as pandas DataFrames for the pages.

Every read goes through a read-only `Repository` (one per database URL and server process) and is
cached for a few seconds: the pages of every browser tab share the reads, and a running search's
new rows show up within a refresh period. Labels are made here once, so every chart and table calls
a backend, a ratio and a trial's config the same way.
"""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd
import streamlit as st

from flexiq_search.scheduler import next_run, utcnow
from flexiq_search.store import Repository, default_db_url
from flexiq_search.store.repository import params_label

REFRESH_SECONDS = 5  # how often a page showing a running search reruns
CACHE_SECONDS = 3  # how long a read is reused: below the refresh period, so every refresh reads anew

EVALUATION_COLUMNS = ["trial_id", "trial", "params", "selection_id", "method", "ratio", "top1", "top5", "fitness",
                      "dataset", "samples"]
LATENCY_COLUMNS = ["trial_id", "trial", "params", "selection_id", "method", "backend", "provenance", "hardware",
                   "ratio", "latency_us", "cycles", "speedup_vs_int8", "layers", "top1"]
FRONT_COLUMNS = ["backend", "provenance", "ratio", "method", "top1", "latency_us", "trial", "point"]
POINT_KEY = ["trial", "backend", "ratio"]  # one latency row each (a trial has one selection)
SCHEDULE_COLUMNS = ["id", "name", "cron", "timezone", "enabled", "next_run", "last_slot", "last_status", "problem"]
RUN_COLUMNS = ["id", "slot", "schedule", "status", "job_status", "study", "open", "submitter", "message", "claimed",
               "finished"]
RUNS_SHOWN = 50  # the newest runs on the Schedules page
IN_FLIGHT = ("claimed", "submitted")  # a run's statuses before its search has ended


def database_url() -> str:
    """`--db URL` after `--` on the `streamlit run` line, else $FLEXIQ_DB, else the default SQLite file."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--db")
    known, _ = parser.parse_known_args(sys.argv[1:])
    return known.db or default_db_url()


@st.cache_resource(show_spinner=False)
def repository(url: str) -> Repository:
    """The store at `url`, opened read-only (a failure is not cached: the next run tries again)."""
    return Repository.open(url, read_only=True)


def study_link(study_id: int) -> str:
    """A LinkColumn value that opens the Study page on this study (relative, as the pages are siblings)."""
    return f"study?study={study_id}"


def timestamp(moment: str | None) -> pd.Timestamp:
    return pd.Timestamp(moment) if moment else pd.NaT


def run_state(run: dict) -> str:
    """A run's status, with its job's once a submitted run's job has reported (running, or ended
    before the scheduler settled the run)."""
    if run["status"] == "submitted" and run["job_status"]:
        return f"submitted (job {run['job_status']})"
    return run["status"]


def backend_label(backend: str, provenance: str) -> str:
    return f"{backend} ({provenance})"


def config_label(params: dict) -> str:
    """A trial's searched values, or that it ran the study's own config."""
    return params_label(params) or "study config"


def ratio_label(ratio: float) -> str:
    return "INT8" if ratio == 0 else f"{ratio:.0%} 4-bit"


def best_top1_column(ratio: float) -> str:
    return f"top-1 @ {ratio:.0%} 4-bit"


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def studies(url: str) -> pd.DataFrame:
    """One row per study: status, model, dataset, start, duration (to now while running), trials, the
    jobs' last heartbeat, and the best top-1 (%) of any trial at each ratio."""
    rows = repository(url).study_summaries()
    now = pd.Timestamp.now(tz="UTC")
    records, ratios = [], set()
    for row in rows:
        started = pd.Timestamp(row["created"])
        ended = now if row["status"] == "running" else pd.Timestamp(row["updated"])
        records.append({"id": row["id"], "name": row["name"], "status": row["status"], "model": row["model"],
                        "dataset": row["dataset"], "backends": ", ".join(row["backends"]), "started": started,
                        "duration_s": (ended - started).total_seconds(), "trials": row["trials"],
                        "heartbeat": pd.Timestamp(row["heartbeat"]) if row["heartbeat"] else pd.NaT,
                        **{best_top1_column(ratio): top1 for ratio, top1 in row["best_top1"].items()}})
        ratios.update(row["best_top1"])
    columns = ["id", "name", "status", "model", "dataset", "backends", "started", "duration_s", "trials", "heartbeat"]
    return pd.DataFrame.from_records(records, columns=columns + [best_top1_column(r) for r in sorted(ratios)])


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def schedules(url: str) -> pd.DataFrame:
    """One row per schedule: its cron and time zone, the next run (UTC; NaT when disabled) and its newest
    run's slot and state. `problem`: why the scheduler skips the row (a hand-edited cron or zone, a
    config written by a newer flexiq)."""
    repo, now = repository(url), utcnow()
    records = []
    for schedule in repo.list_schedules():
        last, (upcoming, problem) = schedule["last_run"], next_run(schedule, now)
        records.append({**{key: schedule[key] for key in ("id", "name", "cron", "timezone", "enabled")},
                        "next_run": pd.Timestamp(upcoming) if upcoming else pd.NaT,
                        "last_slot": timestamp(last and last["slot"]),
                        "last_status": run_state(last) if last else None, "problem": problem})
    return pd.DataFrame.from_records(records, columns=SCHEDULE_COLUMNS)


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def schedule_runs(url: str, limit: int = RUNS_SHOWN) -> pd.DataFrame:
    """The newest runs of every schedule, newest slot first, each with a link to its study when the
    study exists (a run that failed before its search started has none)."""
    repo = repository(url)
    names = {schedule["id"]: schedule["name"] for schedule in repo.list_schedules()}
    studies = {study["name"]: study["id"] for study in repo.list_studies()}
    return pd.DataFrame.from_records(
        [{"id": run["id"], "slot": timestamp(run["slot"]), "schedule": names.get(run["schedule_id"]),
          "status": run["status"], "job_status": run["job_status"], "study": run["study_name"],
          "open": study_link(studies[run["study_name"]]) if run["study_name"] in studies else None,
          "submitter": run["submitter"], "message": run["message"], "claimed": timestamp(run["claimed"]),
          "finished": timestamp(run["finished"])}
         for run in repo.schedule_runs(limit=limit)],
        columns=RUN_COLUMNS)


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def study(url: str, study_id: int) -> dict | None:
    return repository(url).get_study(study_id)


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def results(url: str, study_id: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(evaluations on the study's dataset, latencies with the top-1 at their ratio), each row with its
    trial, the trial's config label and its selection method."""
    stored = repository(url).study_results(study_id)
    evaluations = pd.DataFrame(stored["evaluations"], columns=EVALUATION_COLUMNS)
    evaluations = evaluations[evaluations["dataset"] == stored["dataset"]].reset_index(drop=True)
    latencies = in_study_backend_order(pd.DataFrame(stored["latencies"], columns=LATENCY_COLUMNS), url, study_id,
                                       ["trial", "ratio"])
    for frame in (evaluations, latencies):
        frame["config"] = [config_label(params) for params in frame["params"]]
    latencies["label"] = [backend_label(b, p) for b, p in zip(latencies["backend"], latencies["provenance"])]
    return evaluations, latencies


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def pareto_points(url: str, study_id: int) -> pd.DataFrame:
    """The study's stored Pareto front per backend as `Repository.pareto` gives it (each point once,
    with its trial and `point`, the index `flexiq studies pareto` prints and `flexiq export --point`
    takes on the first backend), each point with its trial's config and its speed-up over INT8."""
    front = pd.DataFrame(repository(url).pareto(study_id), columns=FRONT_COLUMNS)
    _, latencies = results(url, study_id)
    extra = latencies.drop(columns=[c for c in latencies.columns if c in FRONT_COLUMNS and c not in POINT_KEY])
    points = front.merge(extra.drop(columns="label"), on=POINT_KEY, how="left")
    points["label"] = [backend_label(b, p) for b, p in zip(points["backend"], points["provenance"])]
    return in_study_backend_order(points, url, study_id, ["point"])


def in_study_backend_order(frame: pd.DataFrame, url: str, study_id: int, then: list[str]) -> pd.DataFrame:
    """Rows sorted by backend in the study's order (its first backend is the one Optuna ranks trials
    on, so it comes first in every chart), then by `then`."""
    rank = {backend: i for i, backend in enumerate(study(url, study_id)["backends"])}
    return (frame.assign(rank=frame["backend"].map(rank)).sort_values(["rank", *then], kind="stable")
            .drop(columns="rank").reset_index(drop=True))


def mean_latency_column(backend: str) -> str:
    return f"mean latency on {backend} (µs)"


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def trials(url: str, study_id: int) -> pd.DataFrame:
    """The study's trials (its Optuna trials) with their objectives as `flexiq studies show` prints
    them (`Repository.trial_summaries`): the mean top-1 over the 4-bit levels and, per backend, the
    mean latency over those levels (Optuna ranks on the first backend's)."""
    repo = repository(url)
    backends = study(url, study_id)["backends"]
    objectives = {summary["number"]: summary for summary in repo.trial_summaries(study_id)}
    latency_columns = [mean_latency_column(backend) for backend in backends]
    records = []
    for t in repo.list_trials(study_id):
        means = objectives.get(t["number"], {"mean_top1": None, "mean_latency_us": {}})
        records.append({"trial": t["number"], "Optuna trial": t["optuna_trial_number"], "status": t["status"],
                        "config": config_label(t["params"]), "mean top-1 (%)": means["mean_top1"],
                        **{column: means["mean_latency_us"].get(backend)
                           for backend, column in zip(backends, latency_columns)},
                        "started": pd.Timestamp(t["created"]),
                        "finished": pd.Timestamp(t["finished"]) if t["finished"] else pd.NaT, "trial_id": t["id"]})
    return pd.DataFrame.from_records(records, columns=["trial", "Optuna trial", "status", "config", "mean top-1 (%)",
                                                       *latency_columns, "started", "finished", "trial_id"])


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def progress(url: str, study_id: int) -> list[dict]:
    return repository(url).trial_progress(study_id)


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def selection_json(url: str, trial_id: int) -> str:
    return repository(url).selection_for_trial(trial_id)


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def study_config(url: str, study_id: int) -> dict:
    return repository(url).study_config(study_id)


def trial_config(config: dict, params: dict) -> dict:
    """The search config a trial ran: the study's (versioned or plain) with the trial's drawn values.
    Plain keys, so the file can be handed back to `flexiq search --config`."""
    plain = config["_data"] if {"_type", "_version", "_data"} <= config.keys() else config
    return {**plain, **params}


def layer_names(breakdowns) -> list[str]:
    """Every quantized layer of the model in model order, from a trial's per-layer latencies (the
    backends time every layer, the ones kept INT8 too; the selection lists only the layers eligible
    for 4-bit). Empty when no breakdown was stored."""
    return list(dict.fromkeys(layer["name"] for breakdown in breakdowns if breakdown for layer in breakdown))


def channel_shares(selection_text: str, all_layers: list[str] = ()) -> pd.DataFrame:
    """Per layer (rows, in model order) and nested level (columns), the share of the layer's channel
    groups that run in 4-bit: the level's boundary over the layer's number of groups. Layers of
    `all_layers` the selection does not hold are kept INT8 (first conv, classifier, depthwise convs,
    as the quant config says): rows of NaN, in their place."""
    selection = json.loads(selection_text)
    levels = [float(level) for level in selection["levels"]]
    shares = pd.DataFrame.from_dict(
        {name: [boundary / len(layer["order"]) for boundary in layer["boundaries"]]
         for name, layer in selection["layers"].items()},
        orient="index", columns=levels)
    return shares.reindex(list(dict.fromkeys([*all_layers, *shares.index])))


def group_counts(selection_text: str) -> pd.Series:
    """Channel groups per layer of a selection (for hover texts: "12 of 16 groups")."""
    return pd.Series({name: len(layer["order"]) for name, layer in json.loads(selection_text)["layers"].items()})
