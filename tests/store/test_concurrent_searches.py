"""Two search drivers writing one PostgreSQL database at once: both studies complete, nothing lost."""

import os
import subprocess
import sys

from flexiq_search.store import Repository


def test_two_searches_share_one_postgresql_database(postgres_url, tmp_path, resnet20_checkpoint):
    import optuna

    checkpoint = resnet20_checkpoint
    common = ["search", "--no-ray", "--model", "resnet20", "--dataset", "digits", "--checkpoint", str(checkpoint),
              "--backends", "npu-sim", "--calibration", "64", "--eval-samples", "200", "--population", "4",
              "--generations", "2", "--trials", "2", "--db", postgres_url]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    drivers = [subprocess.Popen([sys.executable, "-m", "flexiq_search.cli", *common, "--name", name, "--seed", seed],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, seed in (("first", "1"), ("second", "2"))]
    for driver in drivers:
        out, err = driver.communicate(timeout=600)
        assert driver.returncode == 0, err[-2000:]
    repo = Repository.open(postgres_url)
    try:
        studies = {s["name"]: s for s in repo.list_studies()}
        assert set(studies) == {"first", "second"} and {s["status"] for s in studies.values()} == {"finished"}
        for study in studies.values():
            trials = repo.list_trials(study["id"])
            assert [t["status"] for t in trials] == ["complete", "complete"]
            assert repo.pareto(study["id"]), "each study has its own front"
            optuna_study = optuna.load_study(study_name=f"flexiq:{study['name']}", storage=postgres_url)
            assert [t.state.name for t in optuna_study.trials] == ["COMPLETE", "COMPLETE"]
    finally:
        repo.close()
