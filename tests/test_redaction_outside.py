"""Secrets outside capture: url.full of traced_urlopen, the WSGI span's name and url.path, exception text."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import autotrace
from autotrace import traced
from autotrace.propagation import traced_urlopen
from autotrace.redaction import redact_path, redact_url
from autotrace.spans import StatusCode
from autotrace.testing import capture_spans
from autotrace.wsgi import TracingMiddleware

from .test_wsgi import Server, wait_for

SECRET = "Zq8vN2xW7kLp4RtY9bHc"


@pytest.fixture
def serve() -> Iterator[Callable[[Any], Server]]:
    """Start loopback WSGI servers for a test and stop them afterwards."""
    servers: list[Server] = []

    def start(app: Any) -> Server:
        servers.append(Server(app))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def echo_query(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers with the path and query it received."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{environ.get('PATH_INFO')}?{environ.get('QUERY_STRING')}".encode()]


def test_traced_urlopen_redacts_sensitive_query_values(serve: Callable[[Any], Server]) -> None:
    """url.full has the semconv and secret-looking query values as REDACTED; the request itself is untouched."""
    server = serve(echo_query)
    query = f"q=1&api_key={SECRET}&sig={SECRET}&X-Goog-Signature={SECRET}&AWSAccessKeyId=AK&Signature={SECRET}"
    with capture_spans() as spans, traced_urlopen(f"{server.url}/search?{query}", timeout=10) as resp:
        received = resp.read().decode()
    assert received == f"/search?{query}"  # the server got the real query
    url = spans.one("GET").attributes["url.full"]
    assert url == (
        f"{server.url}/search?q=1&api_key=REDACTED&sig=REDACTED&X-Goog-Signature=REDACTED"
        "&AWSAccessKeyId=REDACTED&Signature=REDACTED"
    )
    assert SECRET not in json.dumps(autotrace.export_traces())


def test_wsgi_span_redacts_a_path_token_by_default(serve: Callable[[Any], Server]) -> None:
    """A /reset-password/<token> path reaches neither the span name nor url.path; ordinary paths are kept."""
    server = serve(TracingMiddleware(echo_query))
    with capture_spans() as spans:
        assert server.get(f"/reset-password/{SECRET}")[0] == 200
        assert server.get("/reset-password/abc123")[0] == 200
        assert server.get("/users/42/items")[0] == 200
        redacted = wait_for(spans, "GET /reset-password/REDACTED", 2)
        (plain,) = wait_for(spans, "GET /users/42/items")
    assert [s.attributes["url.path"] for s in redacted] == ["/reset-password/REDACTED"] * 2
    assert plain.attributes["url.path"] == "/users/42/items"
    assert SECRET not in json.dumps(autotrace.export_traces())


@pytest.mark.parametrize(
    "template",
    [["/users/{id}", "/reset-password/<token>"], lambda path: "/reset-password/<token>" if "reset" in path else None],
)
def test_wsgi_path_template_names_the_span(serve: Callable[[Any], Server], template: Any) -> None:
    """path_template (patterns or a function) gives the span name, http.route and url.path."""
    server = serve(TracingMiddleware(echo_query, path_template=template))
    with capture_spans() as spans:
        status, _, body = server.get(f"/reset-password/{SECRET}")
        (s,) = wait_for(spans, "GET /reset-password/<token>")
    assert status == 200 and body == f"/reset-password/{SECRET}?".encode()  # the app sees the real path
    assert s.name == "GET /reset-password/<token>"
    assert s.attributes["url.path"] == "/reset-password/<token>"
    assert s.attributes["http.route"] == "/reset-password/<token>"
    assert SECRET not in json.dumps(autotrace.export_traces())


def test_path_template_patterns_are_checked() -> None:
    """A pattern that is not a path is refused when the middleware is made, naming it."""
    with pytest.raises(ValueError, match="'users/<id>'"):
        TracingMiddleware(echo_query, path_template=["users/<id>"])
    with pytest.raises(TypeError, match="not one string"):
        TracingMiddleware(echo_query, path_template="/users/<id>")


def test_exception_text_is_redacted_where_it_is_recorded(serve: Callable[[Any], Server]) -> None:
    """exception.message, exception.stacktrace and the status description never hold a key from the message."""

    @traced
    def fetch() -> None:
        raise ValueError(f"GET https://api.example.com/v1?api_key={SECRET} failed (password={SECRET})")

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError(f"upstream https://user:{SECRET}@db.example.com refused")

    with pytest.raises(ValueError, match=SECRET):  # the caller still gets the real exception
        fetch()
    server = serve(TracingMiddleware(app))
    with capture_spans() as spans:
        assert server.get("/x")[0] == 500
        (request,) = wait_for(spans, "GET /x")
    assert request.status.code == StatusCode.ERROR and "REDACTED" in (request.status.description or "")
    exported = json.dumps(autotrace.export_traces())
    assert SECRET not in exported
    (failed,) = [s for trace in autotrace.get_trace_store().traces() for s in trace if s.name.endswith("fetch")]
    (event,) = failed.events
    assert "api_key=[REDACTED]" in event.attributes["exception.message"]
    assert "api_key=[REDACTED]" in event.attributes["exception.stacktrace"]
    assert failed.status.code == StatusCode.ERROR and "api_key=[REDACTED]" in (failed.status.description or "")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "/"),
        ("/users/42/items", "/users/42/items"),
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/reset-password/abc", "/reset-password/REDACTED"),
        ("/verify/123456", "/verify/REDACTED"),
        ("/api-key/xyz/rotate", "/api-key/REDACTED/rotate"),
        ("/jobs/3fa85f64-5717-4562-b3fc-2c963f66afa6", "/jobs/REDACTED"),
        ("/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage", "/REDACTED/sendMessage"),
        ("/files/sk-abcdefghijklmnopqrstuvwx", "/files/REDACTED"),
        ("/docs/introduction-to-transformers", "/docs/introduction-to-transformers"),
    ],
)
def test_redact_path_rule(path: str, expected: str) -> None:
    """Token-looking segments and the segment after a secret or one-time-link word are REDACTED; the rest stays."""
    assert redact_path(path) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://h/p?q=1", "https://h/p?q=1"),
        ("http://u:p@h:8/a?x=1#access_token=t&y=2", "http://REDACTED:REDACTED@h:8/a?x=1#access_token=REDACTED&y=2"),
        ("https://h/cb?code=abc&state=s", "https://h/cb?code=REDACTED&state=s"),
        ("https://h/?max_tokens=5&token%3D=x", "https://h/?max_tokens=5&token%3D=REDACTED"),
    ],
)
def test_redact_url_rule(url: str, expected: str) -> None:
    """userinfo, the semconv query names and secret-looking names are REDACTED; other parameters stay."""
    assert redact_url(url) == expected
