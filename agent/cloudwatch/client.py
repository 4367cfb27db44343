"""The boto3 CloudWatch Logs client the shipper uses, and how botocore is bent for it.

- botocore retries throttling and 5xx answers on its own (up to 5 attempts in the default
  mode), out of sight. The shipper counts and backs off itself and never gives up while the
  spool holds the lines, so botocore's retries are turned off (one attempt per call).
- botocore validates and serialises every event of a batch by walking its shape in Python,
  about 7 µs an event: more than everything else the shipper does per line. The batcher's
  events already are exactly the JSON botocore would produce and within every limit, so
  validation is off and :class:`_LogEventsSerializer` passes the event list through as it is.
- ``region`` unset means botocore's own lookup; if that finds nothing, starting fails here
  with a message that names the setting, instead of on the first call.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError, NoRegionError
from botocore.serialize import JSONSerializer

from agent.cloudwatch import faults

CONNECT_TIMEOUT = 5.0  # seconds
READ_TIMEOUT = 30.0


class ShipperError(Exception):
    """Shipping cannot start; the message names the setting to fix."""


def logs_client(region: str | None, endpoint_url: str | None) -> Any:
    """A CloudWatch Logs client: one attempt per call, no validation, fast event lists."""
    config = BotoConfig(
        retries={"total_max_attempts": 1},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        parameter_validation=False,
    )
    try:
        client = boto3.session.Session().client(
            "logs", region_name=region, endpoint_url=endpoint_url, config=config
        )
    except NoRegionError:
        raise ShipperError(
            "logging.region: not set, and neither AWS_REGION, AWS_DEFAULT_REGION nor "
            "~/.aws/config names a region"
        ) from None
    except ValueError as e:
        raise ShipperError(f"logging.endpoint_url: {e}") from None
    if type(client._serializer) is JSONSerializer:  # else botocore changed: keep its own
        client._serializer.__class__ = _LogEventsSerializer
    faults.install(client)
    return client


class _LogEventsSerializer(JSONSerializer):
    """botocore's JSON serializer, except that a list of ``InputLogEvent`` is used as is."""

    def _serialize_type_list(self, serialized: Any, value: Any, shape: Any, key: Any) -> None:
        if shape.member.name == "InputLogEvent":
            serialized[key] = value
        else:
            super()._serialize_type_list(serialized, value, shape, key)


def error_code(error: Exception) -> str:
    """The AWS error code of a ``ClientError``, else the exception's class name."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "Unknown"))
    return type(error).__name__
