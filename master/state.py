"""The master's process-wide objects, hung on ``app.state.master``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from master.agent_sequences import AgentSequences
from master.config import MasterConfig
from master.db import Database
from master.logs import LogStore
from master.scheduler.loop import Scheduler

if TYPE_CHECKING:
    from master.provisioning import Provisioning


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class MasterState:
    config: MasterConfig
    db: Database
    logs: LogStore
    scheduler: Scheduler
    cluster_id: str
    master_id: str
    started_at: datetime
    join_token: str
    clock: Callable[[], datetime] = utc_now
    provisioning: Provisioning | None = None
    # The agent protocol's sequence numbers: what was applied from each agent process.
    sequences: AgentSequences = field(init=False)

    def __post_init__(self) -> None:
        self.sequences = AgentSequences(self.db, self.logs.writes)
