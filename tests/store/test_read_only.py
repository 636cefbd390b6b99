"""The store opened read-only (what the dashboard does), on SQLite and PostgreSQL: the database refuses
writes, an empty database, an older schema and an unreachable server are one clear line each, and
the whole-study read methods give the dashboard what it draws."""

from __future__ import annotations

import json
import zlib
from datetime import datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from flexiq_search.errors import FlexiqError
from flexiq_search.selection.base import Selection
from flexiq_search.store import Repository, StoreEmpty, StoreOutdated
from flexiq_search.store.engine import alembic_config, create_store_engine
from flexiq_search.store.repository import EVOLUTION_CHECKPOINT, evolution_progress

from .test_repository import latency, make_selection, new_trial
from .conftest import stamp_future_revision


def test_a_read_only_store_reads_and_refuses_every_write(db_url):
    with Repository.open(db_url) as writer:
        study_id = writer.create_study("s", "resnet20", "digits", {"generations": 2}, ["cpu"])
        with Repository.open(db_url, read_only=True) as reader:
            assert [s["name"] for s in reader.list_studies()] == ["s"]
            writer.set_study_status(study_id, "finished")  # a writer goes on while the reader is open
            assert reader.get_study(study_id)["status"] == "finished"
            with pytest.raises(FlexiqError, match="open read-only"):
                reader.create_study("t", "resnet20", "digits", {}, ["cpu"])
    engine = create_store_engine(db_url, read_only=True)  # the database itself refuses, not only the API
    try:
        with pytest.raises(DBAPIError, match="read-only|readonly"), engine.begin() as connection:
            connection.execute(text("UPDATE flexiq_studies SET status = 'failed'"))
    finally:
        engine.dispose()
    with Repository.open(db_url, read_only=True) as reader:
        assert reader.get_study(study_id)["status"] == "finished"


def test_an_empty_database_is_named_empty(db_url):
    if db_url.startswith("sqlite"):
        open(db_url.removeprefix("sqlite:///"), "wb").close()
    engine = create_store_engine(db_url)
    with engine.begin() as connection:  # another application's table is no flexiq store
        connection.execute(text("CREATE TABLE studies (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(StoreEmpty, match=r"is empty \(no flexiq store\)"):
        Repository.open(db_url, read_only=True)


def test_a_missing_sqlite_file_is_not_created(tmp_path):
    path = tmp_path / "nowhere" / "flexiq.db"
    with pytest.raises(StoreEmpty, match="does not exist"):
        Repository.open(f"sqlite:///{path}", read_only=True)
    assert not path.parent.exists()


def test_an_older_schema_is_named_and_left_for_a_writer_to_migrate(db_url):
    Repository.open(db_url).close()
    engine = create_store_engine(db_url)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0001")
    engine.dispose()
    with pytest.raises(StoreOutdated) as error:
        Repository.open(db_url, read_only=True)
    assert "has an older schema (revision 0001); run any flexiq search" in str(error.value)
    Repository.open(db_url).close()  # any writer migrates
    Repository.open(db_url, read_only=True).close()


def test_a_schema_from_a_newer_flexiq_is_refused_read_only(db_url):
    stamp_future_revision(db_url)
    with pytest.raises(FlexiqError, match="'9999', unknown to this flexiq"):
        Repository.open(db_url, read_only=True)


def test_an_unreachable_server_read_only_hides_the_password():
    with pytest.raises(FlexiqError) as error:
        Repository.open("postgresql://flexiq:hunter2-secret@127.0.0.1:1/flexiq", read_only=True)
    message = str(error.value)
    assert "flexiq:***@127.0.0.1:1" in message and "hunter2" not in message and "\n" not in message


def evolution_state(done_generations: list[int], level: dict | None) -> dict:
    """The shape of `selection.evolution`'s checkpointed state (what `trial_progress` decodes)."""
    return {"levels": [0.25, 0.5, 1.0], "seed": 0, "scored": 40, "rng": [3, [], None],
            "done": [{"added": "", "fitness": 0.1 * (i + 1), "generations": g} for i, g in enumerate(done_generations)],
            "level_state": level}


def test_evolution_progress_between_and_within_levels():
    within = evolution_progress(evolution_state([3], {"ratio": 0.5, "generation": 2, "best": 0.07, "stalled": 0,
                                                      "islands": []}))
    assert within == {"levels": [0.25, 0.5, 1.0], "levels_done": 1, "level_ratio": 0.5, "generation": 2,
                      "generations_done": 5, "best_fitness": 0.07, "scored": 40}
    between = evolution_progress(evolution_state([3, 4], None))
    assert (between["level_ratio"], between["generation"], between["generations_done"], between["best_fitness"]) == \
        (1.0, 0, 7, pytest.approx(0.2))
    assert set(evolution_progress(None).values()) == {None}


def test_whole_study_reads(repo, db_url):
    finished = new_trial(repo)
    study_id = repo.get_study("study")["id"]
    layers = [{"name": "conv", "latency_us": 9.0, "cycles": 9000}]
    repo.add_result(finished, make_selection("evolution"),
                    [{"ratio": r, "top1": 90.0 - 10 * r, "fitness": r / 10, "dataset": "digits", "samples": 360}
                     for r in (0.0, 0.5)] + [{"ratio": 0.5, "top1": 99.0, "dataset": "other", "samples": 10}],
                    [{**latency(r, 10.0 - r, "npu-sim", "simulated"), "layers": layers} for r in (0.0, 0.5)]
                    + [latency(0.75, 5.0)])
    repo.finish_trial(finished, "complete")
    running = repo.create_trial(study_id, 1, {"group_size": 4})
    waiting = repo.create_trial(study_id, 2, {})
    state = evolution_state([], {"ratio": 0.25, "generation": 1, "best": 0.5, "stalled": 0, "islands": []})
    repo.save_checkpoint(running, EVOLUTION_CHECKPOINT, zlib.compress(json.dumps(state).encode()))
    repo.save_checkpoint(running, "something-else", b"not json")
    repo.start_job("local-1", study_id)
    repo.update_pareto(study_id)

    with Repository.open(db_url, read_only=True) as reader:
        [summary] = reader.study_summaries()
        assert (summary["name"], summary["status"], summary["trials"], summary["backends"]) == \
            ("study", "running", 3, ["cpu"])
        assert summary["best_top1"] == {0.0: 90.0, 0.5: 85.0}, "best per ratio, on the study's dataset only"
        assert datetime.fromisoformat(summary["heartbeat"]).utcoffset() == timedelta(0)

        results = reader.study_results(study_id)
        assert results["dataset"] == "digits"
        assert [(e["trial"], e["ratio"], e["dataset"]) for e in results["evaluations"]] == \
            [(0, 0.0, "digits"), (0, 0.5, "digits"), (0, 0.5, "other")]
        first = results["evaluations"][0]
        assert (first["method"], first["params"], first["fitness"], first["trial_id"]) == \
            ("evolution", {"population": 12}, 0.0, finished)
        points = {(p["backend"], p["ratio"]): p for p in results["latencies"]}
        assert points["npu-sim", 0.5]["top1"] == 85.0 and points["npu-sim", 0.5]["layers"] == layers
        assert points["npu-sim", 0.5]["provenance"] == "simulated" and points["npu-sim", 0.5]["hardware"] == \
            {"cores": 2}
        assert points["cpu", 0.75]["top1"] is None and points["cpu", 0.75]["layers"] is None

        progress = reader.trial_progress(study_id)
        assert [(p["number"], p["params"]) for p in progress] == [(1, {"group_size": 4}), (2, {})]
        assert (progress[0]["level_ratio"], progress[0]["generation"], progress[0]["best_fitness"]) == (0.25, 1, 0.5)
        assert progress[0]["updated"] is not None
        assert progress[1]["generation"] is None and progress[1]["updated"] is None, "no generation done yet"

        assert Selection.from_json(reader.selection_for_trial(finished)).method == "evolution"
        with pytest.raises(FlexiqError, match="no stored selection"):
            reader.selection_for_trial(running)
        assert reader.study_config(study_id) == {"generations": 2}
        with pytest.raises(FlexiqError, match="no study"):
            reader.study_config(study_id + 1)
        with pytest.raises(FlexiqError, match="no study"):
            reader.study_results(study_id + 1)
