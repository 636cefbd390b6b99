"""The SQL store on SQLite and PostgreSQL: migrations, round trips, idempotent re-recording after a
resume, all-or-nothing results, Pareto fronts, redacted connection errors, concurrent writers."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import time
import zlib
from datetime import datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from flexiq_search.config import QuantConfig, config_to_dict
from flexiq_search.errors import FlexiqError
from flexiq_search.selection.base import LayerSelection, Selection
from flexiq_search.store import Repository, default_db_url, redact_url
from flexiq_search.store.engine import alembic_config, create_store_engine
from flexiq_search.store.repository import pareto_front
from flexiq_search.store.schema import VERSION_TABLE, Base, Evaluation, LatencyMeasurement, SelectionRow, Trial
from .conftest import stamp_future_revision

TABLES = {"flexiq_studies", "flexiq_trials", "flexiq_selections", "flexiq_evaluations", "flexiq_latency_measurements",
          "flexiq_pareto_points",
          "flexiq_checkpoints", "flexiq_jobs", "flexiq_schedules", "flexiq_schedule_runs"}


def make_selection(method: str = "greedy-error", groups: int = 64) -> Selection:
    layers = {f"layer{i}.conv": LayerSelection(order=list(range(groups))[::-1], boundaries=[groups // 4, groups // 2])
              for i in range(3)}
    return Selection(method, [0.25, 0.5], 8, layers, {"seed": 0}, "shift")


def count(url: str, model: type, *conditions) -> int:
    engine = create_store_engine(url)
    try:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(model).where(*conditions))
    finally:
        engine.dispose()


def new_trial(repo: Repository) -> int:
    """Trial 0 of the study "study" (both created on first use)."""
    study = repo.get_study("study")
    study_id = study["id"] if study else repo.create_study("study", "resnet20", "digits", {"generations": 2}, ["cpu"])
    return repo.create_trial(study_id, 0, {"population": 12})


def latency(ratio: float, latency_us: float, backend: str = "cpu", provenance: str = "measured") -> dict:
    return {"backend": backend, "provenance": provenance, "hardware": {"cores": 2}, "ratio": ratio,
            "latency_us": latency_us, "cycles": None, "speedup_vs_int8": 1.0}


def migration_context(connection) -> MigrationContext:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})


def test_migrations_create_the_schema_and_downgrade_cleanly(db_url):
    Repository.open(db_url).close()
    engine = create_store_engine(db_url)
    try:
        with engine.begin() as connection:
            assert set(inspect(connection).get_table_names()) == TABLES | {"flexiq_alembic_version"}
            assert compare_metadata(migration_context(connection), Base.metadata) == []
            uniques = {c["name"] for c in inspect(connection).get_unique_constraints("flexiq_evaluations")}
            assert uniques == {"uq_flexiq_evaluations_selection_id_ratio_dataset"}
            command.downgrade(alembic_config(connection), "base")
            assert set(inspect(connection).get_table_names()) == {"flexiq_alembic_version"}
            command.upgrade(alembic_config(connection), "head")
            assert set(inspect(connection).get_table_names()) == TABLES | {"flexiq_alembic_version"}
            assert compare_metadata(migration_context(connection), Base.metadata) == []
    finally:
        engine.dispose()


def test_revision_0002_adds_per_layer_latencies_and_downgrades_to_0001(db_url):
    """The column comes and goes with its revision; the table keeps its CHECK constraint both ways."""
    with Repository.open(db_url) as repository:
        selection_id = repository.save_selection(new_trial(repository), make_selection())
    engine = create_store_engine(db_url)
    insert = text("INSERT INTO flexiq_latency_measurements (selection_id, backend, provenance, hardware_json, ratio, "
                  "latency_us, speedup_vs_int8) VALUES (:selection_id, 'cpu', :provenance, '{}', 0.5, 1.0, 1.0)")
    try:
        with engine.begin() as connection:
            columns = {c["name"]: c for c in inspect(connection).get_columns("flexiq_latency_measurements")}
            assert columns["layers_json"]["nullable"]
            command.downgrade(alembic_config(connection), "0001")
            assert "layers_json" not in {c["name"] for c in inspect(connection).get_columns(
                "flexiq_latency_measurements")}
            assert migration_context(connection).get_current_revision() == "0001"
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert, {"selection_id": selection_id, "provenance": "guessed"})
        with engine.begin() as connection:
            connection.execute(insert, {"selection_id": selection_id, "provenance": "measured"})
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "head")
            assert compare_metadata(migration_context(connection), Base.metadata) == []
    finally:
        engine.dispose()


def test_revision_0003_keeps_existing_schedules_and_downgrades_to_0002(db_url):
    """A schedule stored before 0003 comes through with time zone UTC; the runs table and its unique
    (schedule, slot) key come and go with the revision."""
    Repository.open(db_url).close()
    engine = create_store_engine(db_url)
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0002")
            assert "flexiq_schedule_runs" not in inspect(connection).get_table_names()
            connection.execute(text("INSERT INTO flexiq_schedules (name, cron, config_json, enabled, created) "
                                    "VALUES ('old', '0 2 * * *', :config, true, CURRENT_TIMESTAMP)"),
                               {"config": '{"_type": "search-config", "_version": 1, "_data": {}}'})
            command.upgrade(alembic_config(connection), "head")
            assert compare_metadata(migration_context(connection), Base.metadata) == []
            uniques = {c["name"] for c in inspect(connection).get_unique_constraints("flexiq_schedule_runs")}
            assert "uq_flexiq_schedule_runs_schedule_id_slot" in uniques
        with Repository.open(db_url) as repository:
            [old] = repository.list_schedules()
            assert (old["name"], old["timezone"], old["last_run"]) == ("old", "UTC", None)
            slot = datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)
            assert repository.claim_schedule_slot(old["id"], slot, "old-1", "sub-1", "me") is not None
            assert repository.claim_schedule_slot(old["id"], slot, "old-2", "sub-2", "you") is None
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0002")
            assert "flexiq_schedule_runs" not in inspect(connection).get_table_names()
            assert "last_run" in {c["name"] for c in inspect(connection).get_columns("flexiq_schedules")}
    finally:
        engine.dispose()


def test_latencies_keep_their_per_layer_breakdown(repo):
    trial_id = new_trial(repo)
    layers = [{"name": "layer1.conv", "latency_us": 12.5, "cycles": 12500}, {"name": "fc", "latency_us": 0.5,
                                                                              "cycles": 500}]
    selection_id = repo.add_result(trial_id, make_selection(), [{"ratio": 0.5, "top1": 80.0, "dataset": "digits",
                                                                 "samples": 360}],
                                   [{**latency(0.5, 13.0, "npu-sim", "simulated"), "layers": layers}])
    repo.add_latency(selection_id, "cpu", "measured", {}, 0.5, 20.0, None, 1.0)  # a backend without a breakdown
    study_id = repo.get_study("study")["id"]
    by_backend = {row["backend"]: row for row in repo.study_results(study_id)["latencies"]}
    assert by_backend["npu-sim"]["layers"] == layers and by_backend["cpu"]["layers"] is None


def test_schema_from_a_newer_flexiq_is_a_flexiq_error(db_url):
    stamp_future_revision(db_url)
    with pytest.raises(FlexiqError, match="cannot migrate database .*'9999'"):
        Repository.open(db_url)


def test_study_trial_and_selection_round_trip(repo, db_url):
    study_id = repo.create_study("cifar-sweep", "resnet20", "digits", {"generations": 3}, ["cpu", "npu-sim"])
    study = repo.get_study("cifar-sweep")
    assert study == repo.get_study(study_id)
    assert (study["model"], study["dataset"], study["status"]) == ("resnet20", "digits", "running")
    assert study["config"] == {"generations": 3} and study["backends"] == ["cpu", "npu-sim"]
    assert datetime.fromisoformat(study["created"]).utcoffset() == timedelta(0)
    assert repo.get_study("missing") is None and repo.get_study(study_id + 1) is None
    with pytest.raises(FlexiqError, match="already exists"):
        repo.create_study("cifar-sweep", "resnet20", "digits", {}, ["cpu"])

    repo.set_study_status(study_id, "finished")
    assert repo.list_studies() == [{"id": study_id, "name": "cifar-sweep", "status": "finished", "model": "resnet20",
                                    "dataset": "digits", "created": study["created"]}]

    with pytest.raises(IntegrityError):  # foreign keys hold on SQLite too
        repo.create_trial(study_id + 1, 0, {})
    trial_id = repo.create_trial(study_id, 0, {"lr": 0.1}, optuna_trial_number=7)
    repo.finish_trial(trial_id, "complete")
    [trial] = repo.list_trials(study_id)
    assert (trial["id"], trial["status"], trial["params"], trial["optuna_trial_number"]) == \
        (trial_id, "complete", {"lr": 0.1}, 7)
    assert trial["finished"] is not None

    selection = make_selection()
    selection_id = repo.save_selection(trial_id, selection)
    assert Selection.from_json(repo.load_selection(selection_id)) == selection
    stored = create_store_engine(db_url)
    with stored.connect() as connection:
        payload = connection.scalar(select(SelectionRow.payload).where(SelectionRow.id == selection_id))
    stored.dispose()
    assert zlib.decompress(payload).decode() == selection.to_json() and len(payload) < len(selection.to_json()) / 3
    with pytest.raises(FlexiqError, match="no selection"):
        repo.load_selection(selection_id + 1)


def test_rerecording_after_a_resume_leaves_one_row(repo, db_url):
    trial_id = new_trial(repo)
    assert new_trial(repo) == trial_id and count(db_url, Trial) == 1
    selection_id = repo.save_selection(trial_id, make_selection("hawq"))
    assert repo.save_selection(trial_id, make_selection("greedy-error")) == selection_id
    assert Selection.from_json(repo.load_selection(selection_id)).method == "greedy-error"

    first = repo.add_evaluation(selection_id, 0.5, 0.80, None, None, "digits", 360)
    assert repo.add_evaluation(selection_id, 0.5, 0.82, 0.99, 0.7, "digits", 360) == first
    repo.add_evaluation(selection_id, 0.5, 0.75, None, None, "digits-test", 1437)
    assert count(db_url, Evaluation) == 2
    assert count(db_url, Evaluation, Evaluation.dataset == "digits", Evaluation.top1 == 0.82) == 1

    first = repo.add_latency(selection_id, "cpu", "measured", {"cores": 2}, 0.5, 120.0, None, 1.1)
    assert repo.add_latency(selection_id, "cpu", "measured", {"cores": 2}, 0.5, 110.0, 2**40, 1.2) == first
    assert count(db_url, LatencyMeasurement) == 1
    assert count(db_url, LatencyMeasurement, LatencyMeasurement.cycles == 2**40) == 1


@pytest.mark.parametrize("bad_field", [{"latency_us": None}, {"provenance": None}, {"provenance": "guessed"}],
                         ids=["latency-null", "provenance-null", "provenance-unknown"])
def test_add_result_stores_all_or_nothing(repo, db_url, bad_field):
    trial_id = new_trial(repo)
    evaluations = [{"ratio": r, "top1": 0.9 - r / 10, "dataset": "digits", "samples": 360} for r in (0.25, 0.5)]
    latencies = [latency(0.25, 100.0), {**latency(0.5, 90.0), **bad_field}]
    with pytest.raises(IntegrityError):
        repo.add_result(trial_id, make_selection(), evaluations, latencies)
    assert (count(db_url, SelectionRow), count(db_url, Evaluation), count(db_url, LatencyMeasurement)) == (0, 0, 0)

    selection_id = repo.add_result(trial_id, make_selection(), evaluations, latencies[:1])
    assert Selection.from_json(repo.load_selection(selection_id)) == make_selection()
    assert (count(db_url, Evaluation), count(db_url, LatencyMeasurement)) == (2, 1)


def test_pareto_front_per_backend(repo):
    """Hand-made points: C is dominated on cpu but not on npu; B and E tie; F and G lose one tie each."""
    study_id = repo.create_study("front", "resnet20", "digits", {}, ["cpu", "npu"])
    #          method  ratio top1  cpu-us npu-us
    points = [("m1", 0.0, 0.90, 100, 50),  # A
              ("m1", 0.5, 0.85, 60, 30),  # B
              ("m2", 0.5, 0.80, 70, 20),  # C
              ("m2", 1.0, 0.70, 40, 10),  # D
              ("m3", 0.5, 0.85, 60, 35),  # E
              ("m3", 1.0, 0.70, 45, 12),  # F
              ("m3", 0.0, 0.88, 100, 50)]  # G
    for number, (method, rows) in enumerate(itertools.groupby(points, key=lambda p: p[0])):
        rows = list(rows)
        trial_id = repo.create_trial(study_id, number, {})
        selection_id = repo.add_result(
            trial_id, make_selection(method),
            [{"ratio": r, "top1": top1, "dataset": "digits", "samples": 360} for _, r, top1, _, _ in rows],
            [latency(r, cpu) for _, r, _, cpu, _ in rows]
            + [latency(r, npu, "npu", "simulated") for _, r, _, _, npu in rows])
        if method == "m2":  # a better top-1 on another dataset and a latency without accuracy: no candidates
            repo.add_evaluation(selection_id, 0.75, 0.99, None, None, "other", 10)
            repo.add_latency(selection_id, "cpu", "measured", {}, 0.75, 1.0, None, 9.0)
            repo.add_latency(selection_id, "cpu", "measured", {}, 0.25, 1.0, None, 9.0)
    other = repo.create_study("other-study", "resnet20", "digits", {}, ["cpu"])
    repo.add_result(repo.create_trial(other, 0, {}), make_selection("m9"),
                    [{"ratio": 0.5, "top1": 1.0, "dataset": "digits", "samples": 1}], [latency(0.5, 0.1)])

    repo.update_pareto(study_id)
    repo.update_pareto(study_id)  # recomputing replaces, never adds

    def point(backend, method, ratio, top1, latency_us, index):
        provenance = "measured" if backend == "cpu" else "simulated"
        return {"backend": backend, "provenance": provenance, "ratio": ratio, "method": method, "top1": top1,
                "latency_us": latency_us, "trial": {"m1": 0, "m2": 1, "m3": 2, "m4": 9}[method], "point": index}

    cpu_front = [point("cpu", "m2", 1.0, 0.70, 40, 0), point("cpu", "m1", 0.5, 0.85, 60, 1),
                 point("cpu", "m3", 0.5, 0.85, 60, 2), point("cpu", "m1", 0.0, 0.90, 100, 3)]
    npu_front = [point("npu", "m2", 1.0, 0.70, 10, 0), point("npu", "m2", 0.5, 0.80, 20, 1),
                 point("npu", "m1", 0.5, 0.85, 30, 2), point("npu", "m1", 0.0, 0.90, 50, 3)]
    assert repo.pareto(study_id) == cpu_front + npu_front

    best_trial = repo.create_trial(study_id, 9, {})
    repo.add_result(best_trial, make_selection("m4"), [{"ratio": 0.5, "top1": 0.95, "dataset": "digits",
                                                        "samples": 360}], [latency(0.5, 5)])
    repo.update_pareto(study_id)
    assert repo.pareto(study_id) == [point("cpu", "m4", 0.5, 0.95, 5, 0)] + npu_front
    assert repo.pareto(other) == []


def test_pareto_lists_the_studys_first_backend_first(repo):
    """`export --point` reads the first backend's front: `studies pareto` and the dashboard list it first."""
    study_id = repo.create_study("npu-first", "resnet20", "digits", {}, ["npu", "cpu"])
    repo.add_result(repo.create_trial(study_id, 0, {}), make_selection(),
                    [{"ratio": 0.5, "top1": 0.9, "dataset": "digits", "samples": 10}],
                    [latency(0.5, 40), latency(0.5, 10, "npu", "simulated")])
    repo.update_pareto(study_id)
    assert [p["backend"] for p in repo.pareto(study_id)] == ["npu", "cpu"]


def test_pareto_front_matches_the_definition_on_random_points():
    rng = random.Random(0)
    for _ in range(200):
        points = [{"top1": rng.randint(0, 5) / 5, "latency_us": float(rng.randint(1, 6)), "id": i}
                  for i in range(rng.randint(1, 12))]
        dominated = {p["id"] for p in points for q in points
                     if q["top1"] >= p["top1"] and q["latency_us"] <= p["latency_us"]
                     and (q["top1"] > p["top1"] or q["latency_us"] < p["latency_us"])}
        assert sorted(p["id"] for p in pareto_front(points)) == sorted(p["id"] for p in points
                                                                        if p["id"] not in dominated)


def test_checkpoints_are_upserted(repo):
    trial_id = new_trial(repo)
    assert repo.load_checkpoint(trial_id, "nsga2") is None
    repo.save_checkpoint(trial_id, "nsga2", b"generation 1")
    repo.save_checkpoint(trial_id, "nsga2", b"generation 2\x00\xff")
    repo.save_checkpoint(trial_id, "rng", b"seed")
    assert repo.load_checkpoint(trial_id, "nsga2") == b"generation 2\x00\xff"
    assert repo.load_checkpoint(trial_id, "rng") == b"seed"


def test_jobs_are_idempotent_and_heartbeat(repo):
    study_id = repo.create_study("s", "resnet20", "digits", {}, ["cpu"])
    job_id = repo.start_job("raysubmit_1", study_id)
    assert repo.start_job("raysubmit_1", study_id) == job_id
    [job] = repo.list_jobs()
    assert (job["id"], job["submission_id"], job["study_id"], job["status"]) == (job_id, "raysubmit_1", study_id,
                                                                                  "running")
    time.sleep(0.01)
    repo.heartbeat(job_id)
    repo.finish_job(job_id, "succeeded")
    [job_after] = repo.list_jobs()
    assert job_after["heartbeat"] > job["heartbeat"] and job_after["status"] == "succeeded"
    assert job_after["finished"] is not None
    with pytest.raises(FlexiqError, match="no job"):
        repo.heartbeat(job_id + 1)
    with pytest.raises(ValueError, match="finished job status"):
        repo.finish_job(job_id, "running")


def test_schedules(repo):
    schedule_id = repo.add_schedule("nightly", "0 3 * * *", {"model": "resnet20"}, timezone="Europe/Berlin")
    with pytest.raises(FlexiqError, match="already exists"):
        repo.add_schedule("nightly", "0 4 * * *", {})
    [schedule] = repo.list_schedules()
    assert (schedule["id"], schedule["cron"], schedule["timezone"], schedule["config"], schedule["enabled"],
            schedule["last_run"]) == (schedule_id, "0 3 * * *", "Europe/Berlin", {"model": "resnet20"}, True, None)
    assert datetime.fromisoformat(schedule["created"]).utcoffset() == timedelta(0)


def test_configs_are_versioned_and_unknown_types_refused(repo, db_url):
    quant = config_to_dict(QuantConfig(group_size=4))
    study_id = repo.create_study("quant", "resnet20", "digits", quant, ["cpu"])
    assert repo.get_study(study_id)["config"] == quant
    with pytest.raises(FlexiqError, match="unknown type 'Evil'"):
        repo.create_study("evil", "resnet20", "digits", {"_type": "Evil", "_version": 1, "_data": {}}, ["cpu"])
    with pytest.raises(FlexiqError, match="version 2"):
        repo.add_schedule("future", "* * * * *", {"_type": "search-config", "_version": 2, "_data": {}})

    engine = create_store_engine(db_url)  # a row written by a newer flexiq with a config type unknown here
    with engine.begin() as connection:
        connection.execute(text("UPDATE flexiq_studies SET config_json = :config"),
                           {"config": '{"_type": "FutureConfig", "_version": 1, "_data": {}}'})
    engine.dispose()
    with pytest.raises(FlexiqError, match="unknown type 'FutureConfig'"):
        repo.get_study(study_id)


def test_unreachable_postgres_error_hides_the_password():
    url = "postgresql://flexiq:hunter2-secret@127.0.0.1:1/flexiq"
    with pytest.raises(FlexiqError) as error:
        Repository.open(url)
    message = str(error.value)
    assert "postgresql+psycopg://flexiq:***@127.0.0.1:1/flexiq" in message and "refused" in message.lower()
    assert "hunter2" not in message and "\n" not in message


@pytest.mark.parametrize("url", ["not a url", "postgresql://flexiq:hunter2-secret@host:port/db", "mysql://a@h/x"],
                         ids=["not-a-url", "port-not-a-number", "unsupported-database"])
def test_malformed_or_unsupported_url_is_a_flexiq_error(url):
    with pytest.raises(FlexiqError) as error:
        Repository.open(url)
    assert "hunter2" not in str(error.value)


def test_sqlite_store_uses_wal_and_foreign_keys(tmp_path):
    engine = create_store_engine(f"sqlite:///{tmp_path / 'flexiq.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
    engine.dispose()


def test_default_url_and_redaction(monkeypatch, tmp_path):
    monkeypatch.delenv("FLEXIQ_DB", raising=False)
    monkeypatch.setenv("FLEXIQ_HOME", str(tmp_path))
    assert default_db_url() == f"sqlite:///{tmp_path / 'flexiq.db'}"
    monkeypatch.setenv("FLEXIQ_DB", "postgresql://u:pw@db:5432/flexiq")
    assert default_db_url() == "postgresql://u:pw@db:5432/flexiq"
    assert redact_url(default_db_url()) == "postgresql://u:***@db:5432/flexiq"
    with Repository.open(f"sqlite:///{tmp_path / 'nested' / 'store.db'}") as repository:
        assert repository.url.endswith("nested/store.db")


WRITER = """
import pathlib, sys, time
from flexiq_search.store import Repository

study_id, selection_id, dataset, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], pathlib.Path(sys.argv[4])
repo = Repository.open()  # the URL comes in $FLEXIQ_DB, not on the command line
(folder / f"ready-{dataset}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
for i in range(50):
    repo.add_evaluation(selection_id, i / 50, 0.5 + i / 100, None, None, dataset, 100)
    if i < 20:  # both writers record the same latencies: the upserts race
        repo.add_latency(selection_id, "cpu", "measured", {}, i / 50, 10.0 + i, None, 1.0)
    repo.update_pareto(study_id)  # reads, then writes: the transactions must not interleave
repo.close()
"""


def test_two_processes_writing_at_once_lose_nothing(repo, db_url, tmp_path):
    trial_id = new_trial(repo)
    study_id = repo.get_study("study")["id"]
    selection_id = repo.save_selection(trial_id, make_selection())
    env = {**os.environ, "FLEXIQ_DB": db_url}
    datasets = ("digits", "digits-test")  # the study's dataset, and one the Pareto front ignores
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(study_id), str(selection_id), dataset,
                                 str(tmp_path)], env=env, stderr=subprocess.PIPE, text=True) for dataset in datasets]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{d}").exists() for d in datasets) and time.monotonic() < deadline:
            time.sleep(0.01)
        (tmp_path / "go").touch()
        for writer in writers:
            _, errors = writer.communicate(timeout=120)
            assert writer.returncode == 0, errors.splitlines()[-1:]
    finally:
        for writer in writers:
            writer.kill()  # no-op for a writer that has exited
            writer.wait()
    assert count(db_url, Evaluation) == 100
    assert count(db_url, Evaluation, Evaluation.dataset == "digits") == 50
    assert count(db_url, LatencyMeasurement) == 20
    raced = [tuple(point.values()) for point in repo.pareto(study_id)]
    assert len(raced) == len(set(raced)), "two recomputations of the Pareto front interleaved"
    repo.update_pareto(study_id)
    number = repo.list_trials(study_id)[0]["number"]
    expected = [{"backend": "cpu", "provenance": "measured", "ratio": i / 50, "method": "greedy-error",
                 "top1": 0.5 + i / 100, "latency_us": 10.0 + i, "trial": number, "point": i} for i in range(20)]
    assert repo.pareto(study_id) == expected
