"""Shipping logs to CloudWatch Logs, shared by the master and the agent.

Modules: ``config`` (``CloudWatchConfig``, the ``logging:`` section of both configs),
``batcher`` (PutLogEvents' limits and batch assembly, pure), ``spool`` (lines on disk until
CloudWatch has them), ``shipper`` (the bounded queue and the two threads), ``sender`` (puts
batches: group and stream creation, retries with backoff, counters), ``client`` (the boto3
client, bent for throughput), ``handler`` (a ``logging.Handler`` and the one call that wires
a process up) and ``faults`` (test-only throttling). The config models import only ``config``,
so reading a config needs no boto3; ``det-master`` and ``det-agent`` import the rest.
``docs/logging.md`` is the user guide.
"""
