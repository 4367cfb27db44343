"""agent sequences: per agent, its process's boot id and the last message sequence number applied

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 23:50:00

The agent protocol numbers every agent → master message; the master applies one only if its
number is above ``last_seq`` for that agent process, and echoes ``last_seq`` in ``welcome``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_sequences",
        sa.Column("agent_id", sa.String(length=255), nullable=False),
        sa.Column("boot_id", sa.String(length=64), nullable=False),
        sa.Column("booted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("agent_id"),
    )


def downgrade() -> None:
    op.drop_table("agent_sequences")
