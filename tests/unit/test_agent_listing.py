"""``GET /api/v1/agents`` renders each agent once and reuses its JSON while nothing it shows has
changed; whatever changes (its state, a slot, a task on it, its instance) shows at once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.protocol import DeviceType, SlotInfo
from master.api.agents import Held, RenderedAgents, agent_json
from master.scheduler.state import ConnectedAgent

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class _NoLink:
    async def send(self, message: Any) -> None:
        raise AssertionError("nothing is sent while rendering")

    async def close(self, reason: str) -> None:
        pass


def _agent(agent_id: str = "agent-1") -> ConnectedAgent:
    return ConnectedAgent(
        id=agent_id,
        pool="default",
        slots=[
            SlotInfo(id=n, type=DeviceType.CUDA, brand="A10G", uuid=f"GPU-{n}") for n in range(4)
        ],
        link=_NoLink(),
        version="test",
        addresses=["10.0.0.1"],
        registered_at=T0,
        connected_at=T0,
    )


def test_a_listed_agent_is_what_agent_json_says() -> None:
    agent = _agent()
    held = [Held("t.1", "t", "STATE_RUNNING", (1, 2))]
    instance = {"instanceType": "g5.xlarge", "market": "spot", "pricePerHour": 0.4}
    rendered = json.loads(RenderedAgents().render(agent, held, instance))
    assert rendered == json.loads(json.dumps(agent_json(agent, held, instance)))
    assert rendered["containers"]["t.1"]["devices"] == [
        rendered["slots"]["/agents/agent-1/slots/1"]["device"],
        rendered["slots"]["/agents/agent-1/slots/2"]["device"],
    ]
    assert rendered["slots"]["/agents/agent-1/slots/0"]["container"] is None
    assert rendered["slotStats"]["typeStats"]["TYPE_CUDA"] == {
        "total": 4,
        "disabled": 0,
        "draining": 0,
    }


def test_every_change_an_agent_shows_renders_it_again() -> None:
    cache = RenderedAgents()
    agent = _agent()
    held = [Held("t.1", "t", "STATE_STARTING", (0,))]
    first = cache.render(agent, held, None)
    assert cache.render(agent, list(held), None) is first  # nothing changed: reused

    def fresh(*args: Any) -> dict[str, Any]:
        data = cache.render(*args)
        assert data == json.dumps(agent_json(*args), separators=(",", ":")).encode()
        parsed: dict[str, Any] = json.loads(data)
        return parsed

    assert (
        fresh(agent, [Held("t.1", "t", "STATE_RUNNING", (0,))], None)["containers"]["t.1"]["state"]
        == "STATE_RUNNING"
    )
    agent.disabled_slots.add(3)
    assert fresh(agent, held, None)["slots"]["/agents/agent-1/slots/3"]["enabled"] is False
    agent.draining = True
    assert fresh(agent, held, None)["draining"] is True
    agent.idle_since = T0 + timedelta(minutes=5)
    assert fresh(agent, [], None)["idleSince"] == "2030-01-01T00:05:00.000000Z"
    assert fresh(agent, [], {"market": "spot"})["instance"] == {"market": "spot"}
    agent.enabled = False
    assert fresh(agent, [], {"market": "spot"})["enabled"] is False


def test_agents_gone_are_dropped() -> None:
    cache = RenderedAgents()
    for n in range(5):
        cache.render(_agent(f"agent-{n}"), [], None)
    cache.keep_only(["agent-1", "agent-3"])
    assert len(cache) == 2
