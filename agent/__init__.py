"""The Flotilla agent: the daemon on every instance that registers with the master over one
WebSocket, runs allocations as process groups, and ships their logs.

Modules: ``protocol`` (the wire messages, shared with the master), ``config`` (``AgentConfig``
and its loading), ``devices`` (slot detection), ``workdir`` (an allocation's directory and
context files), ``runner`` (processes and their logs), ``guard`` (kills those processes if the
agent dies), ``outbox`` (messages held while the master is unreachable), ``daemon`` (the
connection loop), ``cloudwatch`` (log shipping to CloudWatch Logs, also used by the master) and
``main`` (the ``det-agent`` command).
"""
