"""Test-only fault injection for the CloudWatch Logs client; does nothing unless the variable
below is set in the environment of the process that ships.

moto accepts every call, so integration tests that need CloudWatch to throttle start the master
or agent with ``FLOTILLA_TEST_CLOUDWATCH_THROTTLES=<n>``: the first ``n`` PutLogEvents calls of
that process then fail with ``ThrottlingException`` (HTTP 400), as AWS answers when the
account's PutLogEvents rate quota is exceeded, without reaching the endpoint. It hooks
botocore's ``before-call.logs.PutLogEvents`` event, which may answer a call in place of the
service. Never set it in production.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from botocore.awsrequest import AWSResponse

THROTTLES_ENV = "FLOTILLA_TEST_CLOUDWATCH_THROTTLES"
THROTTLE_STATUS = 400


def install(client: Any, environ: Mapping[str, str] = os.environ) -> int:
    """Hook ``client`` if :data:`THROTTLES_ENV` asks for it; returns the number of throttles."""
    count = int(environ.get(THROTTLES_ENV, "0") or 0)
    if count <= 0:
        return 0
    remaining = [count]
    lock = threading.Lock()

    def throttle(**_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        with lock:
            if remaining[0] <= 0:
                return None
            remaining[0] -= 1
        response = AWSResponse("", THROTTLE_STATUS, {}, None)
        parsed = {
            "Error": {
                "Code": "ThrottlingException",
                "Message": f"Rate exceeded (injected by {THROTTLES_ENV})",
            },
            "ResponseMetadata": {"HTTPStatusCode": THROTTLE_STATUS},
        }
        return response, parsed

    client.meta.events.register("before-call.logs.PutLogEvents", throttle)
    return count
