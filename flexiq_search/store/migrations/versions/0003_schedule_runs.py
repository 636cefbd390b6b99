"""Schedule runs: one row per claimed cron slot, unique per (schedule, slot); schedules get a time zone.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

The unique (schedule_id, slot) key is the scheduler's lock: two schedulers that find the same slot
due both INSERT it and exactly one row survives. `last_run` goes: the runs table is the one record
of what ran (it was never written outside tests). Plain ADD/DROP COLUMN, as in 0002.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("flexiq_schedules", sa.Column("timezone", sa.String(length=64), server_default="UTC",
                                                nullable=False))
    op.drop_column("flexiq_schedules", "last_run")
    op.create_table(
        "flexiq_schedule_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("slot", sa.DateTime(timezone=True), nullable=False),
        sa.Column("study_name", sa.String(length=200), nullable=False),
        sa.Column("submission_id", sa.String(length=200), nullable=False),
        sa.Column("scheduler", sa.String(length=200), nullable=False),
        sa.Column("submitter", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("claimed", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('claimed', 'submitted', 'succeeded', 'failed')",
                           name=op.f("ck_flexiq_schedule_runs_status")),
        sa.ForeignKeyConstraint(["schedule_id"], ["flexiq_schedules.id"], ondelete="CASCADE",
                                name=op.f("fk_flexiq_schedule_runs_schedule_id_flexiq_schedules")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flexiq_schedule_runs")),
        sa.UniqueConstraint("schedule_id", "slot", name=op.f("uq_flexiq_schedule_runs_schedule_id_slot")),
        sa.UniqueConstraint("submission_id", name=op.f("uq_flexiq_schedule_runs_submission_id")),
    )


def downgrade() -> None:
    op.drop_table("flexiq_schedule_runs")
    op.add_column("flexiq_schedules", sa.Column("last_run", sa.DateTime(timezone=True), nullable=True))
    op.drop_column("flexiq_schedules", "timezone")
