"""Every dashboard page under Streamlit's AppTest, on a store filled by a real search: what each page
shows, and the clear messages for an empty, outdated, unreachable or study-less database."""

from __future__ import annotations

import base64
import json
import sys

import numpy as np
import pytest

from dashboard import data
from flexiq_search.store import Repository

from .conftest import RUNNING, SEARCHED

LEVELS = ["25%", "50%", "75%", "100%"]


def figures(app) -> dict[str, dict]:
    """The page's Plotly figures by their title text."""
    specs = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    return {spec["layout"]["title"]["text"]: spec for spec in specs}


def trace(figure: dict, name: str) -> dict:
    return next(t for t in figure["data"] if t.get("name") == name)


def values(field) -> list:
    """A figure's data field as a list (Plotly 6 ships numeric arrays as base64 typed arrays)."""
    if isinstance(field, dict) and "bdata" in field:
        array = np.frombuffer(base64.b64decode(field["bdata"]), dtype=field["dtype"])
        shape = field.get("shape")
        return (array.reshape([int(n) for n in str(shape).split(",")]) if shape else array).tolist()
    return list(field)


def texts(elements) -> str:
    return " ".join(str(element.value) for element in elements)


def test_studies_page_lists_status_timing_and_best_accuracy_per_ratio(search_db, open_page):
    app = open_page(search_db)
    assert not app.exception
    table = app.dataframe[0].value.set_index("name")
    assert table.loc[SEARCHED, "status"] == "finished" and table.loc[RUNNING, "status"] == "running"
    assert (table.loc[SEARCHED, "model"], table.loc[SEARCHED, "dataset"], table.loc[SEARCHED, "trials"]) == \
        ("resnet20", "digits", 2)
    best = [f"top-1 @ {ratio} 4-bit" for ratio in ["0%"] + LEVELS]
    assert table.loc[SEARCHED, best].notna().all()
    assert 60 < table.loc[SEARCHED, "top-1 @ 0% 4-bit"] <= 100, "INT8 top-1 of a trained model, in percent"
    assert table.loc[SEARCHED, "duration_s"] > 0 and table.loc[SEARCHED, "open"].startswith("study?study=")
    assert f"Running: {RUNNING}" in texts(app.subheader)
    assert "generation in this level" in [metric.label for metric in app.metric]

    app.text_input[0].set_value("running").run()
    assert list(app.dataframe[0].value["name"]) == [RUNNING]
    app.text_input[0].set_value("").run()
    sort = next(box for box in app.selectbox if box.label == "Sort by")
    sort.set_value("name").run()
    app.toggle[0].set_value(False).run()
    assert list(app.dataframe[0].value["name"]) == sorted([SEARCHED, RUNNING])


def test_study_page_shows_fronts_ratios_channel_map_layers_trials_and_downloads(search_db, study_ids, open_page):
    app = open_page(search_db, "study", study=str(study_ids[SEARCHED]))
    assert not app.exception and not app.error
    assert app.title[0].value == SEARCHED
    charts = figures(app)

    pareto = charts["Accuracy vs latency, per latency backend"]
    for label in ("npu-sim (simulated)", "cpu (measured)"):
        front = trace(pareto, f"{label}: Pareto front")
        everything = trace(pareto, f"{label}: all results")
        assert len(values(front["x"])) >= 1 and len(values(everything["x"])) == 2 * 5, "two trials x five ratios"
        assert "config" in front["hovertemplate"] and "ratio" in front["hovertemplate"]
        assert {point[0] for point in front["customdata"]} == {label}
        assert {point[2] for point in front["customdata"]} == {"evolution"}
    assert pareto["layout"]["yaxis"]["title"]["text"] == "top-1 accuracy (%)"
    assert pareto["layout"]["xaxis"]["title"]["text"] == "latency (µs)"

    by_ratio = charts["Accuracy and latency against the 4-bit ratio"]
    assert len([t for t in by_ratio["data"] if t.get("showlegend", True)]) == 2, "one legend entry per trial"

    [channel_title] = [title for title in charts if title.startswith("Channel map")]
    [heatmap] = charts[channel_title]["data"]
    shares = values(heatmap["z"])
    assert heatmap["type"] == "heatmap" and values(heatmap["x"]) == LEVELS and len(values(heatmap["y"])) >= 15
    assert all(row[-1] == 1.0 for row in shares), "at 100% every group of every layer is 4-bit"
    assert all(0 <= share <= 1 for row in shares for share in row)
    assert all(row == sorted(row) for row in shares), "nested levels: a layer's 4-bit share only grows"

    bars = charts[next(title for title in charts if title.startswith("Per-layer latency"))]["data"]
    assert [bar["name"] for bar in bars] == ["INT8 on npu-sim (simulated)", "25% 4-bit on npu-sim (simulated)"]
    assert len(values(bars[0]["y"])) >= 15
    app.selectbox(key="layer-ratio").set_value(0.75).run()
    bars = figures(app)[next(t for t in charts if t.startswith("Per-layer latency"))]["data"]
    assert bars[1]["name"] == "75% 4-bit on npu-sim (simulated)"

    trials = app.dataframe[0].value
    assert list(trials["trial"]) == [0, 1] and list(trials["Optuna trial"]) == [0, 1]
    assert set(trials["status"]) == {"complete"} and trials["mean top-1 (%)"].notna().all()
    assert [button.label for button in app.get("download_button")] == [
        "Download the selection (JSON)", "Download the search config (JSON)"]


def test_a_running_study_shows_its_progress_and_its_finished_trials(search_db, study_ids, open_page):
    app = open_page(search_db, "study", study=str(study_ids[RUNNING]))
    assert not app.exception and not app.error
    assert "Progress" in texts(app.subheader)
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["generation in this level"] == "2 / 2" and metrics["level (4-bit ratio)"] == "75%"
    assert float(metrics["best fitness"]) > 0 and int(metrics["candidates scored"].replace(",", "")) > 0
    trials = app.dataframe[0].value
    assert list(trials["status"]) == ["complete", "running"]
    assert trace(figures(app)["Accuracy vs latency, per latency backend"], "npu-sim (simulated): Pareto front")


def test_a_study_before_its_first_generation_shows_its_trials_and_that_it_is_preparing(store_without_studies,
                                                                                      open_page):
    with Repository.open(store_without_studies) as repo:
        study_id = repo.create_study("just-started", "resnet20", "digits", {"generations": 3}, ["npu-sim"])
        repo.create_trial(study_id, 0, {})
    app = open_page(store_without_studies, "study", study=str(study_id))
    assert not app.exception and not app.error
    assert "preparing, no generation finished yet" in app.get("progress")[0].proto.text
    assert "No results yet" in texts(app.info) and not app.get("plotly_chart")
    assert list(app.dataframe[0].value["status"]) == ["running"]


def test_compare_page_draws_both_studies_fronts(search_db, open_page):
    app = open_page(search_db, "compare")
    assert not app.exception
    assert len(app.multiselect[0].value) == 2
    [figure] = figures(app).values()
    legend = {t["name"] for t in figure["data"] if t.get("showlegend", True)}
    assert legend == {SEARCHED, RUNNING}
    assert {t["xaxis"] for t in figure["data"]} == {"x", "x2"}, "one panel per backend"
    assert set(app.dataframe[0].value["study"]) == {SEARCHED, RUNNING}


def test_an_unknown_study_is_named_not_found(search_db, open_page):
    app = open_page(search_db, "study", study="999")
    assert not app.exception
    assert "Study '999' not found" in texts(app.error)
    assert not app.get("plotly_chart")


@pytest.mark.parametrize("page", ["studies", "study", "compare"])
def test_a_store_without_studies_says_so(store_without_studies, open_page, page):
    app = open_page(store_without_studies, page)
    assert not app.exception and "No studies yet" in texts(app.info)


def test_an_empty_database_says_so(empty_db, open_page):
    app = open_page(empty_db)
    assert not app.exception and "is empty (no flexiq store)" in texts(app.info)


def test_a_missing_database_file_says_so(tmp_path, open_page):
    app = open_page(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not app.exception and "does not exist" in texts(app.info)
    assert not (tmp_path / "missing.db").exists()


def test_an_older_schema_says_so(older_schema_db, open_page):
    app = open_page(older_schema_db)
    assert not app.exception
    assert "has an older schema (revision 0001); run any flexiq search" in texts(app.warning)


def test_an_unreachable_server_is_named_without_its_password(open_page):
    app = open_page("postgresql://flexiq:hunter2-secret@127.0.0.1:1/flexiq")
    assert not app.exception
    message = texts(app.error)
    assert "cannot open database postgresql+psycopg://flexiq:***@127.0.0.1:1/flexiq" in message
    assert "hunter2" not in message and "hunter2" not in str(app.main)


def test_the_database_url_comes_from_the_command_line_then_the_environment(monkeypatch):
    monkeypatch.setenv("FLEXIQ_DB", "sqlite:///from-env.db")
    monkeypatch.setattr(sys, "argv", ["app.py", "--db", "sqlite:///from-argv.db"])
    assert data.database_url() == "sqlite:///from-argv.db"
    monkeypatch.setattr(sys, "argv", ["app.py"])
    assert data.database_url() == "sqlite:///from-env.db"


def test_a_trials_config_is_the_study_config_with_its_drawn_values():
    envelope = {"_type": "SearchConfig", "_version": 1, "_data": {"model": "resnet20", "group_size": 8}}
    assert data.trial_config(envelope, {"group_size": 4}) == {"model": "resnet20", "group_size": 4}
    assert data.trial_config({"generations": 2}, {}) == {"generations": 2}


def test_channel_shares_are_boundaries_over_groups():
    selection = {"levels": [0.5, 1.0], "layers": {"a": {"order": [3, 1, 0, 2], "boundaries": [1, 4]},
                                                   "b": {"order": [0, 1], "boundaries": [2, 2]}}}
    shares = data.channel_shares(json.dumps(selection))
    assert list(shares.index) == ["a", "b"] and list(shares.columns) == [0.5, 1.0]
    assert shares.to_numpy().tolist() == [[0.25, 1.0], [1.0, 1.0]]
