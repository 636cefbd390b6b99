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


SYSTEMD = INFRA / "systemd"


def exec_start(unit: Path) -> list[str]:
    [line] = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=").split()


def test_the_scheduler_units_run_valid_flexiq_scheduler_commands():
    from flexiq_search.cli import build_parser

    for name in ("flexiq-scheduler.service", "flexiq-scheduler-once.service"):
        command = exec_start(SYSTEMD / name)
        assert Path(command[0]).name == "flexiq" and command[1] == "scheduler"
        args = build_parser().parse_args(command[1:])
        assert args.once == name.endswith("-once.service") and args.address.startswith("http://127.0.0.1:")
    service = (SYSTEMD / "flexiq-scheduler.service").read_text()
    assert "KillMode=process" in service, "stopping the scheduler must not kill the searches it started"
    timer = (SYSTEMD / "flexiq-scheduler.timer").read_text()
    assert "Unit=flexiq-scheduler-once.service" in timer and "OnCalendar=minutely" in timer


def test_the_scheduler_units_pass_systemd_analyze_verify(tmp_path):
    """systemd's own checker, on copies pointed at this checkout's flexiq (it checks ExecStart exists);
    it exits 0 on unknown keys and bad values but prints them, so any output about a unit fails."""
    import shutil
    import subprocess
    import sys

    import pytest

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (CI installs systemd)")
    flexiq = Path(sys.executable).with_name("flexiq")
    env_file = tmp_path / "scheduler.env"
    env_file.write_text((SYSTEMD / "scheduler.env.example").read_text())
    units = []
    for unit in sorted(SYSTEMD.glob("flexiq-scheduler*")):
        text = unit.read_text().replace("/opt/flexiq/.venv/bin/flexiq", str(flexiq))
        text = text.replace("/etc/flexiq/scheduler.env", str(env_file)).replace("/var/lib/flexiq", str(tmp_path))
        text = text.replace("User=flexiq", "User=root").replace("Group=flexiq", "Group=root")
        (tmp_path / unit.name).write_text(text)
        units.append(str(tmp_path / unit.name))
    run = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=120)
    problems = [line for line in (run.stdout + run.stderr).splitlines() if str(tmp_path) in line]
    assert run.returncode == 0 and problems == [], run.stdout + run.stderr


def test_the_postgres_test_server_stops_and_make_test_stops_what_it_started():
    """A server of its own (own folder and port): start, status, stop; `make test` stops the server
    only when it started it (a leftover server kept 128 MB and a port after every run)."""
    import os
    import shutil
    import subprocess
    import tempfile

    import pytest

    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        if os.environ.get("FLEXIQ_REQUIRE_POSTGRES") == "1":
            pytest.fail("no PostgreSQL server binaries")
        pytest.skip("no PostgreSQL server binaries")
    folder = tempfile.mkdtemp(prefix="flexiq-pg-lifecycle-", dir="/tmp")  # the postgres user must reach it
    os.chmod(folder, 0o755)
    data = Path(folder) / "data"
    env = {**os.environ, "FLEXIQ_PG_DIR": str(data), "FLEXIQ_PG_PORT": "55433"}
    script = str(INFRA / "postgres-test-server.sh")

    def run(*args):
        return subprocess.run(["bash", script, *args], env=env, capture_output=True, text=True, timeout=120)

    try:
        assert run("status").returncode == 1
        started = run()
        assert started.returncode == 0 and started.stdout.startswith("postgresql+psycopg://flexiq:"), started.stderr
        assert run("status").returncode == 0
        assert run("stop").returncode == 0 and run("status").returncode == 1
        assert run("stop").returncode == 0, "stopping a stopped server is fine"
        assert run("bogus").returncode == 2
    finally:
        run("stop")
        shutil.rmtree(folder, ignore_errors=True)
    recipe = (INFRA.parent / "Makefile").read_text().split("\ntest:")[1].split("\n\n")[0]
    assert "postgres-test-server.sh status || trap 'infra/postgres-test-server.sh stop' EXIT" in recipe
