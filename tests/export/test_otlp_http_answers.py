"""OTLP/HTTP answers http.client finds odd: a 2xx with too many headers, and a plain-http port behind https://."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import autotrace
from autotrace.export import OTLPHttpExporter
from autotrace.spans import Span
from autotrace.testing import capture_spans

from .conftest import Receiver


def spans(count: int) -> list[Span]:
    """``count`` finished root spans."""
    with capture_spans() as got:
        for n in range(count):
            with autotrace.span(f"s{n}"):
                pass
    return list(got)


def many_headers(count: int) -> dict[str, str]:
    return {f"X-Extra-{n}": "v" for n in range(count)}


def test_a_2xx_with_150_headers_is_a_success_sent_once(receiver: Receiver) -> None:
    """A collector's 200 carrying more headers than http.client parses still took the batch: no re-send."""
    receiver.script({"status": 200, "headers": many_headers(150)})
    exporter = OTLPHttpExporter(receiver.url, max_retries=5, backoff_base=0.01, timeout=30)
    try:
        assert exporter.export(spans(3)) is True
        assert len(receiver.requests) == 1
        assert sorted(receiver.span_names()) == ["s0", "s1", "s2"]
        assert exporter.stats()["exported"] == 3
        assert exporter.stats()["retried"] == 0
        assert exporter.export(spans(1)) is True  # the connection was dropped, a new one serves the next export
        assert len(receiver.requests) == 2
    finally:
        exporter.shutdown()


def test_a_503_with_150_headers_is_still_retried_as_a_503(receiver: Receiver) -> None:
    """The status line decides when the headers are unreadable: a 503 is retried, then the 200 ends it."""
    receiver.script({"status": 503, "headers": many_headers(150)})
    exporter = OTLPHttpExporter(receiver.url, max_retries=5, backoff_base=0.01, timeout=30)
    try:
        assert exporter.export(spans(2)) is True
        assert len(receiver.requests) == 2
        assert exporter.stats() == {"exported": 2, "failed": 0, "rejected": 0, "retried": 1, "requests": 2}
    finally:
        exporter.shutdown()


class _PlainHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def plain_http_port() -> Iterator[int]:
    """A plain-HTTP server on loopback, port 0."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PlainHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_https_to_a_plain_http_port_fails_at_once_with_a_tls_error(
    plain_http_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """https:// to a plain-HTTP listener is one attempt and a logged TLS error naming the likely cause, no retries."""
    exporter = OTLPHttpExporter(f"https://127.0.0.1:{plain_http_port}/v1/traces", backoff_base=0.01, timeout=30)
    try:
        with caplog.at_level(logging.WARNING, logger="autotrace"):
            assert exporter.export(spans(2)) is False
        assert exporter.stats() == {"exported": 0, "failed": 2, "rejected": 0, "retried": 0, "requests": 1}
        (message,) = [r.getMessage() for r in caplog.records if r.name == "autotrace"]
        assert "(TLS error)" in message
        assert "plain http:// port" in message
    finally:
        exporter.shutdown()
