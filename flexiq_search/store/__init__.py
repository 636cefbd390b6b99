"""The search store: studies, trials, selections and their results in SQLite or PostgreSQL.

`Repository` is the one API; `default_db_url` says where the embedded default lives and
`redact_url` is how a database URL is ever shown (never with its password). A read-only opening
raises `StoreEmpty` or `StoreOutdated` (both `FlexiqError`s) for a database it cannot show as it is.
"""

from .engine import StoreEmpty, StoreOutdated, default_db_url, optuna_storage_url, redact_url
from .repository import Repository

__all__ = ["Repository", "StoreEmpty", "StoreOutdated", "default_db_url", "optuna_storage_url", "redact_url"]
