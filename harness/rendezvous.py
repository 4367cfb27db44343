"""Where a trial's workers sit when its slots span several agents, learned from the master.

Each agent of such a trial runs ``python -m harness.launch`` with only its own slots
(``DET_SLOT_IDS``). To give its workers global ranks and the chief's address, the launcher posts
``POST /api/v1/allocations/{id}/rendezvous`` ``{"agentId", "address", "slots", "port"}`` — its
agent (``DET_AGENT_ID``), the address facing the master, its slot count and a port free there —
and repeats (each post is a long poll) until the master answers ``ready``, which it does once
every agent of the allocation has posted. The answer lists the members ordered by agent id with
their ``rankOffset``; the first is the chief, whose address and port (``masterAddr``,
``masterPort``) every worker uses for ``torch.distributed``. See ``master/rendezvous.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.client import APIError, MasterClient, MasterUnreachableError
from harness.service import TaskEnv, bind_host, free_port

log = logging.getLogger("harness.rendezvous")

# How long a launcher waits for the other agents of its trial (they may be pulling images or
# still being provisioned) before the trial fails.
TIMEOUT_SECONDS = 600.0
# One long poll; the master holds a post at most 60 s.
POLL_SECONDS = 30
# Pause before asking again when the master did not answer (it may be restarting).
RETRY_SECONDS = 2.0


class RendezvousError(RuntimeError):
    """The agents of a trial could not meet; the message says why."""


@dataclass(frozen=True)
class Layout:
    """Where this agent's workers sit among all of a trial's workers."""

    world_size: int
    rank_offset: int  # the global rank of local rank 0
    local_size: int
    master_addr: str
    master_port: int

    def rank(self, local_rank: int) -> int:
        return self.rank_offset + local_rank


def single_agent_layout(slots: int) -> Layout:
    """Every worker on this agent: the chief listens on loopback."""
    return Layout(slots, 0, slots, "127.0.0.1", free_port("127.0.0.1"))


def layout_from_answer(answer: Mapping[str, Any], agent_id: str, world_size: int) -> Layout:
    """This agent's layout from a ``ready`` rendezvous answer, checked for consistency."""
    members = answer.get("members") or []
    total = sum(int(m["slots"]) for m in members)
    if total != world_size:
        raise RendezvousError(
            f"the rendezvous gathered {total} slots, but the trial has {world_size}"
        )
    mine = [m for m in members if m.get("agentId") == agent_id]
    if not mine:
        raise RendezvousError(f"the rendezvous answer does not list this agent '{agent_id}'")
    addr, port = answer.get("masterAddr"), answer.get("masterPort")
    if not addr or not port:
        raise RendezvousError("the rendezvous answer names no chief address and port")
    return Layout(
        world_size=total,
        rank_offset=int(mine[0]["rankOffset"]),
        local_size=int(mine[0]["slots"]),
        master_addr=str(addr),
        master_port=int(port),
    )


def wait_until_ready(
    post: Callable[[int], Mapping[str, Any]],
    timeout: float = TIMEOUT_SECONDS,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Mapping[str, Any]:
    """Post (``post(timeout_seconds)``) until the answer is ready; RendezvousError after
    ``timeout`` seconds, naming the agents that never arrived."""
    deadline = clock() + timeout
    missing: list[str] = []
    unreachable: str | None = None
    while (remaining := deadline - clock()) > 0:
        try:
            answer = post(max(1, min(POLL_SECONDS, int(remaining))))
        except MasterUnreachableError as exc:
            unreachable = str(exc)
            log.warning("rendezvous: %s; asking again", exc)
            sleep(min(RETRY_SECONDS, max(remaining, 0.0)))
            continue
        except APIError as exc:
            raise RendezvousError(f"the master refused this agent's rendezvous: {exc}") from None
        unreachable = None
        if answer.get("ready"):
            return answer
        now_missing = [str(agent) for agent in answer.get("missing") or []]
        if now_missing != missing:
            log.info("rendezvous: waiting for agent(s) %s", ", ".join(now_missing))
        missing = now_missing
    if unreachable is not None:
        raise RendezvousError(f"gave up after {timeout:.0f}s: {unreachable}")
    raise RendezvousError(
        f"gave up after {timeout:.0f}s waiting for agent(s) {', '.join(missing) or '?'} of "
        "this trial to start its launcher"
    )


def join(environ: Mapping[str, str], local_slots: int, world_size: int) -> Layout:
    """Meet the trial's other agents through the master; this agent's layout once all are
    there."""
    try:
        task = TaskEnv.from_environ(dict(environ))
    except RuntimeError as exc:
        raise RendezvousError(str(exc)) from None
    agent_id = environ.get("DET_AGENT_ID", "").strip()
    if not agent_id:
        raise RendezvousError("DET_AGENT_ID is unset (the agent sets it for every task)")
    address = bind_host(task.master_url)
    body = {
        "agentId": agent_id,
        "address": address,
        "slots": local_slots,
        "port": free_port(address),
    }
    path = f"/api/v1/allocations/{task.allocation_id}/rendezvous"
    log.info(
        "rendezvous: agent '%s' has %d of %d slots; waiting for the others",
        agent_id,
        local_slots,
        world_size,
    )
    with MasterClient(task.master_url, token=task.token, timeout=POLL_SECONDS + 30) as client:

        def post(timeout_seconds: int) -> Mapping[str, Any]:
            answer: Mapping[str, Any] = client.post(
                path, body, params={"timeoutSeconds": timeout_seconds}
            )
            return answer

        answer = wait_until_ready(post)
    layout = layout_from_answer(answer, agent_id, world_size)
    log.info(
        "rendezvous: ranks %d..%d of %d here; chief at %s:%d",
        layout.rank_offset,
        layout.rank_offset + layout.local_size - 1,
        layout.world_size,
        layout.master_addr,
        layout.master_port,
    )
    return layout
