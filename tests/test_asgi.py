"""autotrace.asgi.TracingMiddleware on the real uvicorn server, driven by a real httpx client.

FastAPI and plain Starlette apps: route names, attributes, the caller's trace,
streaming and SSE, exceptions, disconnects, concurrency, threads, hostile
clients, and failures inside tracing that must not reach the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

import autotrace
from autotrace import SpanKind, StatusCode, span, traced
from autotrace.asgi import TracingMiddleware
from autotrace.server import start_in_background
from autotrace.tracer import errors
from tests.asgi_helpers import Uvicorn
from tests.conftest import all_spans
from tests.server_helpers import fetch

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll until ``predicate()`` is truthy (the server ends a span just after the last byte)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; spans: {[s.name for s in all_spans()]}")
        time.sleep(0.01)


def server_spans() -> list[autotrace.Span]:
    return [s for s in all_spans() if s.kind == SpanKind.SERVER]


def one_server_span(name: str) -> autotrace.Span:
    """The one SERVER span named ``name``, once it is stored."""
    found = wait_for(lambda: [s for s in server_spans() if s.name == name], f"server span {name!r}")
    assert len(found) == 1, found
    return found[0]


@traced
def tokenize(text: str) -> list[str]:
    return text.split()


RAISED: list[BaseException] = []
SERVER_SAW: list[BaseException] = []


def fastapi_app() -> FastAPI:
    api = FastAPI()

    @api.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        with span("lookup"):
            await asyncio.sleep(0)
        words = await asyncio.to_thread(tokenize, "a b c")  # copies the context into the thread
        return {"item": item_id, "words": len(words)}

    @api.get("/sync")
    def sync_route() -> dict[str, Any]:  # run in Starlette's threadpool
        with span("in threadpool"):
            return {"words": len(tokenize("one two"))}

    @api.get("/stream")
    async def stream() -> StreamingResponse:
        async def tokens() -> AsyncIterator[str]:
            for i in range(20):
                with span("decode", attributes={"step": i}):
                    await asyncio.sleep(0)
                yield f"tok{i} "

        return StreamingResponse(tokens(), media_type="text/plain")

    @api.get("/sse")
    async def sse() -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            for i in range(5):
                yield f"data: {json.dumps({'token': i})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @api.get("/endless")
    async def endless() -> StreamingResponse:
        async def chunks() -> AsyncIterator[str]:
            for i in range(100_000):
                await asyncio.sleep(0.005)
                yield f"chunk{i}\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    @api.get("/boom")
    async def boom() -> None:
        exc = ValueError("boom")
        RAISED.append(exc)
        raise exc

    @api.get("/missing")
    async def missing() -> None:
        raise HTTPException(status_code=404)

    @api.get("/unavailable")
    async def unavailable() -> None:
        raise HTTPException(status_code=503)

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/own-header")
    async def own_header() -> PlainTextResponse:
        return PlainTextResponse(
            "x", headers={"traceparent": "00-11111111111111111111111111111111-2222222222222222-01"}
        )

    return api


def keep_exceptions(app: Any) -> Any:
    """An outer ASGI app standing in for the server: it keeps what the middleware raises."""

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        except BaseException as exc:
            SERVER_SAW.append(exc)
            raise

    return outer


@pytest.fixture(scope="module")
def fastapi_server() -> Iterator[Uvicorn]:
    """FastAPI behind TracingMiddleware on uvicorn, for the whole module."""
    with Uvicorn(keep_exceptions(TracingMiddleware(fastapi_app()))) as server:
        yield server


@pytest.fixture
def client(fastapi_server: Uvicorn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fastapi_server.url, timeout=30) as c:
        yield c


def test_async_route_is_one_server_span_in_the_callers_trace(client: httpx.Client) -> None:
    """An async route: span `GET /items/{item_id}` under the caller's traceparent, its children, semconv attributes."""
    r = client.get("/items/7?api_key=s3cret&page=2", headers={"traceparent": TRACEPARENT, "tracestate": "k=v"})
    assert r.status_code == 200 and r.json() == {"item": 7, "words": 3}
    s = one_server_span("GET /items/{item_id}")
    assert s.trace_id == TRACE and s.parent_span_id == PARENT
    assert r.headers["traceparent"] == f"00-{TRACE}-{s.span_id}-01"
    a = s.attributes
    assert a["http.request.method"] == "GET" and a["http.route"] == "/items/{item_id}"
    assert a["url.path"] == "/items/7" and a["url.scheme"] == "http"
    assert a["url.query"] == "api_key=REDACTED&page=2"
    assert a["http.response.status_code"] == 200 and a["network.protocol.version"] == "1.1"
    assert a["server.address"] == "127.0.0.1" and isinstance(a["server.port"], int)
    assert a["client.address"] == "127.0.0.1" and a["user_agent.original"].startswith("python-httpx/")
    assert s.status.code == StatusCode.UNSET
    children = wait_for(lambda: [c for c in all_spans() if c.parent_span_id == s.span_id], "children")
    wait_for(lambda: len([c for c in all_spans() if c.parent_span_id == s.span_id]) == 2, "both children")
    names = sorted(c.name for c in all_spans() if c.parent_span_id == s.span_id)
    assert names == ["lookup", "tokenize"], children  # tokenize ran in asyncio.to_thread's thread


def test_sync_route_in_starlettes_threadpool_nests_under_the_request(client: httpx.Client) -> None:
    """A sync route runs in Starlette's threadpool; its span() and @traced calls are children of the request."""
    r = client.get("/sync")
    assert r.status_code == 200
    s = one_server_span("GET /sync")
    inner = wait_for(lambda: [c for c in all_spans() if c.name == "in threadpool"], "threadpool span")[0]
    assert inner.parent_span_id == s.span_id and inner.trace_id == s.trace_id
    tok = wait_for(lambda: [c for c in all_spans() if c.name == "tokenize"], "tokenize")[0]
    assert tok.parent_span_id == inner.span_id


def test_streaming_response_of_20_chunks_keeps_the_span_open_to_the_last_chunk(client: httpx.Client) -> None:
    """A StreamingResponse of 20 chunks: 20 chunks counted, time to first chunk recorded, span ends after them."""
    with client.stream("GET", "/stream") as r:
        body = b"".join(r.iter_raw())
    assert body.decode().split() == [f"tok{i}" for i in range(20)]
    s = one_server_span("GET /stream")
    assert s.attributes["autotrace.response.chunks"] == 20
    ttfc = s.attributes["autotrace.response.time_to_first_chunk_s"]
    assert isinstance(ttfc, float) and 0 < ttfc <= s.duration_ns / 1e9  # type: ignore[operator]
    decodes = [c for c in all_spans() if c.name == "decode"]
    assert len(decodes) == 20 and all(d.parent_span_id == s.span_id for d in decodes)
    assert s.end_time_unix_nano >= max(d.end_time_unix_nano or 0 for d in decodes)  # type: ignore[operator]
    assert not [k for k in s.attributes if k.startswith("gen_ai.")]  # not a model-call span
    assert s.status.code == StatusCode.UNSET


def test_server_sent_events_route_is_traced_whole(client: httpx.Client) -> None:
    """An SSE route: the events arrive intact and the span counts them as chunks."""
    with client.stream("GET", "/sse") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and len(lines) == 6
    s = one_server_span("GET /sse")
    assert s.attributes["autotrace.response.chunks"] == 6
    assert r.headers["traceparent"].split("-")[2] == s.span_id


def test_route_that_raises_is_error_and_the_exception_reaches_the_server_unchanged(client: httpx.Client) -> None:
    """An exception: recorded as an event, status ERROR with its description, the same object re-raised."""
    RAISED.clear()
    SERVER_SAW.clear()
    r = client.get("/boom")
    assert r.status_code == 500
    s = one_server_span("GET /boom")
    assert s.status.code == StatusCode.ERROR and s.status.description == "ValueError: boom"
    assert s.attributes["error.type"] == "ValueError" and s.attributes["http.response.status_code"] == 500
    (event,) = [e for e in s.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "ValueError"
    wait_for(lambda: SERVER_SAW, "the exception at the server")
    assert SERVER_SAW[0] is RAISED[0]


def test_4xx_leaves_the_server_span_unset_and_5xx_makes_it_error(client: httpx.Client) -> None:
    """HTTP conventions for SERVER spans: 4xx is the client's fault (UNSET), 5xx is ERROR; no route is `{method}`."""
    assert client.get("/missing").status_code == 404
    assert client.get("/unavailable").status_code == 503
    assert client.get("/no/such/route").status_code == 404
    missing = one_server_span("GET /missing")
    assert missing.status.code == StatusCode.UNSET and missing.attributes["http.response.status_code"] == 404
    unavailable = one_server_span("GET /unavailable")
    assert unavailable.status.code == StatusCode.ERROR and unavailable.attributes["error.type"] == "503"
    unrouted = one_server_span("GET")
    assert unrouted.attributes["url.path"] == "/no/such/route" and "http.route" not in unrouted.attributes


def test_client_that_disconnects_after_3_chunks_gives_an_error_span_with_an_event(fastapi_server: Uvicorn) -> None:
    """A client gone after 3 chunks: the span ends, ERROR, with an http.request.disconnected event."""
    with httpx.Client(base_url=fastapi_server.url, timeout=30) as c, c.stream("GET", "/endless") as r:
        seen = 0
        for line in r.iter_lines():
            if line:
                seen += 1
            if seen == 3:
                break
    s = one_server_span("GET /endless")
    assert s.status.code == StatusCode.ERROR
    (event,) = [e for e in s.events if e.name == "http.request.disconnected"]
    assert event.attributes["autotrace.response.chunks"] >= 3
    assert 3 <= s.attributes["autotrace.response.chunks"] < 100_000


def test_100_concurrent_requests_each_stay_in_their_own_trace(fastapi_server: Uvicorn) -> None:
    """100 concurrent requests with distinct traceparents: each one trace, right parent, its own children only."""
    parents = {f"{i + 1:032x}": f"{i + 1:016x}" for i in range(100)}

    async def drive() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=fastapi_server.url, timeout=60, limits=limits) as c:
            return await asyncio.gather(
                *(
                    c.get(f"/items/{i}", headers={"traceparent": f"00-{trace}-{parent}-01"})
                    for i, (trace, parent) in enumerate(parents.items())
                )
            )

    responses = asyncio.run(drive())
    assert all(r.status_code == 200 for r in responses)
    wait_for(lambda: len([s for s in all_spans() if s.trace_id in parents]) == 300, "300 spans")
    by_trace: dict[str, list[autotrace.Span]] = {}
    for s in all_spans():
        by_trace.setdefault(s.trace_id, []).append(s)
    for trace, parent in parents.items():
        spans = by_trace[trace]
        (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
        assert server.parent_span_id == parent
        assert sorted(s.name for s in spans) == ["GET /items/{item_id}", "lookup", "tokenize"]
        assert all(s.parent_span_id == server.span_id for s in spans if s is not server)
    for r in responses:
        trace = r.headers["traceparent"].split("-")[1]
        assert trace in parents


def test_excluded_paths_pass_through_untraced(client: httpx.Client) -> None:
    """/health (excluded by default) answers without a span or a traceparent header."""
    r = client.get("/health")
    assert r.status_code == 200 and "traceparent" not in r.headers
    client.get("/sync")  # a traced request after it, so its absence is not a matter of timing
    one_server_span("GET /sync")
    assert not [s for s in all_spans() if s.attributes.get("url.path") == "/health"]


def test_an_apps_own_traceparent_header_is_kept(client: httpx.Client) -> None:
    """A response that sets its own traceparent keeps it; no second one is added."""
    r = client.get("/own-header")
    assert r.headers.get_list("traceparent") == ["00-11111111111111111111111111111111-2222222222222222-01"]


def test_unsampled_request_records_nothing_but_still_answers_a_traceparent(fastapi_server: Uvicorn) -> None:
    """A caller that did not sample (flags 00): no span stored, the response still names the trace (flags 00)."""
    with httpx.Client(base_url=fastapi_server.url, timeout=30) as c:
        r = c.get("/items/1", headers={"traceparent": f"00-{TRACE}-{PARENT}-00"})
        assert r.status_code == 200
        c.get("/sync")
    one_server_span("GET /sync")
    assert r.headers["traceparent"].startswith(f"00-{TRACE}-") and r.headers["traceparent"].endswith("-00")
    assert not [s for s in all_spans() if s.trace_id == TRACE]


# -- a plain Starlette app, mounts, lifespan, websockets --------------------------------------


def starlette_app(events: list[str]) -> Starlette:
    async def user(request: Request) -> JSONResponse:
        with span("load user"):
            return JSONResponse({"uid": request.path_params["uid"]})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    return Starlette(
        routes=[
            Mount("/api", routes=[Route("/users/{uid}", user)]),
            Route("/plain", lambda request: PlainTextResponse("plain")),
            WebSocketRoute("/ws", ws),
        ],
        lifespan=lifespan,
    )


def test_plain_starlette_app_with_a_mount_and_lifespan_on_uvicorn() -> None:
    """Starlette: a mounted route is named with its full template; lifespan runs through, untraced."""
    events: list[str] = []
    with Uvicorn(TracingMiddleware(starlette_app(events)), lifespan="on") as server:
        assert events == ["startup"]
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.get("/api/users/42", headers={"traceparent": TRACEPARENT}).json() == {"uid": "42"}
            assert c.get("/plain").text == "plain"
        s = one_server_span("GET /api/users/{uid}")
        assert s.parent_span_id == PARENT and s.attributes["http.route"] == "/api/users/{uid}"
        child = wait_for(lambda: [c for c in all_spans() if c.name == "load user"], "child")[0]
        assert child.parent_span_id == s.span_id
        one_server_span("GET /plain")
    assert events == ["startup", "shutdown"]
    assert len(server_spans()) == 2  # nothing for lifespan


async def websocket_session(app: Any, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """One WebSocket connection to ``app`` through the ASGI protocol, as a server drives it; what the app sent."""
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
    scope = {"type": "websocket", "path": "/ws", "headers": headers, "scheme": "ws", "asgi": {"version": "3.0"}}

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_websockets_pass_through_untouched_by_default_and_get_a_span_when_asked() -> None:
    """A WebSocket connection is not traced by default; trace_websockets=True gives it one SERVER span."""
    events: list[str] = []
    headers = [(b"traceparent", TRACEPARENT.encode())]
    sent = asyncio.run(websocket_session(TracingMiddleware(starlette_app(events)), headers))
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[0].get("headers") in (None, [])  # untouched: no traceparent added
    assert all_spans() == []
    traced_sent = asyncio.run(
        websocket_session(TracingMiddleware(starlette_app(events), trace_websockets=True), headers)
    )
    assert [m["type"] for m in traced_sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    s = one_server_span("WEBSOCKET /ws")
    assert s.parent_span_id == PARENT and s.status.code == StatusCode.UNSET


def test_a_websocket_client_closing_first_is_not_an_error() -> None:
    """A WebSocket client that closes the connection ends it normally: the span stays UNSET, no disconnect event."""

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    inbox = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hi"}]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Any) -> None:
        pass

    scope = {"type": "websocket", "path": "/chat", "headers": []}
    asyncio.run(TracingMiddleware(echo, trace_websockets=True)(scope, receive, send))
    (s,) = server_spans()
    assert s.name == "WEBSOCKET" and s.status.code == StatusCode.UNSET and not s.events


# -- hostile clients, and failures inside tracing -----------------------------------------------


def raw_request(port: int, data: bytes) -> bytes:
    """Send raw bytes on a fresh connection; the whole answer (until the server closes or 10 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        with contextlib.suppress(TimeoutError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and b'"item"' in b"".join(chunks):
                    break
    return b"".join(chunks)


def test_hostile_headers_are_bounded_and_bad_traceparents_start_a_new_trace(fastapi_server: Uvicorn) -> None:
    """Huge User-Agent, 200 headers, a long path, bad or duplicated traceparents: answered, bounded, new traces."""
    hostile = [
        {"traceparent": "00-" + "f" * 5000},
        {"traceparent": f"ff-{TRACE}-{PARENT}-01"},
        {"traceparent": f"00-{'0' * 32}-{PARENT}-01"},
        {"traceparent": b"\xff\xfe garbage", "tracestate": "=" * 4000},
    ]
    with httpx.Client(base_url=fastapi_server.url, timeout=30) as c:
        for headers in hostile:
            assert c.get("/items/1", headers=headers).status_code == 200
        many = [(f"x-h{i}", "v" * 40) for i in range(200)] + [("user-agent", "A" * 8000)]
        assert c.get("/items/2", headers=many).status_code == 200
        long_path = "/items/3?" + "q=" + "z" * 6000
        assert c.get(long_path).status_code == 200
    wait_for(lambda: len(server_spans()) == 6, "six server spans")
    for s in server_spans():
        assert s.trace_id != TRACE and s.parent_span_id is None
        assert len(s.attributes.get("user_agent.original", "")) <= 513
        assert len(s.attributes.get("url.query", "")) <= 2049
    # Two traceparent headers: the W3C rule is a new trace.
    data = (
        f"GET /items/4 HTTP/1.1\r\nHost: x\r\ntraceparent: {TRACEPARENT}\r\n"
        f"traceparent: 00-{'1' * 32}-{'2' * 16}-01\r\nConnection: close\r\n\r\n"
    ).encode()
    assert raw_request(fastapi_server.port, data).startswith(b"HTTP/1.1 200")
    wait_for(lambda: len(server_spans()) == 7, "the seventh span")
    assert all(s.trace_id not in (TRACE, "1" * 32) for s in server_spans())


def test_a_client_gone_before_the_response_does_not_break_the_server(fastapi_server: Uvicorn) -> None:
    """Half a request, then a hang-up, then a request cut mid-body: the server still answers the next client."""
    for data in (b"GET /items/1 HTTP/1.1\r\nHost: x\r\n", b"POST /items/1 HTTP/1.1\r\nContent-Length: 100\r\n\r\nab"):
        with socket.create_connection(("127.0.0.1", fastapi_server.port), timeout=10) as sock:
            sock.sendall(data)
    with httpx.Client(base_url=fastapi_server.url, timeout=30) as c:
        assert c.get("/items/5").json()["item"] == 5


class BrokenProcessor:
    """A span processor (exporter) that fails on every span."""

    def on_end(self, span: autotrace.Span) -> None:
        raise RuntimeError("exporter is down")

    def force_flush(self, timeout: float | None = None) -> bool:
        return False

    def shutdown(self, timeout: float | None = None) -> bool:
        return True


def test_failures_inside_tracing_never_break_requests() -> None:
    """A broken exporter and a span-name function that raises: every request is still answered as without tracing."""

    def bad_name(scope: Any) -> str:
        raise KeyError("no name")

    autotrace.configure(sample_rate=1.0, exporters=[BrokenProcessor()])
    with Uvicorn(TracingMiddleware(fastapi_app(), name=bad_name)) as server:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for _ in range(3):
                r = c.get("/items/9")
                assert r.status_code == 200 and r.json() == {"item": 9, "words": 3}
            with c.stream("GET", "/stream") as streamed:
                assert len(b"".join(streamed.iter_raw()).split()) == 20
    assert errors().get("asgi middleware (start)") == 4
    assert errors().get("span processor BrokenProcessor.on_end", 0) >= 1


def test_the_middleware_does_not_change_the_apps_messages() -> None:
    """The app's http.response.start message and its headers list are not mutated (a new message is sent)."""
    sent: list[dict[str, Any]] = []
    original_headers = [(b"content-type", b"text/plain")]
    start = {"type": "http.response.start", "status": 200, "headers": original_headers}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start)
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "http_version": "1.1"}
    asyncio.run(TracingMiddleware(app)(scope, receive, send))
    assert start["headers"] == [(b"content-type", b"text/plain")] and start["headers"] is original_headers
    assert [k for k, _ in sent[0]["headers"]] == [b"content-type", b"traceparent"]


def test_bad_arguments_are_clear_errors() -> None:
    """Not an app, a bad name, one string for excluded_paths: TypeError naming the problem."""
    with pytest.raises(TypeError, match="ASGI application"):
        TracingMiddleware("app")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be"):
        TracingMiddleware(fastapi_app(), name=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="excluded_paths"):
        TracingMiddleware(fastapi_app(), excluded_paths="/health")


def test_importing_autotrace_imports_no_web_framework_or_http_client() -> None:
    """`import autotrace` (and autotrace.propagation) loads neither the ASGI module nor starlette/httpx/requests."""
    code = (
        "import sys, autotrace, autotrace.propagation;"
        "print([m for m in ('autotrace.asgi', 'starlette', 'fastapi', 'httpx', 'requests') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_send_failing_with_oserror_mid_stream_is_a_disconnect_and_propagates() -> None:
    """ASGI 2.4 servers raise OSError on a send to a client gone away: ERROR, the event, the same OSError out."""
    gone = ConnectionResetError("client went away")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(10):
            await send({"type": "http.response.body", "body": b"x", "more_body": True})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        if len(sent) == 4:
            raise gone
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/s", "headers": [], "asgi": {"spec_version": "2.4"}}
    with pytest.raises(ConnectionResetError) as caught:
        asyncio.run(TracingMiddleware(app)(scope, receive, send))
    assert caught.value is gone
    (s,) = server_spans()
    assert s.status.code == StatusCode.ERROR
    assert [e.name for e in s.events] == ["http.request.disconnected", "exception"]
    assert s.attributes["autotrace.response.chunks"] == 3


def test_a_send_failing_with_oserror_on_a_whole_response_is_error_and_propagates() -> None:
    """The start and a one-message body go straight to the server's send: its OSError is recorded, ERROR, re-raised."""
    for failing in ("http.response.start", "http.response.body"):
        autotrace.get_trace_store().clear()
        gone = ConnectionResetError(f"client went away at {failing}")

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"whole"})

        async def send(message: Any, failing: str = failing, gone: Exception = gone) -> None:
            if message["type"] == failing:
                raise gone

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {"type": "http", "method": "GET", "path": "/w", "headers": [], "asgi": {"spec_version": "2.4"}}
        with pytest.raises(ConnectionResetError) as caught:
            asyncio.run(TracingMiddleware(app)(scope, receive, send))
        assert caught.value is gone
        (s,) = server_spans()
        assert s.status.code == StatusCode.ERROR, failing
        assert s.attributes["error.type"] == "ConnectionResetError"
        assert [e.name for e in s.events] == ["exception"]


def test_a_strange_scope_is_passed_to_the_app_not_broken() -> None:
    """Scopes a server should not send (missing keys, odd types): the app still runs and answers as without tracing."""
    answered: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body"})

    async def send(message: Any) -> None:
        answered.append(message["type"])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    scopes: list[dict[str, Any]] = [
        {"type": "http"},
        {"type": "http", "method": None, "path": 12, "headers": None, "client": None, "query_string": None},
        {"type": "http", "method": "GET", "path": "/", "headers": [("host", "x"), (b"user-agent", b"\xff" * 10_000)]},
        {"type": "http", "method": "BREW", "path": "/" * 5000, "server": ("::1", None), "scheme": "https"},
        {"type": "something new"},
    ]
    for scope in scopes:
        answered.clear()
        asyncio.run(TracingMiddleware(app)(scope, receive, send))
        assert answered == ["http.response.start", "http.response.body"], scope
    brew = [s for s in server_spans() if s.attributes.get("http.request.method") == "_OTHER"]
    assert brew and brew[0].attributes["http.request.method_original"] == "BREW"
    assert len(brew[0].attributes["url.path"]) <= 2049


def test_configured_attribute_limits_apply_to_the_server_span() -> None:
    """max_attribute_length and max_attributes set by configure() cut the middleware's attributes too."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message: Any) -> None:
        pass

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    scope = {"type": "http", "method": "GET", "path": "/a-rather-long-path/" + "p" * 100, "headers": []}
    autotrace.configure(sample_rate=1.0, max_attribute_length=10, max_attributes=3)
    asyncio.run(TracingMiddleware(app)(scope, receive, send))
    (s,) = server_spans()
    assert len(s.attributes) <= 3
    assert all(len(v) <= 10 for v in s.attributes.values() if isinstance(v, str))


def test_one_route_served_for_several_methods_names_each_span_after_its_own_method() -> None:
    """Span names cached per route stay per method; app headers of any iterable kept; a query without '=' kept."""

    class Matched:
        path = "/items/{item_id}"

    matched = Matched()
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = matched  # what Starlette's router does once it has matched
        headers = ((b"content-type", b"text/plain"),) if scope["method"] == "GET" else iter([(b"x-a", b"1")])
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    middleware = TracingMiddleware(app)
    for method, query in (("GET", b"flag&x"), ("POST", b"a=1&token=abc"), ("GET", b""), ("BREW", b"")):
        scope = {"type": "http", "method": method, "path": "/items/7", "query_string": query, "headers": []}
        asyncio.run(middleware(scope, receive, send))
    names = [s.name for s in server_spans()]
    assert names == ["GET /items/{item_id}", "POST /items/{item_id}", "GET /items/{item_id}", "_OTHER /items/{item_id}"]
    spans = server_spans()
    assert spans[0].attributes["url.query"] == "flag&x"
    assert spans[1].attributes["url.query"] == "a=1&token=REDACTED"
    assert all(s.attributes["http.route"] == "/items/{item_id}" for s in spans)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [[k for k, _ in m["headers"]] for m in starts] == [
        [b"content-type", b"traceparent"],
        [b"x-a", b"traceparent"],
        [b"content-type", b"traceparent"],
        [b"x-a", b"traceparent"],
    ]


@pytest.mark.parametrize("with_parent", [True, False])
def test_an_open_request_is_listed_by_inflight_under_its_route_until_it_ends(
    fastapi_server: Uvicorn, monkeypatch: pytest.MonkeyPatch, with_parent: bool
) -> None:
    """/inflight lists a request still streaming as its route's span, in its trace; gone once it has ended."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    headers = {"traceparent": TRACEPARENT} if with_parent else {}

    def listed(url: str, trace_id: str) -> list[dict[str, Any]]:
        return [x for x in fetch(url, "/inflight").json()["inflight"] if x["trace_id"] == trace_id]

    with start_in_background(port=0) as handle:
        with (
            httpx.Client(base_url=fastapi_server.url, timeout=30) as c,
            c.stream("GET", "/endless", headers=headers) as r,
        ):
            _, trace_id, span_id, _ = r.headers["traceparent"].split("-")
            assert trace_id == TRACE or not with_parent
            lines = r.iter_lines()  # kept: a line generator let go closes the response
            next(lines)
            next(lines)
            found = listed(handle.url, trace_id)
            assert [(x["name"], x["sampled"], x["span_id"]) for x in found] == [("GET /endless", True, span_id)]
            lines.close()
        wait_for(lambda: [s for s in server_spans() if s.trace_id == trace_id], "the request's span")
        assert listed(handle.url, trace_id) == []


def test_each_request_is_one_observation_of_its_server_span_in_the_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /metrics: 7 requests to a route are 7 observations of its SERVER span, the 2 failed ones as errors."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)

    async def counted(request: Request) -> PlainTextResponse:
        if request.query_params.get("fail"):
            return PlainTextResponse("no", status_code=500)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/counted-by-metrics", counted)])
    with Uvicorn(TracingMiddleware(app)) as server, start_in_background(port=0) as handle:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for i in range(7):
                c.get("/counted-by-metrics", params={"fail": "1"} if i < 2 else {})
        wait_for(lambda: len([s for s in server_spans() if s.name == "GET /counted-by-metrics"]) == 7, "7 spans")
        families = {f.name: f for f in text_string_to_metric_families(fetch(handle.url, "/metrics").body.decode())}
    counts = {
        (s.labels["span_kind"], s.labels["status_code"]): s.value
        for s in families["autotrace_span_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels["span_name"] == "GET /counted-by-metrics"
    }
    assert counts == {("server", "unset"): 5.0, ("server", "error"): 2.0}
