"""A task's web service for the proxy tests: HTTP echo endpoints, compressed replies and a
WebSocket echo.

Runs as a command on a real agent, binds like every interactive task (harness.service) and
reports ready, so the master's proxy forwards /proxy/<task-id>/... here.
"""

import asyncio
import gzip

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from harness.service import TaskEnv, bind_host, free_port, report_ready


async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "authorization": request.headers.get("authorization"),
            "cookie": request.headers.get("cookie"),
            "bodyLength": len(body),
            "bodyHead": body[:16].decode("latin-1"),
        },
        headers={"set-cookie": "served=yes; Path=/"},
    )


async def chunks(request: Request) -> Response:
    async def body():  # type: ignore[no-untyped-def]
        for i in range(5):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0.05)

    return StreamingResponse(body(), media_type="text/plain")


TEXT = b"compressible text, " * 400  # 7,600 bytes


async def gzipped(request: Request) -> Response:
    """Gzip whatever the request accepts, as servers of precompressed files do."""
    return Response(
        gzip.compress(TEXT),
        media_type="text/plain",
        headers={
            "content-encoding": "gzip",
            "etag": '"text-v1"',
            "x-seen-accept-encoding": request.headers.get("accept-encoding", "(none)"),
        },
    )


async def brotli(request: Request) -> Response:
    """A coding the proxy cannot decode, sent whatever the request accepts."""
    return Response(b"not really brotli", headers={"content-encoding": "br"})


async def websocket_echo(websocket: WebSocket) -> None:
    requested = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=requested[0] if requested else None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "close please":
                await websocket.close(code=4001, reason="asked to")
                return
            if message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
            else:
                await websocket.send_text(message["text"])
    except WebSocketDisconnect:
        return


async def main() -> None:
    env = TaskEnv.from_environ()
    prefix = env.base_url.rstrip("/")
    app = Starlette(
        routes=[
            Route(prefix + "/chunks", chunks),
            Route(prefix + "/gzipped", gzipped, methods=["GET", "HEAD"]),
            Route(prefix + "/brotli", brotli),
            WebSocketRoute(prefix + "/ws", websocket_echo),
            Route(prefix + "/{rest:path}", echo, methods=["GET", "POST", "PUT", "DELETE"]),
        ]
    )
    host = bind_host(env.master_url)
    port = free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    await asyncio.to_thread(report_ready, env, host, port)
    print(f"serving on {host}:{port}", flush=True)
    await serving


asyncio.run(main())
