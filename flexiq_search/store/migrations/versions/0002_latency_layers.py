"""Per-layer latencies: a nullable `layers_json` on latency measurements ([{"name", "latency_us", "cycles"}]).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

Nullable, so rows recorded before this revision stay valid (they have no per-layer breakdown).
Plain ADD/DROP COLUMN, no batch copy: SQLite has both since 3.35, and copying the table would
drop its CHECK constraint.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("flexiq_latency_measurements", sa.Column("layers_json", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("flexiq_latency_measurements", "layers_json")
