"""The proxy's content-coding rules (master.proxy_encoding): who gets which bytes, and the
headers that go with them. The proxy itself is tested end to end in
tests/integration/test_proxy.py."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncGenerator

import pytest

from master.proxy_encoding import (
    ReplyPlan,
    UndecodableReply,
    accepted_codings,
    accepts,
    decoded,
    plan_reply,
    reply_headers,
)

TEXT = b"the quick brown fox jumps over the lazy dog\n" * 500


@pytest.mark.parametrize(
    ("accept_encoding", "coding", "taken"),
    [
        ([], "gzip", False),  # did not ask: gets no coding
        ([""], "gzip", False),
        (["gzip"], "gzip", True),
        (["GZIP;Q=0.5"], "gzip", True),
        (["x-gzip"], "gzip", True),
        (["gzip;q=0"], "gzip", False),
        (["gzip;q=0.0, *"], "gzip", False),  # listed refusal beats the wildcard
        (["*"], "deflate", True),
        (["*;q=0"], "gzip", False),
        (["deflate", "gzip"], "gzip", True),  # several header lines
        (["gzip;q=oops"], "gzip", False),  # unreadable q: not clearly accepted
        (["br"], "identity", True),
        (["identity;q=0"], "identity", True),  # the proxy has nothing else to send
    ],
)
def test_accept_encoding_is_read_with_q_values_and_wildcards(
    accept_encoding: list[str], coding: str, taken: bool
) -> None:
    assert accepts(accepted_codings(accept_encoding), coding) is taken


def test_a_reply_passes_through_only_when_every_coding_is_accepted() -> None:
    assert plan_reply(["gzip"], ["gzip"]) == ReplyPlan()
    assert plan_reply([], []) == ReplyPlan()
    assert plan_reply([], ["identity"]) == ReplyPlan()
    assert plan_reply([], ["gzip"]) == ReplyPlan(decode=("gzip",))
    assert plan_reply(["gzip"], ["deflate, gzip"]) == ReplyPlan(decode=("deflate", "gzip"))
    assert plan_reply(["br"], ["X-Gzip"]) == ReplyPlan(decode=("gzip",))
    with pytest.raises(UndecodableReply, match="encoded its reply with br, which the client"):
        plan_reply(["gzip"], ["br"])


def test_reply_headers_drop_hop_by_hop_and_the_servers_own_and_fit_a_decoded_body() -> None:
    upstream = [
        ("Server", "TornadoServer/6.4"),
        ("Date", "Mon, 07 Dec 2026 18:00:00 GMT"),
        ("Connection", "keep-alive"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Encoding", "gzip"),
        ("Content-Length", "120"),
        ("ETag", '"abc"'),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]
    assert reply_headers(upstream, ReplyPlan()) == [
        (b"content-encoding", b"gzip"),
        (b"content-length", b"120"),
        (b"etag", b'"abc"'),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
    assert reply_headers(upstream, ReplyPlan(decode=("gzip",))) == [
        (b"etag", b'W/"abc"'),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
    weak = [("ETag", 'W/"abc"')]
    assert reply_headers(weak, ReplyPlan(decode=("gzip",))) == [(b"etag", b'W/"abc"')]


async def _chunks(data: bytes, size: int) -> AsyncGenerator[bytes, None]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _decode(data: bytes, codings: tuple[str, ...], size: int = 7) -> bytes:
    async def collect() -> bytes:
        return b"".join([chunk async for chunk in decoded(_chunks(data, size), codings)])

    return asyncio.run(collect())


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoded", "codings"),
    [
        (gzip.compress(TEXT), ("gzip",)),
        (gzip.compress(TEXT[:1000]) + gzip.compress(TEXT[1000:]), ("gzip",)),  # two members
        (zlib.compress(TEXT), ("deflate",)),
        (_raw_deflate(TEXT), ("deflate",)),  # deflate sent without its zlib wrapper
        (gzip.compress(zlib.compress(TEXT)), ("deflate", "gzip")),  # applied in that order
        (b"", ()),
    ],
    # Named: an id made from the bytes would hold gzip's timestamp, and pytest-xdist's workers
    # must collect the same ids.
    ids=["gzip", "gzip-two-members", "deflate", "raw-deflate", "deflate-then-gzip", "empty"],
)
def test_decoding_undoes_each_coding_across_any_chunking(
    encoded: bytes, codings: tuple[str, ...]
) -> None:
    expected = TEXT if encoded else b""
    assert _decode(encoded, codings, size=7) == expected
    assert _decode(encoded, codings, size=65536) == expected


def test_a_corrupt_body_raises_rather_than_sending_garbage() -> None:
    with pytest.raises(zlib.error):
        _decode(b"\x1f\x8b\x08\x00" + b"not gzip at all" * 10, ("gzip",))


def test_the_upstream_body_is_closed_when_the_client_goes_away() -> None:
    closed = []

    async def upstream() -> AsyncGenerator[bytes, None]:
        try:
            for start in range(0, 4096, 64):
                yield gzip.compress(TEXT)[start : start + 64]
        finally:
            closed.append(True)

    async def read_one_then_leave() -> None:
        reading = decoded(upstream(), ("gzip",))
        async for _ in reading:
            break
        await reading.aclose()

    asyncio.run(read_one_then_leave())
    assert closed == [True]
