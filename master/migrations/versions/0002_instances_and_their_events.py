"""instances and their events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 21:58:14.316406
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instance_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("resource_pool", sa.String(length=255), nullable=False),
        sa.Column("instance_id", sa.String(length=255), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("instance_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_instance_events_instance_id"), ["instance_id"], unique=False
        )
        batch_op.create_index("ix_instance_events_pool_at", ["resource_pool", "at"], unique=False)

    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("resource_pool", sa.String(length=255), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("instance_type", sa.String(length=64), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=True),
        sa.Column("market", sa.String(length=16), nullable=False),
        sa.Column("price_per_hour", sa.Float(), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("launched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("terminated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("termination_reason", sa.Text(), nullable=True),
        sa.Column("launch_reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_instances_resource_pool"), ["resource_pool"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_instances_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instances_state"))
        batch_op.drop_index(batch_op.f("ix_instances_resource_pool"))

    op.drop_table("instances")
    with op.batch_alter_table("instance_events", schema=None) as batch_op:
        batch_op.drop_index("ix_instance_events_pool_at")
        batch_op.drop_index(batch_op.f("ix_instance_events_instance_id"))

    op.drop_table("instance_events")
