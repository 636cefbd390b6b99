"""Every dashboard page under Streamlit's AppTest, on a store filled by a real search: what each page
shows, and the clear messages for an empty, outdated, unreachable or study-less database."""

from __future__ import annotations

import base64
import json
import sys

import numpy as np
import pytest

from dashboard import charts, data
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


def table_with(app, column: str):
    """The page's table (a DataFrame) that has this column."""
    return next(table.value for table in app.dataframe if column in table.value.columns)


def stored(db_url: str, name: str) -> tuple[dict, list[dict], dict]:
    """A study as the CLI reads it: the study, `Repository.pareto` and `study_results`."""
    with Repository.open(db_url, read_only=True) as repo:
        study = repo.get_study(name)
        return study, repo.pareto(study["id"]), repo.study_results(study["id"])


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
    drawn = figures(app)

    pareto = drawn["Accuracy vs latency, per latency backend"]
    for label in ("npu-sim (simulated)", "cpu (measured)"):
        front = trace(pareto, f"{label}: Pareto front")
        everything = trace(pareto, f"{label}: all results")
        assert len(values(front["x"])) >= 1 and len(values(everything["x"])) == 2 * 5, "two trials x five ratios"
        for hover in (front["hovertemplate"], everything["hovertemplate"]):
            assert all(word in hover for word in ("config", "ratio", "trial %{customdata[5]}"))
        assert "Pareto point %{customdata[6]}" in front["hovertemplate"]
        assert {point[0] for point in front["customdata"]} == {label}
        assert {point[2] for point in front["customdata"]} == {"evolution"}
        assert {point[5] for point in everything["customdata"]} == {0, 1}, "every result names its trial"
    assert pareto["layout"]["yaxis"]["title"]["text"] == "top-1 accuracy (%)"
    assert pareto["layout"]["xaxis"]["title"]["text"] == "latency (µs)", "the simulated NPU: a few µs"
    _, _, results = stored(search_db, SEARCHED)
    cpu_unit = charts.latency_unit([row["latency_us"] for row in results["latencies"] if row["backend"] == "cpu"])
    assert pareto["layout"]["xaxis2"]["title"]["text"] == f"latency ({cpu_unit.symbol})"
    assert pareto["layout"]["annotations"][0]["text"] == "npu-sim (simulated)", "the panel keeps its provenance"

    by_ratio = drawn["Accuracy and latency against the 4-bit ratio"]
    assert len([t for t in by_ratio["data"] if t.get("showlegend", True)]) == 2, "one legend entry per trial"

    [channel_title] = [title for title in drawn if title.startswith("Channel map")]
    heatmap, kept = drawn[channel_title]["data"]
    shares = [row for row in values(heatmap["z"]) if row[0] is not None]
    assert heatmap["type"] == "heatmap" and values(heatmap["x"]) == LEVELS and len(shares) >= 15
    assert all(row[-1] == 1.0 for row in shares), "at 100% every group of every eligible layer is 4-bit"
    assert all(0 <= share <= 1 for row in shares for share in row)
    assert all(row == sorted(row) for row in shares), "nested levels: a layer's 4-bit share only grows"
    assert kept["name"] == "kept INT8" and values(kept["y"]) == values(heatmap["y"])

    bars = drawn[next(title for title in drawn if title.startswith("Per-layer latency"))]["data"]
    assert [bar["name"] for bar in bars] == ["INT8 on npu-sim (simulated)", "25% 4-bit on npu-sim (simulated)"]
    assert len(values(bars[0]["y"])) >= 15
    app.selectbox(key="layer-ratio").set_value(0.75).run()
    bars = figures(app)[next(t for t in drawn if t.startswith("Per-layer latency"))]["data"]
    assert bars[1]["name"] == "75% 4-bit on npu-sim (simulated)"

    trials = table_with(app, "Optuna trial")
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
    trials = table_with(app, "Optuna trial")
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
    caption = texts(app.caption)
    assert "every study on **digits** (2), since a top-1 compares only on one dataset" in caption
    assert f"Shown: {SEARCHED} (#" in caption and f"{RUNNING} (#" in caption and "running)" in caption


def test_compare_page_offers_the_studies_of_one_dataset_and_says_so(store_without_studies, open_page):
    with Repository.open(store_without_studies) as repo:
        repo.create_study("digits-a", "resnet20", "digits", {}, ["npu-sim"])
        repo.create_study("cifar-b", "resnet20", "cifar10", {}, ["npu-sim"])
    app = open_page(store_without_studies, "compare")
    assert not app.exception
    assert app.selectbox[0].value == "cifar10", "the newest study's dataset"
    assert app.multiselect[0].options == ["cifar-b (#2, resnet20, running)"]
    assert "every study on **cifar10** (1)" in texts(app.caption) and "Shown: cifar-b (#2" in texts(app.caption)
    app.selectbox[0].set_value("digits").run()
    assert app.multiselect[0].options == ["digits-a (#1, resnet20, running)"]
    assert "Shown: digits-a (#1" in texts(app.caption) and "cifar-b" not in texts(app.caption)


def test_the_front_table_numbers_points_as_studies_pareto_and_export_do(search_db, study_ids, open_page):
    """`point` is `Repository.pareto`'s (what `flexiq studies pareto` prints), and the table names
    the backend `flexiq export --point` takes it on: the study's first."""
    study, points, _ = stored(search_db, SEARCHED)
    app = open_page(search_db, "study", study=str(study["id"]))
    assert not app.exception
    table = table_with(app, "point")
    first = study["backends"][0]
    first_label = data.backend_label(first, "simulated")
    on_first = table[table["label"] == first_label]
    assert [(row.point, row.trial, row.ratio) for row in on_first.itertuples()] == \
        [(p["point"], p["trial"], p["ratio"]) for p in points if p["backend"] == first]
    assert sorted((row.label, row.point, row.trial, row.ratio, row.top1) for row in table.itertuples()) == \
        sorted((data.backend_label(p["backend"], p["provenance"]), p["point"], p["trial"], p["ratio"], p["top1"])
               for p in points)
    assert list(table["label"])[:len(on_first)] == [first_label] * len(on_first), "the export backend comes first"
    assert f"`flexiq export --study {study['id']} --point N` exports point N of the first backend, " \
           f"**{first_label}**" in texts(app.caption)
    assert all(text.endswith(" µs") for text in on_first["latency"]), "the simulated NPU's few µs, in µs"

    front = trace(figures(app)["Accuracy vs latency, per latency backend"], f"{first_label}: Pareto front")
    assert sorted((point[5], point[6]) for point in front["customdata"]) == \
        sorted((p["trial"], p["point"]) for p in points if p["backend"] == first)


def test_the_channel_map_shows_the_layers_kept_int8_in_model_order(search_db, study_ids, open_page):
    _, _, results = stored(search_db, SEARCHED)
    app = open_page(search_db, "study", study=str(study_ids[SEARCHED]))
    with Repository.open(search_db, read_only=True) as repo:
        trial_id = repo.list_trials(study_ids[SEARCHED])[0]["id"]
        eligible = set(json.loads(repo.selection_for_trial(trial_id))["layers"])
    model_order = [layer["name"] for layer in next(r["layers"] for r in results["latencies"] if r["trial"] == 0)]
    kept_int8 = [name for name in model_order if name not in eligible]
    assert kept_int8 == ["conv1", "fc"], "ResNet-20 keeps its first conv and its classifier INT8"

    figure = next(spec for title, spec in figures(app).items() if title.startswith("Channel map"))
    shares, kept = figure["data"]
    assert values(kept["y"]) == model_order, "every layer, in model order"
    kept_rows = {name: row for name, row in zip(values(kept["y"]), kept["text"]) if row[0]}
    assert kept_rows == {name: ["kept INT8"] * len(LEVELS) for name in kept_int8}
    assert all(row == [None] * len(LEVELS) for name, row in zip(values(shares["y"]), values(shares["z"]))
               if name in kept_int8), "no 4-bit share drawn for a layer that never goes 4-bit"
    assert "Grey, kept INT8: 2 layer(s)" in texts(app.caption)


def test_the_trials_table_shows_the_mean_latencies_studies_show_prints(search_db, study_ids, open_page):
    app = open_page(search_db, "study", study=str(study_ids[SEARCHED]))
    trials = table_with(app, "Optuna trial").set_index("trial")
    with Repository.open(search_db, read_only=True) as repo:
        summaries = repo.trial_summaries(study_ids[SEARCHED])
    for backend in ("npu-sim", "cpu"):
        [column] = [c for c in trials.columns if c.startswith(f"mean latency on {backend} (")]
        unit = next(u for u in charts.LATENCY_UNITS if column.endswith(f"({u.symbol})"))
        for summary in summaries:
            assert trials.loc[summary["number"], column] * unit.size_us == \
                pytest.approx(summary["mean_latency_us"][backend])
            assert trials.loc[summary["number"], "mean top-1 (%)"] == pytest.approx(summary["mean_top1"])


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


@pytest.mark.parametrize("latencies_us, symbol", [
    ([7.3, 12.0], "µs"), ([850.0, 2500.0], "ms"), ([12079.2], "ms"), ([999.9], "µs"), ([1.5e6, 20.0], "s"), ([], "µs")])
def test_the_latency_unit_reads_the_largest_value_as_one_or_more(latencies_us, symbol):
    assert charts.latency_unit(latencies_us).symbol == symbol


def test_a_latency_reads_in_its_unit():
    unit = charts.latency_unit([1200.0, 2500.0])
    assert (unit.axis_title, unit.text(2500.0), unit.scale(2500.0)) == ("latency (ms)", "2.500 ms", 2.5)
    assert charts.latency_unit([7.3]).text(7.3) == "7.3 µs"


def test_layers_missing_from_the_selection_are_kept_int8_rows_in_model_order():
    selection = {"levels": [0.5, 1.0], "layers": {"b": {"order": [0, 1], "boundaries": [1, 2]}}}
    breakdowns = [None, [{"name": "a"}, {"name": "b"}, {"name": "fc"}], [{"name": "a"}]]
    shares = data.channel_shares(json.dumps(selection), data.layer_names(breakdowns))
    assert list(shares.index) == ["a", "b", "fc"]
    assert shares.loc["b"].tolist() == [0.5, 1.0] and shares.loc[["a", "fc"]].isna().all(axis=None)


def test_channel_shares_are_boundaries_over_groups():
    selection = {"levels": [0.5, 1.0], "layers": {"a": {"order": [3, 1, 0, 2], "boundaries": [1, 4]},
                                                   "b": {"order": [0, 1], "boundaries": [2, 2]}}}
    shares = data.channel_shares(json.dumps(selection))
    assert list(shares.index) == ["a", "b"] and list(shares.columns) == [0.5, 1.0]
    assert shares.to_numpy().tolist() == [[0.25, 1.0], [1.0, 1.0]]
