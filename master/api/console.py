"""The web console's files: ``/`` (index.html), ``/assets/*`` (Vite's hashed build output) and
the favicon, read from ``console_dir`` (default: ``console/dist`` inside this package).

How a browser uses them: ``index.html`` names the hashed bundles, so it must be revalidated on
every load (``no-cache``, with an ETag so an unchanged page is a 304) while a hashed file never
changes under its name and may be cached for a year (``immutable``). Text files go gzipped to
clients that accept it; the compressed bytes are kept in memory, keyed by the file's size and
mtime, so a rebuild is picked up without a restart.

What it assumes and promises:
- The console is public (it holds no data); everything it shows comes from /api/v1, which
  authenticates every request. So these routes answer without a session.
- Only regular files inside ``<console_dir>/assets`` are served under /assets: no directory
  listing, no dot-files, no ``..``, no symlink that leads outside.
- No catch-all route: /api, /proxy, /docs, /openapi.json and /info keep their own answers.
- The HTML carries a Content-Security-Policy allowing only this origin (images also as data:
  URIs), so a script injected into the page cannot load or send anything elsewhere, and the
  console cannot be framed (clickjacking). A notebook served by /proxy runs user JavaScript on
  this origin; that is why the API also requires the CSRF header (see master/api/auth.py).
- With no build, ``/`` is a 503 page that says how to build it, never a bare 404.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import mimetypes
import threading
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from master.api.errors import not_found
from master.state import MasterState

router = APIRouter()

PACKAGED_DIST = Path(__file__).resolve().parent.parent / "console" / "dist"
INDEX_CACHE = "no-cache"
ASSET_CACHE = "public, max-age=31536000, immutable"
# Text smaller than this gains little from gzip and costs a header either way.
GZIP_MIN_BYTES = 512
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webp": "image/webp",
}
COMPRESSIBLE = ("text/", "application/json", "image/svg+xml")
BUILD_COMMAND = "cd master/console && npm ci && npm run build"
MISSING_BUILD_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Flotilla: console not built</title></head>
<body>
<h1>The web console has not been built</h1>
<p>This master serves the console from <code>{dist}</code>, which has no
<code>index.html</code>. Build it from the repository root with</p>
<pre>{command}</pre>
<p>(or run <code>./scripts/demo</code>, which builds it), then reload this page.
Node.js 20 and npm are needed to build it.</p>
<p>The REST API works without it: <a href="/docs">/docs</a>.</p>
</body>
</html>
"""


def content_type(path: Path) -> str:
    known = CONTENT_TYPES.get(path.suffix.lower())
    if known:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


@dataclass(frozen=True)
class ConsoleFile:
    """One file's bytes as served, and the gzipped variant when worth sending."""

    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str


class ConsoleFiles:
    """Reads files of the build on demand and keeps them (and their gzip) in memory until the
    file on disk changes (size or mtime). Safe to call from the threadpool."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[tuple[int, int], ConsoleFile]] = {}
        self._lock = threading.Lock()

    def load(self, path: Path) -> ConsoleFile | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(path)
        if cached and cached[0] == key:
            return cached[1]
        body = path.read_bytes()
        kind = content_type(path)
        gzipped = None
        if len(body) >= GZIP_MIN_BYTES and kind.startswith(COMPRESSIBLE):
            gzipped = gzip.compress(body, compresslevel=9, mtime=0)
        file = ConsoleFile(
            body=body,
            gzipped=gzipped,
            content_type=kind,
            etag=hashlib.sha256(body).hexdigest()[:32],
        )
        with self._lock:
            self._cache[path] = (key, file)
        return file


_files = ConsoleFiles()


def console_dir(request: Request) -> Path:
    state: MasterState = request.app.state.master
    configured = state.config.console_dir
    return configured.expanduser() if configured else PACKAGED_DIST


def accepts_gzip(request: Request) -> bool:
    for part in request.headers.get("accept-encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def serve(request: Request, file: ConsoleFile, cache_control: str) -> Response:
    compressed = file.gzipped is not None and accepts_gzip(request)
    etag = f'"{file.etag}-gzip"' if compressed else f'"{file.etag}"'
    headers = {"Cache-Control": cache_control, "ETag": etag, **SECURITY_HEADERS}
    if file.gzipped is not None:
        headers["Vary"] = "Accept-Encoding"
    matches = [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]
    if etag in matches or "*" in matches:
        return Response(status_code=304, headers=headers)
    if compressed:
        headers["Content-Encoding"] = "gzip"
    body = file.gzipped if compressed and file.gzipped is not None else file.body
    return Response(content=body, media_type=file.content_type, headers=headers)


def missing_build(dist: Path) -> Response:
    page = MISSING_BUILD_PAGE.format(
        dist=html.escape(str(dist)), command=html.escape(BUILD_COMMAND)
    )
    return Response(
        content=page,
        status_code=503,
        media_type="text/html; charset=utf-8",
        headers={"Cache-Control": "no-store", **SECURITY_HEADERS},
    )


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
@router.api_route("/index.html", methods=["GET", "HEAD"], include_in_schema=False)
def index(request: Request) -> Response:
    dist = console_dir(request)
    file = _files.load(dist / "index.html")
    if file is None:
        return missing_build(dist)
    return serve(request, file, INDEX_CACHE)


def asset_path(root: Path, relative: str) -> Path | None:
    """``relative`` inside ``root`` when it names a plain file there, else None. Refuses empty
    or dot segments (``..``, ``.git``), backslashes and NUL, and symlinks out of ``root``."""
    parts = relative.split("/")
    if not relative or any(not p or p.startswith(".") or "\\" in p or "\0" in p for p in parts):
        return None
    candidate = root.joinpath(*parts)
    try:
        resolved = candidate.resolve(strict=True)
        inside = resolved.is_relative_to(root.resolve(strict=True))
    except (OSError, RuntimeError):
        return None
    return resolved if inside and resolved.is_file() else None


@router.api_route("/assets/{relative:path}", methods=["GET", "HEAD"], include_in_schema=False)
def asset(request: Request, relative: str) -> Response:
    path = asset_path(console_dir(request) / "assets", relative)
    file = _files.load(path) if path else None
    if file is None:
        raise not_found(f"console asset {relative!r}")
    return serve(request, file, ASSET_CACHE)


@router.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
@router.api_route("/favicon.svg", methods=["GET", "HEAD"], include_in_schema=False)
def favicon(request: Request) -> Response:
    name = request.url.path.rsplit("/", 1)[-1]
    file = _files.load(console_dir(request) / name)
    if file is None:
        raise not_found(f"console file {name!r}")
    # Not hashed: revalidated, like index.html.
    return serve(request, file, INDEX_CACHE)
