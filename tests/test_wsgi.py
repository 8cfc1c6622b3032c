"""TracingMiddleware behind a real WSGI server on loopback: names, attributes, errors, streaming."""

from __future__ import annotations

import http.client
import io
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.util import setup_testing_defaults

import bottle
import pytest

import autotrace
from autotrace.spans import Span, SpanKind, StatusCode
from autotrace.testing import CapturedSpans, capture_spans
from autotrace.tracer import errors
from autotrace.wsgi import TracingMiddleware

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def get_stderr(self) -> Any:
        return io.StringIO()  # wsgiref prints app tracebacks here


class Server:
    """A wsgiref server on 127.0.0.1 with a free port, serving in a thread."""

    def __init__(self, app: Any) -> None:
        self.httpd = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
        self.port = self.httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture
def serve() -> Iterator[Callable[[Any], Server]]:
    """Start servers for a test and stop them afterwards."""
    servers: list[Server] = []

    def start(app: Any) -> Server:
        servers.append(Server(app))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def wait_for(spans: CapturedSpans, name: str, count: int = 1, timeout: float = 20.0) -> list[Span]:
    """The spans named ``name`` once ``count`` have ended (the server ends them after responding)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = spans.by_name(name)
        if len(found) >= count:
            return found
        time.sleep(0.01)
    raise AssertionError(f"no {count} span(s) named {name!r} within {timeout}s; got {spans.names()}")


@autotrace.traced("lookup")
def lookup(item_id: str) -> str:
    return item_id.upper()


def bottle_app() -> bottle.Bottle:
    app = bottle.Bottle()

    @app.get("/items/<item_id>")
    def item(item_id: str) -> dict[str, str]:
        return {"id": lookup(item_id)}

    @app.get("/boom")
    def boom() -> str:
        raise ValueError("bottle turns this into a 500")

    @app.get("/unavailable")
    def unavailable() -> None:
        raise bottle.HTTPResponse("busy", status=503)

    @app.get("/health")
    def health() -> str:
        return "ok"

    return app


def test_bottle_route_names_and_attributes(serve: Callable[[Any], Server]) -> None:
    """A Bottle request gives one SERVER span named after the route, with the HTTP attributes."""
    server = serve(TracingMiddleware(bottle_app()))
    with capture_spans() as spans:
        status, headers, body = server.get("/items/ab?x=1", {"User-Agent": "test-agent/1.0"})
        (span,) = wait_for(spans, "GET /items/<item_id>")
    assert status == 200 and body == b'{"id": "AB"}'
    assert span.kind == SpanKind.SERVER and span.parent_span_id is None
    assert span.status.code == StatusCode.UNSET
    assert dict(span.attributes) == {
        "http.request.method": "GET",
        "http.route": "/items/<item_id>",
        "http.response.status_code": 200,
        "url.path": "/items/ab",
        "url.scheme": "http",
        "user_agent.original": "test-agent/1.0",
        "server.address": "127.0.0.1",
        "server.port": server.port,
        "client.address": "127.0.0.1",
        "network.protocol.version": "1.1",
    }
    assert headers["traceparent"] == f"00-{span.trace_id}-{span.span_id}-03"  # sampled, random id (ours)
    assert spans.one("lookup").parent_span_id == span.span_id


def test_plain_wsgi_app_is_named_by_path(serve: Callable[[Any], Server]) -> None:
    """Without a route the span is named {method} {path} and has no http.route."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"made"]

    server = serve(TracingMiddleware(app))
    with capture_spans() as spans:
        status, headers, _ = server.get("/things")
        (span,) = wait_for(spans, "GET /things")
    assert status == 201
    assert headers.get("content-length") == "4"  # wsgiref still sets it from the wrapped list's length
    assert "http.route" not in span.attributes
    assert span.attributes["http.response.status_code"] == 201


def test_remote_parent_and_response_header(serve: Callable[[Any], Server]) -> None:
    """An incoming traceparent makes the server span its child; the response names the server span."""
    server = serve(TracingMiddleware(bottle_app()))
    with capture_spans() as spans:
        _, headers, _ = server.get("/items/x", {"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "v=1"})
        (span,) = wait_for(spans, "GET /items/<item_id>")
    assert (span.trace_id, span.parent_span_id) == (TRACE, PARENT)
    assert span.get_span_context().trace_state == "v=1"
    assert headers["traceparent"] == f"00-{TRACE}-{span.span_id}-01"
    assert spans.one("lookup").trace_id == TRACE


def test_unsampled_remote_parent_records_nothing(serve: Callable[[Any], Server]) -> None:
    """A caller's flags 00 is honoured: no span recorded, the trace id and the server span's own id come back."""
    server = serve(TracingMiddleware(bottle_app()))
    before = autotrace.trace_count()
    status, headers, _ = server.get("/items/x", {"traceparent": f"00-{TRACE}-{PARENT}-00"})
    assert status == 200
    assert headers["traceparent"].startswith(f"00-{TRACE}-") and headers["traceparent"].endswith("-00")
    assert PARENT not in headers["traceparent"]
    time.sleep(0.2)  # nothing should arrive; a short grace period only makes the check stricter
    assert autotrace.trace_count() == before


def test_invalid_traceparent_starts_new_trace(serve: Callable[[Any], Server]) -> None:
    """A malformed traceparent is ignored: the request is a new root."""
    server = serve(TracingMiddleware(bottle_app()))
    with capture_spans() as spans:
        server.get("/items/x", {"traceparent": f"00-{TRACE.upper()}-{PARENT}-01"})
        (span,) = wait_for(spans, "GET /items/<item_id>")
    assert span.parent_span_id is None and span.trace_id != TRACE


def test_5xx_is_error_and_4xx_is_not(serve: Callable[[Any], Server]) -> None:
    """503 and Bottle's 500 mark the span ERROR; a 404 leaves it UNSET."""
    server = serve(TracingMiddleware(bottle_app()))
    with capture_spans() as spans:
        assert server.get("/unavailable")[0] == 503
        assert server.get("/boom")[0] == 500
        assert server.get("/nope")[0] == 404
        (unavailable,) = wait_for(spans, "GET /unavailable")
        (boom,) = wait_for(spans, "GET /boom")
        (missing,) = wait_for(spans, "GET /nope")
    assert unavailable.status.code == StatusCode.ERROR
    assert unavailable.attributes["http.response.status_code"] == 503
    assert unavailable.attributes["error.type"] == "503"
    assert boom.status.code == StatusCode.ERROR and boom.attributes["http.response.status_code"] == 500
    assert missing.status.code == StatusCode.UNSET and missing.attributes["http.response.status_code"] == 404


def test_exception_is_recorded_and_reraised(serve: Callable[[Any], Server]) -> None:
    """An exception from the app marks the span ERROR with an exception event and reaches the server (500)."""

    class Broken(RuntimeError):
        pass

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise Broken("no model loaded")

    server = serve(TracingMiddleware(app))
    with capture_spans() as spans:
        assert server.get("/generate")[0] == 500
        (span,) = wait_for(spans, "GET /generate")
    assert span.status.code == StatusCode.ERROR
    assert span.status.description is not None and span.status.description.endswith("Broken: no model loaded")
    (event,) = span.events
    assert event.name == "exception" and event.attributes["exception.message"] == "no model loaded"
    assert span.attributes["error.type"] == event.attributes["exception.type"]
    assert event.attributes["exception.type"].endswith(".Broken")


def test_exception_escapes_unchanged_in_process() -> None:
    """The very same exception object leaves the middleware."""
    boom = KeyError("k")

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise boom

    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    with pytest.raises(KeyError) as info:
        TracingMiddleware(app)(environ, lambda *a: None)
    assert info.value is boom


def test_streaming_response_span_covers_the_stream(serve: Callable[[Any], Server]) -> None:
    """The span stays open and current while a streamed body is produced, and ends after its last chunk."""
    produced: list[int] = []

    @autotrace.traced("chunk")
    def chunk(i: int) -> bytes:
        return f"token{i}\n".encode()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        for i in range(3):
            time.sleep(0.1)
            yield chunk(i)
            produced.append(time.time_ns())

    server = serve(TracingMiddleware(app))
    with capture_spans() as spans:
        status, headers, body = server.get("/stream")
        (span,) = wait_for(spans, "GET /stream")
    assert status == 200 and body == b"token0\ntoken1\ntoken2\n"
    chunks = spans.by_name("chunk")
    assert len(chunks) == 3 and all(c.parent_span_id == span.span_id for c in chunks)
    assert span.end_time_unix_nano is not None and span.end_time_unix_nano >= produced[-1]
    assert span.duration_ns is not None and span.duration_ns >= 300_000_000  # three 0.1 s sleeps, a lower bound
    assert "traceparent" in headers


def test_error_in_the_middle_of_a_stream(serve: Callable[[Any], Server]) -> None:
    """An exception while streaming marks the span ERROR and still ends it."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first\n"
        raise OSError("model crashed")

    server = serve(TracingMiddleware(app))
    with capture_spans() as spans:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("GET", "/stream")
            try:
                conn.getresponse().read()
            except (http.client.HTTPException, OSError):
                pass  # the server drops the connection mid-body
        finally:
            conn.close()
        (span,) = wait_for(spans, "GET /stream")
    assert span.status.code == StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_span_is_current_only_inside_next() -> None:
    """Each next() runs with the server span current, and the caller's context is restored after it."""
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        for _ in range(2):
            seen.append(autotrace.current_span().name)
            yield b"x"

    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    with capture_spans() as spans, autotrace.span("caller") as caller:
        body = TracingMiddleware(app)(environ, lambda *a: None)
        for _ in body:
            assert autotrace.current_span() is caller
        # no close(): the span still ends once the body is exhausted
    span = spans.one("GET /")
    assert seen == ["GET /", "GET /"]
    assert span.parent_span_id is None  # a request is a new trace unless traceparent says otherwise


def test_excluded_paths_are_not_traced(serve: Callable[[Any], Server]) -> None:
    """Health checks pass through untraced and get no traceparent header."""
    server = serve(TracingMiddleware(bottle_app()))
    with capture_spans() as spans:
        status, headers, _ = server.get("/health")
        server.get("/items/y")
        wait_for(spans, "GET /items/<item_id>")  # the server is sequential: /health finished before
    assert status == 200 and "traceparent" not in headers
    assert not spans.by_name("GET /health")


def test_existing_response_traceparent_is_kept(serve: Callable[[Any], Server]) -> None:
    """An app that sets its own traceparent response header keeps it, with no duplicate."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("TraceParent", "mine")])
        return [b""]

    server = serve(TracingMiddleware(app, name="fixed", propagate_response=True))
    with capture_spans() as spans:
        _, headers, _ = server.get("/")
        wait_for(spans, "fixed")
    assert headers["traceparent"] == "mine"


def test_tracing_failure_passes_through(serve: Callable[[Any], Server]) -> None:
    """When tracing itself fails the request is served untouched and the failure is counted."""

    def bad_name(environ: dict[str, Any]) -> str:
        raise RuntimeError("naming broke")

    server = serve(TracingMiddleware(bottle_app(), name=bad_name))
    status, _, body = server.get("/items/z")
    assert status == 200 and body == b'{"id": "Z"}'
    assert errors().get("wsgi middleware (start)") == 1


def test_bad_arguments_are_named() -> None:
    """Constructing the middleware with a non-app or a single string path fails clearly."""
    with pytest.raises(TypeError, match="WSGI application"):
        TracingMiddleware("not an app")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="excluded_paths"):
        TracingMiddleware(bottle_app(), excluded_paths="/health")
