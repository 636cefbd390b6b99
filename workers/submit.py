"""The scheduler's Ray submitter: each claimed run becomes a Ray job (`ray job submit`'s client).

The job runs `python -m workers.search_job --schedule-run ID` on the cluster. A database URL without
a password is sent as FLEXIQ_DB in the job's runtime environment; one with a password is not (Ray
shows runtime environments in `ray job list` and its dashboard), so the cluster's nodes must have
FLEXIQ_DB themselves (from a secret, as infra/k8s does), unless `send_db_url` says otherwise. The
run's submission id is the Ray job's submission id, so `ray job status` and the store's runs table
name the same thing.
"""

from __future__ import annotations

from sqlalchemy import make_url

from flexiq_search.errors import FlexiqError
from flexiq_search.scheduler import Submitter


class RaySubmitter(Submitter):
    name = "ray"

    def __init__(self, address: str, python: str = "python", send_db_url: bool | None = None) -> None:
        from ray.job_submission import JobSubmissionClient

        try:
            self.client = JobSubmissionClient(address)
        except Exception as exc:  # unreachable, refused (ray.exceptions.AuthenticationError), version mismatch
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FlexiqError(f"cannot reach the Ray job server at {address}: {reason}") from None
        self.python, self.send_db_url = python, send_db_url

    def sends_db_url(self, db_url: str) -> bool:
        return self.send_db_url if self.send_db_url is not None else make_url(db_url).password is None

    def submit(self, run: dict, db_url: str) -> None:
        # only keys the search's own ray.init (workers.connect) does not set: Ray refuses a job whose
        # runtime env and its driver's name the same variable
        env_vars = {"FLEXIQ_DB": db_url} if self.sends_db_url(db_url) else {}
        self.client.submit_job(entrypoint=f"{self.python} -m workers.search_job --schedule-run {run['id']}",
                               submission_id=run["submission_id"], runtime_env={"env_vars": env_vars},
                               metadata={"flexiq_study": run["study_name"]})

    def ended(self, submission_id: str) -> str | None:
        from ray.job_submission import JobStatus

        try:
            status = self.client.get_job_status(submission_id)
        except RuntimeError:  # not a job of this cluster (another cluster's, or its record is gone)
            return None
        if status in (JobStatus.FAILED, JobStatus.STOPPED):
            lines = [line for line in (self.client.get_job_info(submission_id).message or "").splitlines() if line]
            return f"Ray job {status.value}" + (f": {lines[-1]}" if lines else "")  # the last line: the error
        if status == JobStatus.SUCCEEDED:
            return "Ray job SUCCEEDED"
        return None
