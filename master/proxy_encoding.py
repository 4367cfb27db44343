"""Content codings and the headers a proxied reply carries.

How the outside world behaves, and what the proxy does about it:

- A task's server (Jupyter, TensorBoard, a user's own) compresses when the request's
  ``Accept-Encoding`` allows it, and some compress whatever was asked (precompressed static
  files). RFC 9110 §12.5.3 reads a request *without* ``Accept-Encoding`` as "any coding", but the
  clients that send none (curl without ``--compressed``, scripts on raw sockets) do not decode:
  here a client that did not ask for a coding never gets one.
- So the upstream request carries exactly the client's ``Accept-Encoding`` (none when it sent
  none: the upstream client has no default), and the reply's body goes through byte for byte
  with its ``Content-Encoding`` when the client accepts every coding in it. Otherwise the proxy
  decodes it (gzip and deflate, the codings servers use without being asked), drops
  ``Content-Encoding`` and ``Content-Length`` (the decoded length is known only at the end) and
  weakens a strong ``ETag`` (it named the encoded bytes). A coding it cannot decode and the
  client refused is a 502 that names it, never bytes the client cannot read.
- The server the master runs in (uvicorn, started by master/main.py with its defaults) writes its
  own ``date`` and ``server`` on every reply, so the upstream's are dropped: a reply carries one
  of each, as behind nginx.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass

# RFC 7230 §6.1 hop-by-hop headers, plus those the proxy sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
# Written by the master's own HTTP server on every reply (uvicorn's defaults).
SERVER_WRITTEN = frozenset({"date", "server"})
# RFC 9110 §8.4.1: "x-gzip" and "x-compress" are aliases kept for old clients.
ALIASES = {"x-gzip": "gzip", "x-compress": "compress"}
DECODABLE = ("gzip", "deflate")
# Replies without a body whatever their headers say (RFC 9110 §6.4.1).
BODILESS_STATUSES = frozenset({204, 304})


def _coding(token: str) -> str:
    name = token.strip().lower()
    return ALIASES.get(name, name)


def accepted_codings(values: Iterable[str]) -> dict[str, float]:
    """``Accept-Encoding`` header values (one per header line) as {coding: q}. A malformed
    q-value counts as 0: a coding is used only where the client clearly accepts it."""
    accepted: dict[str, float] = {}
    for value in values:
        for item in value.split(","):
            name, _, params = item.partition(";")
            coding = _coding(name)
            if not coding:
                continue
            q = 1.0
            for param in params.split(";"):
                key, _, raw = param.partition("=")
                if key.strip().lower() == "q":
                    try:
                        q = float(raw.strip())
                    except ValueError:
                        q = 0.0
            accepted[coding] = q
    return accepted


def accepts(accepted: dict[str, float], coding: str) -> bool:
    """Whether a client whose ``Accept-Encoding`` parsed to ``accepted`` takes ``coding``:
    listed with q > 0, or covered by ``*`` with q > 0 and not listed otherwise. ``identity``
    is always taken (the proxy has nothing else to offer)."""
    if coding == "identity":
        return True
    if coding in accepted:
        return accepted[coding] > 0
    return accepted.get("*", 0.0) > 0


def content_codings(values: Iterable[str]) -> list[str]:
    """A reply's ``Content-Encoding`` values as codings in the order they were applied."""
    codings = [_coding(item) for value in values for item in value.split(",")]
    return [c for c in codings if c and c != "identity"]


@dataclass(frozen=True)
class ReplyPlan:
    """What the proxy does with an upstream reply's body: pass it through (``decode`` empty)
    or undo ``decode`` (codings in the order the upstream applied them) before sending it."""

    decode: tuple[str, ...] = ()


class UndecodableReply(Exception):
    """The upstream used a coding the client refused and the proxy cannot decode."""

    def __init__(self, codings: list[str]) -> None:
        self.codings = codings
        super().__init__(
            f"encoded its reply with {', '.join(codings)}, which the client did not accept "
            f"(Accept-Encoding) and the proxy cannot decode (it decodes {', '.join(DECODABLE)})"
        )


def plan_reply(client_accept_encoding: list[str], reply_content_encoding: list[str]) -> ReplyPlan:
    """Pass the body through when the client accepts every coding in it, else decode it.
    Raises :class:`UndecodableReply` when decoding is needed and a coding is not decodable."""
    codings = content_codings(reply_content_encoding)
    accepted = accepted_codings(client_accept_encoding)
    if all(accepts(accepted, c) for c in codings):
        return ReplyPlan()
    undecodable = [c for c in codings if c not in DECODABLE]
    if undecodable:
        raise UndecodableReply(undecodable)
    return ReplyPlan(decode=tuple(codings))


def reply_headers(
    upstream: Iterable[tuple[str, str]], plan: ReplyPlan
) -> list[tuple[bytes, bytes]]:
    """The upstream reply's headers as the proxy sends them: no hop-by-hop headers, none the
    master's server writes itself, and, when the body is decoded, no coding or length and a
    weak ``ETag``."""
    headers: list[tuple[bytes, bytes]] = []
    for name, value in upstream:
        key = name.lower()
        if key in HOP_BY_HOP or key in SERVER_WRITTEN:
            continue
        if plan.decode:
            if key in ("content-encoding", "content-length"):
                continue
            if key == "etag" and not value.startswith("W/"):
                value = f"W/{value}"
        headers.append((key.encode("latin-1"), value.encode("latin-1")))
    return headers


class _Inflater:
    """One coding's streaming decoder. gzip may come as several members back to back
    (RFC 1952 §2.2); deflate is meant to be zlib-wrapped (RFC 9110 §8.4.1.2) but some servers
    send it raw, so a stream that does not start as zlib is read as raw deflate."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._wbits = 16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS
        self._inflate = zlib.decompressobj(self._wbits)
        self._started = False

    def feed(self, data: bytes) -> bytes:
        if self.coding == "deflate" and not self._started and data:
            self._started = True
            try:
                return self._inflate.decompress(data)
            except zlib.error:
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        out = self._inflate.decompress(data)
        while self.coding == "gzip" and self._inflate.eof and self._inflate.unused_data:
            rest = self._inflate.unused_data
            self._inflate = zlib.decompressobj(self._wbits)
            out += self._inflate.decompress(rest)
        return out

    def flush(self) -> bytes:
        return self._inflate.flush()


async def decoded(
    chunks: AsyncGenerator[bytes, None], codings: tuple[str, ...]
) -> AsyncGenerator[bytes, None]:
    """``chunks`` with ``codings`` undone, last applied first; ``chunks`` is closed when this
    ends, however it ends. A corrupt body raises ``zlib.error`` mid-stream: the client's
    connection is then cut, never sent garbage."""
    inflaters = [_Inflater(c) for c in reversed(codings)]
    try:
        async for chunk in chunks:
            out = chunk
            for inflater in inflaters:
                out = inflater.feed(out)
            if out:
                yield out
        tail = b""  # what each stage holds back, fed to the next one
        for inflater in inflaters:
            tail = (inflater.feed(tail) if tail else b"") + inflater.flush()
        if tail:
            yield tail
    finally:
        await chunks.aclose()
