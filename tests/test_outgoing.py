"""Outgoing calls with httpx (sync and async) and requests against a loopback server that echoes headers."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import requests
import requests.adapters

import autotrace
from autotrace import SpanKind, StatusCode, propagation, span
from autotrace.testing import CapturedSpans, capture_spans

RELEASE = threading.Event()  # /hang answers once this is set (at teardown): no sleeping in tests


class Echo(BaseHTTPRequestHandler):
    """/echo answers the request headers as JSON; /status/N answers N; /hang waits for the test to end."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith("/status/"):
            code = int(self.path.split("/")[2])
            self._answer(code, b"{}")
        elif self.path.startswith("/hang"):
            RELEASE.wait(60)
            self._answer(200, b"{}")
        else:
            self._answer(200, json.dumps({k.lower(): v for k, v in self.headers.items()}).encode())

    def _answer(self, code: int, body: bytes) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client timed out and left (the /hang tests): nobody to answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    """The echo server's base URL."""
    RELEASE.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    RELEASE.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def refused_url() -> str:
    """A loopback URL nobody listens on (a port bound and closed again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/echo"


def client_span(spans: CapturedSpans) -> autotrace.Span:
    (s,) = [s for s in spans if s.kind == SpanKind.CLIENT]
    return s


def check_propagated(spans: CapturedSpans, sent: dict[str, str], url: str) -> None:
    """The traceparent the server received names the CLIENT span, a child of the caller's span."""
    s = client_span(spans)
    parent = spans.one("caller")
    assert sent["traceparent"] == f"00-{s.trace_id}-{s.span_id}-03"  # sampled, random trace id
    assert s.parent_span_id == parent.span_id and s.trace_id == parent.trace_id
    assert s.name == "GET" and s.status.code == StatusCode.UNSET
    a = s.attributes
    assert a["http.request.method"] == "GET" and a["http.response.status_code"] == 200
    assert a["url.full"] == url.replace("s3cret", "REDACTED")
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == int(url.split(":")[2].split("/")[0])
    assert a["network.protocol.version"] == "1.1"


def test_httpx_sync_client_span_is_what_the_server_receives(echo: str) -> None:
    """httpx.Client with httpx_transport(): one CLIENT span, its traceparent in the request, url.full redacted."""
    url = f"{echo}/echo?api_key=s3cret&q=1"
    with capture_spans() as spans, httpx.Client(transport=propagation.httpx_transport()) as c:
        with span("caller"):
            sent = c.get(url).json()
    check_propagated(spans, sent, url)


def test_httpx_async_client_span_is_what_the_server_receives(echo: str) -> None:
    """httpx.AsyncClient with async_httpx_transport(): the same, from a coroutine."""
    url = f"{echo}/echo?token=s3cret"

    async def call() -> dict[str, str]:
        async with httpx.AsyncClient(transport=propagation.async_httpx_transport()) as c:
            with span("caller"):
                return (await c.get(url)).json()  # type: ignore[no-any-return]

    with capture_spans() as spans:
        sent = asyncio.run(call())
    check_propagated(spans, sent, url)


def test_requests_session_span_is_what_the_server_receives(echo: str) -> None:
    """requests with trace_requests(Session()): one CLIENT span, its traceparent in the request."""
    url = f"{echo}/echo?password=s3cret"
    with capture_spans() as spans, propagation.trace_requests(requests.Session()) as session:
        with span("caller"):
            sent = session.get(url, timeout=30).json()
    check_propagated(spans, sent, url)


def test_credentials_in_the_url_are_not_recorded(echo: str) -> None:
    """user:password in the URL becomes REDACTED:REDACTED in url.full."""
    url = echo.replace("http://", "http://alice:hunter2@") + "/echo"
    with capture_spans() as spans, httpx.Client(transport=propagation.httpx_transport()) as c:
        c.get(url)
    assert client_span(spans).attributes["url.full"] == echo.replace("http://", "http://REDACTED:REDACTED@") + "/echo"


def test_status_500_makes_the_client_span_error(echo: str) -> None:
    """A 500 answer: http.response.status_code 500, error.type "500", ERROR (httpx and requests)."""
    with capture_spans() as spans:
        with httpx.Client(transport=propagation.httpx_transport()) as c:
            assert c.get(f"{echo}/status/500").status_code == 500
        with propagation.trace_requests() as session:
            assert session.get(f"{echo}/status/404", timeout=30).status_code == 404
    first, second = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert first.attributes["error.type"] == "500" and first.status.code == StatusCode.ERROR
    assert second.attributes["http.response.status_code"] == 404 and second.status.code == StatusCode.ERROR


class KeepRaised(httpx.BaseTransport):
    """The real transport, keeping the exception it raises (to compare with what the caller sees)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.raised: list[BaseException] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return self.inner.handle_request(request)
        except BaseException as exc:
            self.raised.append(exc)
            raise


def test_httpx_connection_refused_and_timeout_give_error_spans_and_the_original_exception(
    echo: str, refused_url: str
) -> None:
    """Refused connection, read timeout: ERROR CLIENT span with error.type, the very exception the transport raised."""
    keep = KeepRaised()
    with capture_spans() as spans, httpx.Client(transport=propagation.httpx_transport(keep), timeout=0.2) as c:
        with pytest.raises(httpx.ConnectError) as refused:
            c.get(refused_url)
        with pytest.raises(httpx.ReadTimeout) as timed_out:
            c.get(f"{echo}/hang")
    assert keep.raised == [refused.value, timed_out.value]
    first, second = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert first.status.code == StatusCode.ERROR and first.attributes["error.type"] == "httpx.ConnectError"
    assert second.status.code == StatusCode.ERROR and second.attributes["error.type"] == "httpx.ReadTimeout"
    assert [e.name for e in second.events] == ["exception"]


def test_httpx_async_timeout_gives_an_error_span(echo: str) -> None:
    """The async transport: a read timeout is an ERROR span and the same httpx.ReadTimeout for the caller."""

    async def call() -> None:
        async with httpx.AsyncClient(transport=propagation.async_httpx_transport(), timeout=0.2) as c:
            await c.get(f"{echo}/hang")

    with capture_spans() as spans, pytest.raises(httpx.ReadTimeout):
        asyncio.run(call())
    s = client_span(spans)
    assert s.status.code == StatusCode.ERROR and s.attributes["error.type"] == "httpx.ReadTimeout"


class KeepRaisedAdapter(requests.adapters.HTTPAdapter):
    """The real adapter, keeping the exception it raises."""

    raised: list[BaseException] = []

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().send(request, *args, **kwargs)
        except BaseException as exc:
            self.raised.append(exc)
            raise


def test_requests_connection_refused_and_timeout_give_error_spans_and_the_original_exception(
    echo: str, refused_url: str
) -> None:
    """requests: refused and timed-out calls are ERROR CLIENT spans; the caller gets the adapter's own exception."""
    adapter = KeepRaisedAdapter()
    session = requests.Session()
    session.mount("http://", propagation.TracedAdapter(adapter))
    with capture_spans() as spans, session:
        with pytest.raises(requests.exceptions.ConnectionError) as refused:
            session.get(refused_url, timeout=5)
        with pytest.raises(requests.exceptions.ReadTimeout) as timed_out:
            session.get(f"{echo}/hang", timeout=0.2)
    assert adapter.raised == [refused.value, timed_out.value]
    first, second = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert first.status.code == StatusCode.ERROR
    assert first.attributes["error.type"] == "requests.exceptions.ConnectionError"
    assert second.attributes["error.type"] == "requests.exceptions.ReadTimeout"


def test_trace_requests_wraps_each_adapter_once_and_keeps_their_settings() -> None:
    """trace_requests twice wraps nothing twice; the wrapped adapter's settings stay reachable."""
    session = requests.Session()
    session.mount("https://", requests.adapters.HTTPAdapter(max_retries=3))
    propagation.trace_requests(propagation.trace_requests(session))
    adapter = session.adapters["https://"]
    assert isinstance(adapter, propagation.TracedAdapter)
    assert not isinstance(adapter.adapter, propagation.TracedAdapter)
    assert adapter.max_retries.total == 3
    with pytest.raises(TypeError, match=r"requests\.Session"):
        propagation.trace_requests(object())


def test_outside_any_span_a_client_span_starts_its_own_trace(echo: str) -> None:
    """No current span: the CLIENT span is a root, and the server still receives its traceparent."""
    with capture_spans() as spans, httpx.Client(transport=propagation.httpx_transport()) as c:
        sent = c.get(f"{echo}/echo").json()
    s = client_span(spans)
    assert s.parent_span_id is None and sent["traceparent"] == f"00-{s.trace_id}-{s.span_id}-03"


def test_an_unsampled_trace_still_propagates_with_flags_00(echo: str) -> None:
    """sample_rate=0: nothing recorded, yet the callee gets a traceparent not sampled (flags 02: random id only)."""
    autotrace.configure(sample_rate=0.0)
    with httpx.Client(transport=propagation.httpx_transport()) as c, span("caller"):
        sent = c.get(f"{echo}/echo").json()
    assert sent["traceparent"].endswith("-02")
    assert autotrace.trace_count() == 0
