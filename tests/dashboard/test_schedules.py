"""The Schedules page under AppTest: two schedules with runs in every status, written through the
repository API as a scheduler and its searches would, plus the empty state and a hand-edited bad row."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from sqlalchemy import text

from flexiq_search.store import Repository
from flexiq_search.store.engine import create_store_engine

from .test_pages import texts

CONFIG = {"model": "resnet20", "dataset": "digits"}
DAY = datetime(2026, 3, 1, 1, 0, tzinfo=timezone.utc)  # 02:00 in Europe/Berlin (winter time)
DIED = "search process exited with code 1; log: /var/flexiq/schedule-logs/x.log"
REFUSED = "submission failed: ConnectionError: job server at http://127.0.0.1:8265 refused"


def edit(db_url: str, statement: str) -> None:
    """A change no repository method makes (there is no way to disable a schedule, and add validates
    the cron): straight SQL, as an operator would."""
    engine = create_store_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text(statement))
    engine.dispose()


@pytest.fixture
def schedules_db(store_without_studies) -> tuple[str, int]:
    """(the URL, the id of the study one run made): "nightly" with a succeeded run whose study exists,
    a run whose job died, and a submitted run whose job runs; "weekly" (disabled) with a run refused at
    submission and a newer one still only claimed."""
    url = store_without_studies
    with Repository.open(url) as repo:
        nightly = repo.add_schedule("nightly", "0 2 * * *", CONFIG, timezone="Europe/Berlin")
        weekly = repo.add_schedule("weekly", "30 3 * * 1", CONFIG)
        runs = {}
        for schedule_id, name, slot in [(nightly, "nightly", DAY), (nightly, "nightly", DAY + timedelta(days=1)),
                                        (nightly, "nightly", DAY + timedelta(days=2)),
                                        (weekly, "weekly", datetime(2026, 2, 23, 3, 30, tzinfo=timezone.utc)),
                                        (weekly, "weekly", datetime(2026, 3, 2, 3, 30, tzinfo=timezone.utc))]:
            stamp = slot.strftime("%Y%m%dT%H%MZ")
            runs[name, slot.day] = repo.claim_schedule_slot(schedule_id, slot, f"{name}-{stamp}",
                                                            f"flexiq-{name}-{stamp}", "host:1")
        study_id = repo.create_study("nightly-20260301T0100Z", "resnet20", "digits", CONFIG, ["npu-sim"])
        repo.set_study_status(study_id, "finished")
        repo.finish_job(repo.start_job("flexiq-nightly-20260301T0100Z", study_id), "succeeded")
        repo.update_schedule_run(runs["nightly", 1], "succeeded", submitter="local")
        repo.update_schedule_run(runs["nightly", 2], "failed", submitter="local", message=DIED)
        repo.update_schedule_run(runs["nightly", 3], "submitted", submitter="ray")
        repo.start_job("flexiq-nightly-20260303T0100Z")
        repo.update_schedule_run(runs["weekly", 23], "failed", submitter="ray", message=REFUSED)
        repo.set_schedule_enabled("weekly", False)
    return url, study_id


def test_schedules_page_shows_each_schedule_next_and_last_run(schedules_db, open_page):
    url, _ = schedules_db
    app = open_page(url, "schedules")
    assert not app.exception and not app.error and not app.warning
    assert app.title[0].value == "Schedules"
    table = app.dataframe[0].value.set_index("name")
    assert list(table.index) == ["nightly", "weekly"]
    assert (table.loc["nightly", "cron"], table.loc["nightly", "timezone"]) == ("0 2 * * *", "Europe/Berlin")
    assert table.loc["nightly", "enabled"] and not table.loc["weekly", "enabled"]
    upcoming = pd.Timestamp(table.loc["nightly", "next_run"])
    now = pd.Timestamp.now(tz="UTC")
    assert now < upcoming <= now + pd.Timedelta(days=1)
    assert upcoming.tz_convert("Europe/Berlin").hour == 2 and upcoming.minute == 0, "02:00 Berlin, shown in UTC"
    assert pd.isna(table.loc["weekly", "next_run"]), "a disabled schedule has no next run"
    assert pd.Timestamp(table.loc["nightly", "last_slot"]) == pd.Timestamp("2026-03-03T01:00Z")
    assert table.loc["nightly", "last_status"] == "submitted (job running)", "the job's word once it reported"
    assert pd.Timestamp(table.loc["weekly", "last_slot"]) == pd.Timestamp("2026-03-02T03:30Z")
    assert table.loc["weekly", "last_status"] == "claimed"


def test_recent_runs_newest_first_with_messages_and_a_link_to_an_existing_study(schedules_db, open_page):
    url, study_id = schedules_db
    app = open_page(url, "schedules")
    assert not app.exception and "Recent runs" in texts(app.subheader)
    runs = app.dataframe[1].value
    runs = runs.astype(object).where(runs.notna(), None)  # a missing text comes back as NaN
    assert [(run.schedule, run.status, run.job_status) for run in runs.itertuples()] == [
        ("nightly", "submitted", "running"),
        ("weekly", "claimed", None),
        ("nightly", "failed", None),
        ("nightly", "succeeded", "succeeded"),
        ("weekly", "failed", None),
    ], "newest slot first, each with its job's status once the job recorded itself"
    assert list(runs["slot"]) == sorted(runs["slot"], reverse=True) and runs["slot"][0] == pd.Timestamp(
        "2026-03-03T01:00Z")
    by_study = runs.set_index("study")
    assert by_study.loc["nightly-20260302T0100Z", "message"] == DIED
    assert by_study.loc["weekly-20260223T0330Z", "message"] == REFUSED
    assert by_study.loc["weekly-20260223T0330Z", "submitter"] == "ray"
    assert by_study.loc["nightly-20260301T0100Z", "open"] == f"study?study={study_id}"
    assert set(by_study.drop(index="nightly-20260301T0100Z")["open"]) == {None}, "no link to a study not made"

    study = open_page(url, "study", study=str(study_id))  # where the link goes
    assert not study.exception and not study.error and study.title[0].value == "nightly-20260301T0100Z"


def test_a_store_without_schedules_says_how_to_add_one(store_without_studies, open_page):
    app = open_page(store_without_studies, "schedules")
    assert not app.exception and not app.dataframe
    assert 'flexiq schedule add NAME --cron "0 2 * * *" --config C.yaml' in texts(app.info)


def test_a_schedule_without_runs_yet_says_so(store_without_studies, open_page):
    with Repository.open(store_without_studies) as repo:
        repo.add_schedule("nightly", "0 2 * * *", CONFIG)
    app = open_page(store_without_studies, "schedules")
    assert not app.exception
    [table] = app.dataframe
    assert table.value.loc[0, "name"] == "nightly" and table.value.loc[0, "last_status"] is None
    assert "No runs yet" in texts(app.info)


def test_a_hand_edited_bad_cron_is_a_warning_not_a_traceback(schedules_db, open_page):
    url, _ = schedules_db
    edit(url, "UPDATE flexiq_schedules SET cron = '0 25 * * *' WHERE name = 'nightly'")
    app = open_page(url, "schedules")
    assert not app.exception and not app.error
    assert "Schedule 'nightly' is skipped by the scheduler" in texts(app.warning)
    table = app.dataframe[0].value.set_index("name")
    assert pd.isna(table.loc["nightly", "next_run"])
    assert table.loc["nightly", "last_status"] == "submitted (job running)", "the rest of the row still shows"
