"""The deployment files parse, and name entry points and resources that exist."""

import importlib
from pathlib import Path

import yaml

INFRA = Path(__file__).resolve().parents[1] / "infra"


def test_rayjob_runs_the_search_job_entry_point_and_routes_simulator_work():
    job = yaml.safe_load((INFRA / "k8s" / "rayjob-search.yaml").read_text())
    assert job["kind"] == "RayJob" and "python -m workers.search_job" in job["spec"]["entrypoint"]
    importlib.import_module("workers.search_job")
    groups = {g["groupName"]: g for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    assert "npu_sim" in groups["npu-sim"]["rayStartParams"]["resources"]
    env = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "FLEXIQ_DB", "valueFrom": {"secretKeyRef": {"name": "flexiq-db", "key": "url"}}} in env


def test_nightly_cronjob_and_cluster_config():
    cron = yaml.safe_load((INFRA / "k8s" / "cronjob-nightly.yaml").read_text())
    assert cron["kind"] == "CronJob" and len(cron["spec"]["schedule"].split()) == 5
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    cluster = yaml.safe_load((INFRA / "ray" / "cluster.yaml").read_text())
    assert cluster["available_node_types"]["npu"]["resources"] == {"npu_sim": 4}
