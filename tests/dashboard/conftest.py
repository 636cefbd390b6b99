"""Dashboard fixtures: a store filled by a real small search (a trained ResNet-20 on digits, two Optuna
trials, npu-sim and cpu latencies), a second study caught mid-search (built from the first one's
real rows and checkpoint), and databases that are empty or at an older schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from flexiq_search.store import Repository
from flexiq_search.store.engine import alembic_config, create_store_engine
from flexiq_search.store.repository import EVOLUTION_CHECKPOINT

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dashboard" / "app.py"
SEARCHED = "digits-searched"  # the real search, finished
RUNNING = "digits-running"  # trial 0 finished (the real trial 0's rows), trial 1 mid-evolution
SEARCH_SPACE = "search_space:\n  group_size: [4, 8]\n  activation_shift: [static, dynamic]\n"


def flexiq(*args: str) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "flexiq_search.cli", *args], capture_output=True, text=True,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return run


@pytest.fixture(scope="session")
def search_db(tmp_path_factory) -> str:
    """The URL of a SQLite store holding the two studies (about 45 s, once per session)."""
    folder = tmp_path_factory.mktemp("dashboard")
    checkpoint, space, url = folder / "r20-digits.pt", folder / "space.yaml", f"sqlite:///{folder / 'flexiq.db'}"
    space.write_text(SEARCH_SPACE)
    flexiq("train", "--model", "resnet20", "--dataset", "digits", "--epochs", "4", "--out", str(checkpoint))
    flexiq("search", "--no-ray", "--model", "resnet20", "--dataset", "digits", "--checkpoint", str(checkpoint),
           "--backends", "npu-sim,cpu", "--calibration", "64", "--eval-samples", "200", "--population", "4",
           "--generations", "2", "--trials", "2", "--config", str(space), "--name", SEARCHED, "--db", url)
    with Repository.open(url) as repo:
        add_running_study(repo)
    return url


def add_running_study(repo: Repository) -> None:
    """A study as a live search leaves it: trial 0 stored, trial 1 running with an evolution checkpoint
    (the real search's own rows and last checkpoint, copied through the repository API)."""
    from flexiq_search.selection import Selection

    searched = repo.get_study(SEARCHED)
    first, second = repo.list_trials(searched["id"])
    results = repo.study_results(searched["id"])
    study_id = repo.create_study(RUNNING, searched["model"], searched["dataset"], repo.study_config(searched["id"]),
                                 searched["backends"])
    trial_id = repo.create_trial(study_id, 0, first["params"], 0)
    evaluation_keys = ("ratio", "top1", "top5", "fitness", "dataset", "samples")
    latency_keys = ("backend", "provenance", "hardware", "ratio", "latency_us", "cycles", "speedup_vs_int8", "layers")
    repo.add_result(trial_id, Selection.from_json(repo.selection_for_trial(first["id"])),
                    [{k: row[k] for k in evaluation_keys} for row in results["evaluations"] if row["trial"] == 0],
                    [{k: row[k] for k in latency_keys} for row in results["latencies"] if row["trial"] == 0])
    repo.finish_trial(trial_id, "complete")
    repo.update_pareto(study_id)
    running = repo.create_trial(study_id, 1, second["params"], 1)
    repo.save_checkpoint(running, EVOLUTION_CHECKPOINT, repo.load_checkpoint(second["id"], EVOLUTION_CHECKPOINT))
    repo.start_job("local-live", study_id)


@pytest.fixture(scope="session")
def study_ids(search_db) -> dict[str, int]:
    with Repository.open(search_db, read_only=True) as repo:
        return {study["name"]: study["id"] for study in repo.list_studies()}


@pytest.fixture
def empty_db(tmp_path) -> str:
    path = tmp_path / "empty.db"
    path.touch()
    return f"sqlite:///{path}"


@pytest.fixture
def store_without_studies(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    Repository.open(url).close()
    return url


@pytest.fixture
def older_schema_db(tmp_path) -> str:
    """A store at schema revision 0001 (before per-layer latencies), as an older flexiq left it."""
    from alembic import command

    url = f"sqlite:///{tmp_path / 'old.db'}"
    Repository.open(url).close()
    engine = create_store_engine(url)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0001")
    engine.dispose()
    return url


@pytest.fixture
def open_page(monkeypatch):
    """Run the app on a database (given in $FLEXIQ_DB, as `flexiq dashboard` does) and go to a page."""

    def run(db_url: str, page: str | None = None, **query: str) -> AppTest:
        monkeypatch.setenv("FLEXIQ_DB", db_url)
        app = AppTest.from_file(str(APP), default_timeout=60)
        app.run()
        if page is not None:
            app.switch_page(f"views/{page}.py")
        app.query_params.update(query)
        return app.run()

    return run
