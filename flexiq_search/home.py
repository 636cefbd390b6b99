"""Where the embedded default keeps its files (checkpoints, the SQLite store)."""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """$FLEXIQ_HOME, else the XDG data folder's `flexiq`."""
    if "FLEXIQ_HOME" in os.environ:
        return Path(os.environ["FLEXIQ_HOME"])
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "flexiq"
