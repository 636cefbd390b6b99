"""Which optional install (pyproject's extras) brings a module, so a command that needs a part the
user did not install fails in one line that names it, instead of a ModuleNotFoundError traceback.

The library itself (quantize, select, evaluate, finetune, export, CPU / NPU-simulator latency)
imports none of these; the search service, Ray, PostgreSQL, the scheduler and the dashboard do.
"""

from __future__ import annotations

# top-level module -> the extra of pyproject.toml that installs it
EXTRA_OF_MODULE = {
    "sqlalchemy": "search", "alembic": "search", "optuna": "search",
    "ray": "cluster",
    "psycopg": "postgres",
    "croniter": "scheduler",
    "streamlit": "dashboard", "plotly": "dashboard",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The one-line answer for a module an extra would have installed, or None if it is not one."""
    module = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    return f"this needs {module}, from flexiq's '{extra}' extra: pip install 'flexiq[{extra}]' (or 'flexiq[all]')"
