"""token scopes: login, task (report-only or acting as its owner), proxy; canonical usernames

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 14:40:00

Existing allocation tokens become ``task`` tokens; those of tasks other than trials keep acting
as their owner (as they did). Every other existing token stays a ``login`` session.
Usernames take their canonical lower-case form (``master.identity``) unless two users differ
only in case; those keep theirs for an operator to rename.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("user_sessions") as batch:
        batch.add_column(
            sa.Column("scope", sa.String(length=16), nullable=False, server_default="login")
        )
        batch.add_column(sa.Column("task_id", sa.String(length=128), nullable=True))
        batch.add_column(
            sa.Column("acts_as_owner", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute("UPDATE user_sessions SET scope = 'task' WHERE allocation_id IS NOT NULL")
    op.execute(
        "UPDATE user_sessions SET acts_as_owner = TRUE WHERE allocation_id IN ("
        " SELECT allocations.id FROM allocations JOIN tasks ON tasks.id = allocations.task_id"
        " WHERE tasks.task_type <> 'TRIAL')"
    )
    op.execute(
        "UPDATE users SET username = lower(username) WHERE username <> lower(username)"
        " AND NOT EXISTS (SELECT 1 FROM users AS other"
        " WHERE lower(other.username) = lower(users.username) AND other.id <> users.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("user_sessions") as batch:
        batch.drop_column("acts_as_owner")
        batch.drop_column("task_id")
        batch.drop_column("scope")
