"""Treat every ``/api/`` request body as JSON, whatever its Content-Type says.

Determined's gateway does, so its clients rely on it: Determined's Python client sends JSON with
no Content-Type at all, and the curl recipes in its docs use ``-d '{…}'``, which labels the body
``application/x-www-form-urlencoded``. FastAPI would refuse both; this ASGI middleware relabels
them as ``application/json`` before routing. Multipart uploads keep their type.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

_JSON = (b"content-type", b"application/json")


class JsonBodyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            original = dict(scope["headers"]).get(b"content-type", b"")
            if not original.startswith(b"multipart/"):
                scope = {**scope, "headers": [*headers, _JSON]}
        await self.app(scope, receive, send)
