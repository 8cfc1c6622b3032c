"""A ``@traced`` async generator streamed by FastAPI on the real uvicorn server, to a real httpx client.

The token stream an inference server exists to produce: the generator's span is a
child of the request's, its own children nest under it, every request keeps to its
own trace, and a client that leaves mid-stream closes the stream early, in order.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

import autotrace
from autotrace import SpanKind, StatusCode, span, traced
from autotrace.asgi import TracingMiddleware
from tests.asgi_helpers import Uvicorn
from tests.conftest import all_spans

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
SEEN_IN_BODY: list[tuple[str, str]] = []  # (the request id the route set, the one the body saw)


@traced("generate")
async def generate(n: int, delay: float) -> AsyncIterator[str]:
    """Tokens one by one, each decoded in a span of its own, awaiting real sleeps between them."""
    for i in range(n):
        with span("decode", attributes={"step": i}):
            await asyncio.sleep(delay)
        yield f"tok{i} "


def app() -> FastAPI:
    api = FastAPI()

    @api.get("/generate/{n}")
    async def stream(n: int, delay: float = 0.0, rid: str = "-") -> StreamingResponse:
        REQUEST_ID.set(rid)

        async def tokens() -> AsyncIterator[str]:
            SEEN_IN_BODY.append((rid, REQUEST_ID.get()))
            async for token in generate(n, delay):
                yield token

        return StreamingResponse(tokens(), media_type="text/plain")

    return api


@pytest.fixture(scope="module")
def server() -> Iterator[Uvicorn]:
    """The app behind TracingMiddleware on uvicorn, for the whole module."""
    with Uvicorn(TracingMiddleware(app())) as running:
        yield running


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll until ``predicate()`` is truthy (spans are stored when the server's task ends them)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_traced_token_stream_nests_under_the_request_with_its_children(server: Uvicorn) -> None:
    """20 tokens: the stream's span is the request's child, 20 decode spans under it, counted, in one trace."""
    autotrace.configure(sample_rate=1.0)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.get("/generate/20", params={"delay": 0.001})
    assert r.status_code == 200
    assert r.text == "".join(f"tok{i} " for i in range(20))
    trace = r.headers["traceparent"].split("-")[1]
    spans = wait_for(lambda: [s for s in all_spans() if s.trace_id == trace and s.kind == SpanKind.SERVER], "request")
    (request,) = spans
    everything = [s for s in all_spans() if s.trace_id == trace]
    (gen,) = [s for s in everything if s.name == "generate"]
    decodes = [s for s in everything if s.name == "decode"]
    assert gen.parent_span_id == request.span_id
    assert len(decodes) == 20 and all(d.parent_span_id == gen.span_id for d in decodes)
    assert gen.attributes["autotrace.stream.items"] == 20
    assert gen.status.code == StatusCode.UNSET
    assert gen.start_time_unix_nano >= request.start_time_unix_nano
    assert gen.end_time_unix_nano <= request.end_time_unix_nano


def test_concurrent_streams_keep_to_their_own_trace_and_context(server: Uvicorn) -> None:
    """30 streams at once, interleaving at real awaits: each one trace, its own spans only, its own context."""
    autotrace.configure(sample_rate=1.0)
    SEEN_IN_BODY.clear()

    async def drive() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=30)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as c:
            return await asyncio.gather(
                *(c.get("/generate/5", params={"delay": 0.002, "rid": f"r{i}"}) for i in range(30))
            )

    responses = asyncio.run(drive())
    assert all(r.status_code == 200 for r in responses)
    traces = {r.headers["traceparent"].split("-")[1] for r in responses}
    assert len(traces) == 30
    wait_for(lambda: len([s for s in all_spans() if s.trace_id in traces]) == 30 * 7, "30 x 7 spans")
    for trace in traces:
        spans = [s for s in all_spans() if s.trace_id == trace]
        (gen,) = [s for s in spans if s.name == "generate"]
        assert sorted(s.name for s in spans) == sorted(["GET /generate/{n}", "generate"] + ["decode"] * 5)
        assert all(s.parent_span_id == gen.span_id for s in spans if s.name == "decode")
    assert sorted(SEEN_IN_BODY) == sorted((f"r{i}", f"r{i}") for i in range(30))


def test_a_client_leaving_mid_stream_closes_the_traced_stream_early(server: Uvicorn) -> None:
    """A client gone after 3 tokens of a long stream: the stream's span ends, closed early, not an error."""
    autotrace.configure(sample_rate=1.0)
    with httpx.Client(base_url=server.url, timeout=30) as c, c.stream("GET", "/generate/100000?delay=0.005") as r:
        trace = r.headers["traceparent"].split("-")[1]
        got = ""
        for chunk in r.iter_text():
            got += chunk
            if got.count("tok") >= 3:
                break
    gen = wait_for(lambda: [s for s in all_spans() if s.trace_id == trace and s.name == "generate"], "the stream")[0]
    assert gen.attributes["autotrace.stream.closed_early"] is True
    assert gen.status.code == StatusCode.UNSET
    assert 3 <= gen.attributes["autotrace.stream.items"] < 100_000
    request = wait_for(lambda: [s for s in all_spans() if s.trace_id == trace and s.kind == SpanKind.SERVER], "req")[0]
    assert gen.parent_span_id == request.span_id
    assert gen.end_time_unix_nano <= request.end_time_unix_nano
