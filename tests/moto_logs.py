"""A moto server for CloudWatch Logs tests, and reading back what reached it.

moto runs in server mode (``ThreadedMotoServer``) on a free loopback port, so shippers in
other threads and other processes (a real master, a real agent) reach it over HTTP like they
would reach AWS. It accepts any credentials; the fixtures set dummy ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on a free port; yields its endpoint URL and stops it afterwards."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def logs_reader(endpoint: str) -> Any:
    return boto3.client(
        "logs",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def stream_messages(client: Any, group: str, stream: str) -> list[str]:
    """Every message of ``stream``, oldest first; [] if the group or stream does not exist."""
    messages: list[str] = []
    token = None
    while True:
        kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream}
        kwargs |= {"nextToken": token} if token else {"startFromHead": True}
        try:
            page = client.get_log_events(**kwargs)
        except client.exceptions.ResourceNotFoundException:
            return []
        messages += [event["message"] for event in page["events"]]
        if page["nextForwardToken"] == token or not page["events"]:
            return messages
        token = page["nextForwardToken"]


def stream_names(client: Any, group: str) -> list[str]:
    try:
        pages = client.get_paginator("describe_log_streams").paginate(logGroupName=group)
        return [s["logStreamName"] for page in pages for s in page["logStreams"]]
    except client.exceptions.ResourceNotFoundException:
        return []
