"""report idempotency keys: trial_metrics.report_key (unique per trial) and trial_report_keys

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 23:40:00

Every report a trial makes carries a key made when the report was made; the master stores
each key once per trial in the transaction that applies the report, so a retried request
(read timeout, dropped connection, master restart) is answered without being applied again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trial_metrics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("report_key", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "ux_trial_metrics_trial_report_key", ["trial_id", "report_key"], unique=True
        )
    op.create_table(
        "trial_report_keys",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["trial_id"], ["trials.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trial_id", "key"),
    )


def downgrade() -> None:
    op.drop_table("trial_report_keys")
    with op.batch_alter_table("trial_metrics", schema=None) as batch_op:
        batch_op.drop_index("ux_trial_metrics_trial_report_key")
        batch_op.drop_column("report_key")
