"""The /traces server over real HTTP on loopback: endpoints, bad input, token, concurrency, lifecycle."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import autotrace
from autotrace.server import ServerHandle, create_app, start_in_background
from tests.otlp_check import validate

from .server_helpers import fetch, record_trace, settle, span_ids, spans_of, trace_ids


@pytest.fixture(scope="module")
def server() -> Iterator[ServerHandle]:
    """One server on a free port for the module; it reads the global store per request."""
    with start_in_background(port=0) as handle:
        yield handle


@pytest.fixture()
def url(server: ServerHandle) -> Iterator[str]:
    """The base URL of the module's server; after the test, its requests have finished."""
    yield server.url
    settle(server)


# -- the seed's six endpoint tests ------------------------------------------------------------


def test_empty_store_answers_an_empty_request(url: str) -> None:
    """GET /traces on an empty store is 200 with {"resourceSpans": []}."""
    reply = fetch(url, "/traces")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json() == {"resourceSpans": []}


def test_sample_data_comes_back_as_otlp_json(url: str) -> None:
    """Recorded traces come back as OTLP/JSON that the official schema accepts."""
    tid, ids = record_trace("generate", children=2)
    doc = fetch(url, "/traces").json()
    validate(doc)
    spans = spans_of(doc)
    assert sorted(s["spanId"] for s in spans) == sorted(ids)
    assert {s["traceId"] for s in spans} == {tid}
    root = next(s for s in spans if s["name"] == "generate")
    assert "parentSpanId" not in root or root["parentSpanId"] == ""
    child = next(s for s in spans if s["name"] == "generate.child1")
    assert child["parentSpanId"] == root["spanId"]
    assert {"key": "i", "value": {"intValue": "1"}} in child["attributes"]
    resource = {kv["key"] for kv in doc["resourceSpans"][0]["resource"]["attributes"]}
    assert {"service.name", "telemetry.sdk.name"} <= resource


def test_limit_keeps_the_most_recent_traces(url: str) -> None:
    """?limit=N returns the N most recently arrived traces, ?limit=0 none."""
    tids = [record_trace(f"t{i}", children=0)[0] for i in range(5)]
    assert trace_ids(fetch(url, "/traces?limit=2").json()) == tids[-2:]
    assert trace_ids(fetch(url, "/traces?limit=1").json()) == tids[-1:]
    assert fetch(url, "/traces?limit=0").json() == {"resourceSpans": []}
    assert trace_ids(fetch(url, "/traces?limit=999").json()) == tids
    assert autotrace.trace_count() == 5


def test_clear_returns_then_removes_the_traces(url: str) -> None:
    """?clear=true returns the traces and removes exactly those; ?limit=N&clear=true only the N newest."""
    tids = [record_trace(f"t{i}", children=1)[0] for i in range(4)]
    first = fetch(url, "/traces?limit=1&clear=true").json()
    assert trace_ids(first) == tids[-1:]
    assert trace_ids(fetch(url, "/traces").json()) == tids[:-1]
    rest = fetch(url, "/traces?clear=true").json()
    assert trace_ids(rest) == tids[:-1]
    assert fetch(url, "/traces").json() == {"resourceSpans": []}
    assert autotrace.trace_count() == 0


def test_query_parsing_accepts_every_documented_spelling(url: str) -> None:
    """clear takes true/false/1/0/yes/no in any case; limit takes any non-negative integer."""
    for word in ("false", "0", "no", "FALSE", "No"):
        record_trace("keep", children=0)
        assert len(trace_ids(fetch(url, f"/traces?clear={word}").json())) == 1
        assert autotrace.trace_count() == 1
        autotrace.clear_traces()
    for word in ("true", "1", "yes", "True", "YES"):
        record_trace("drop", children=0)
        assert len(trace_ids(fetch(url, f"/traces?clear={word}").json())) == 1
        assert autotrace.trace_count() == 0
    record_trace("x", children=0)
    assert len(trace_ids(fetch(url, "/traces?limit=007&clear=false").json())) == 1
    assert len(trace_ids(fetch(url, "/traces?clear=false&limit=1").json())) == 1


def test_defaults_return_everything_and_clear_nothing(url: str) -> None:
    """Without parameters /traces returns all stored traces, oldest first, and keeps them."""
    tids = [record_trace(f"t{i}", children=0)[0] for i in range(3)]
    assert trace_ids(fetch(url, "/traces").json()) == tids
    assert trace_ids(fetch(url, "/traces").json()) == tids
    assert autotrace.trace_count() == 3


# -- more endpoints ---------------------------------------------------------------------------


def test_trace_id_fetches_one_trace(url: str) -> None:
    """?trace_id=<32 hex> returns that trace alone (any case); an unknown id is a JSON 404."""
    tid, ids = record_trace("one", children=3)
    record_trace("other", children=1)
    doc = fetch(url, f"/traces?trace_id={tid}").json()
    validate(doc)
    assert sorted(span_ids(doc)) == sorted(ids)
    assert sorted(span_ids(fetch(url, f"/traces?trace_id={tid.upper()}").json())) == sorted(ids)
    missing = fetch(url, "/traces?trace_id=" + "ab" * 16)
    assert missing.status == 404
    assert "trace_id" in missing.json()["error"]


def test_delete_clears_and_says_how_many(url: str) -> None:
    """DELETE /traces empties the store and answers {"cleared": N}."""
    for _ in range(3):
        record_trace(children=0)
    reply = fetch(url, "/traces", method="DELETE")
    assert reply.status == 200
    assert reply.json() == {"cleared": 3}
    assert autotrace.trace_count() == 0
    assert fetch(url, "/traces", method="DELETE").json() == {"cleared": 0}


def test_health_and_ready(url: str) -> None:
    """/health answers ok; /ready answers ready with the store's counters."""
    assert fetch(url, "/health").json() == {"status": "ok"}
    record_trace(children=1)
    ready = fetch(url, "/ready").json()
    assert ready["status"] == "ready"
    assert ready["traces"] == 1 and ready["spans"] == 2


def test_viewer_page_is_html_with_a_strict_policy(url: str) -> None:
    """GET / serves an HTML page linking to /traces, with a same-origin CSP and nosniff."""
    reply = fetch(url, "/")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/html")
    csp = reply.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert b"traces" in reply.body


def test_head_requests_get_headers_only(url: str) -> None:
    """HEAD /traces and HEAD /health answer 200 without a body."""
    assert fetch(url, "/health", method="HEAD").status == 200
    reply = fetch(url, "/traces", method="HEAD")
    assert reply.status == 200 and reply.body == b""


def test_app_follows_configure_replacing_the_global_store(url: str) -> None:
    """create_app() without a store reads whatever store configure() installed last."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=3))
    tids = [record_trace(children=0)[0] for _ in range(5)]
    assert trace_ids(fetch(url, "/traces").json()) == tids[-3:]


def test_explicit_store_is_served_instead_of_the_global_one() -> None:
    """create_app(store) serves that store, not the global one."""
    store = autotrace.TraceStore(10)
    with autotrace.testing.capture_spans() as captured, autotrace.span("mine"):
        pass
    store.add_many(captured)
    autotrace.clear_traces()
    record_trace("global", children=0)
    with start_in_background(port=0, store=store) as handle:
        doc = fetch(handle.url, "/traces").json()
    assert [s["name"] for s in spans_of(doc)] == ["mine"]


# -- bad input --------------------------------------------------------------------------------

BAD_QUERIES = [
    ("limit=-1", "limit"),
    ("limit=abc", "limit"),
    ("limit=1.5", "limit"),
    ("limit=", "limit"),
    ("limit", "limit"),
    ("limit=+1", "limit"),
    ("limit=%201", "limit"),
    ("limit=0x10", "limit"),
    ("limit=1e3", "limit"),
    ("limit=%C2%B2", "limit"),  # superscript two: a "digit" to str.isdigit()
    ("limit=%EF%BC%91", "limit"),  # fullwidth one
    ("limit=" + "9" * 5000, "limit"),
    ("limit=1&limit=2", "limit"),
    ("clear=maybe", "clear"),
    ("clear=", "clear"),
    ("clear=2", "clear"),
    ("clear=truee", "clear"),
    ("clear=%00", "clear"),
    ("clear=true&clear=false", "clear"),
    ("trace_id=abc", "trace_id"),
    ("trace_id=" + "0" * 32, "trace_id"),
    ("trace_id=" + "g" * 32, "trace_id"),
    ("trace_id=" + "a" * 33, "trace_id"),
    ("trace_id=" + "a" * 32 + "&limit=1", "trace_id"),
    ("trace_id=" + "a" * 32 + "&clear=true", "trace_id"),
    ("limt=5", "limt"),
    ("=5", "''"),
    ("%FF=1", "query parameter"),
]


@pytest.mark.parametrize(("query", "named"), BAD_QUERIES)
def test_bad_query_values_answer_400_naming_the_parameter(url: str, query: str, named: str) -> None:
    """Every malformed /traces query is a 400 JSON error that names the offending parameter."""
    record_trace(children=0)
    reply = fetch(url, "/traces?" + query)
    assert reply.status == 400, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    assert named in reply.json()["error"]
    assert autotrace.trace_count() == 1  # a rejected clear=true cleared nothing


def test_unknown_paths_answer_404_json(url: str) -> None:
    """Unknown paths, including odd bytes in the path, are a JSON 404."""
    # "/traces/x" is GET /traces/{trace_id} with a malformed id: a 400 (tests/test_summary_api.py).
    for path in ("/nope", "/traces/", "/traces/x/y", "/%FFx", "/..%2f..%2fetc/passwd", "/" + "a" * 5000):
        reply = fetch(url, path)
        assert reply.status == 404, path
        assert "error" in reply.json()
    # Bottle routes a path with its non-UTF-8 bytes dropped; these name no route all the same.
    for path in ("/%FF%FE", "/%ff", "/tr%ffaces", "/health%C3", "/ready%80"):
        reply = fetch(url, path)
        assert reply.status == 404, path
        assert "not UTF-8" in reply.json()["error"]
    assert fetch(url, "/%C3%A9").status == 404  # valid UTF-8 ("/é"): an ordinary unknown path


def test_wrong_methods_answer_405_json_with_allow(url: str) -> None:
    """A known path with the wrong method is a JSON 405 listing the allowed methods."""
    for method, path in (("POST", "/traces"), ("PUT", "/traces"), ("PATCH", "/health"), ("POST", "/")):
        reply = fetch(url, path, method=method, body=b"{}")
        assert reply.status == 405, (method, path)
        assert "GET" in reply.headers["allow"]
        assert method in reply.json()["error"]


def test_delete_with_query_parameters_is_rejected(url: str) -> None:
    """DELETE /traces takes no parameters: one given is a 400 and nothing is removed."""
    record_trace(children=0)
    reply = fetch(url, "/traces?limit=1", method="DELETE")
    assert reply.status == 400
    assert autotrace.trace_count() == 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60))
def test_no_query_string_produces_a_500(url: str, raw: str) -> None:
    """Whatever the query string, /traces answers 200, 400 or 404 with a JSON body, never 500."""
    query = urllib.parse.quote(raw, safe="=&;+%")
    reply = fetch(url, "/traces?" + query)
    assert reply.status in (200, 400, 404), (query, reply.status, reply.body)
    reply.json()


# -- token ------------------------------------------------------------------------------------


def test_token_guards_every_route_but_health_and_the_page() -> None:
    """With a token, /traces, /ready and DELETE need the bearer token; /health and / do not."""
    record_trace(children=0)
    with start_in_background(port=0, token="s3cret") as handle:
        u = handle.url
        for method, path in (("GET", "/traces"), ("GET", "/ready"), ("DELETE", "/traces")):
            reply = fetch(u, path, method=method)
            assert reply.status == 401, (method, path)
            assert reply.headers["www-authenticate"].startswith("Bearer")
            assert "token" in reply.json()["error"]
        for header in ("Bearer wrong", "Basic s3cret", "s3cret", "Bearer", "Bearer s3cret2", "Bearer s3cre"):
            assert fetch(u, "/traces", headers={"Authorization": header}).status == 401, header
        assert autotrace.trace_count() == 1
        good = {"Authorization": "Bearer s3cret"}
        assert len(trace_ids(fetch(u, "/traces", headers=good).json())) == 1
        assert fetch(u, "/traces", headers={"Authorization": "bearer  s3cret "}).status == 200
        assert fetch(u, "/ready", headers=good).status == 200
        assert fetch(u, "/health").status == 200
        assert fetch(u, "/").status == 200
        assert fetch(u, "/nope").status == 404  # no route, nothing to protect


def test_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """AUTOTRACE_TOKEN turns the token on when token= is not given."""
    monkeypatch.setenv("AUTOTRACE_TOKEN", "from-env")
    with start_in_background(port=0) as handle:
        assert fetch(handle.url, "/traces").status == 401
        assert fetch(handle.url, "/traces", headers={"Authorization": "Bearer from-env"}).status == 200


def test_no_token_means_open_access(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a token every route answers without Authorization, and a stray header is ignored."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    assert fetch(url, "/traces").status == 200
    assert fetch(url, "/traces", headers={"Authorization": "Bearer whatever"}).status == 200


def test_empty_token_is_rejected() -> None:
    """token="" is a ValueError naming the token, not a server anyone can read."""
    with pytest.raises(ValueError, match="token"):
        create_app(token="")


# -- concurrency ------------------------------------------------------------------------------


def test_concurrent_clearing_readers_lose_and_duplicate_nothing(url: str) -> None:
    """While writers record, clearing readers together with what remains see every span exactly once."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=100_000))
    writers, traces_each, readers = 4, 150, 3
    recorded: list[list[str]] = [[] for _ in range(writers)]
    seen: list[list[str]] = [[] for _ in range(readers)]
    done = threading.Event()
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for _ in range(traces_each):
                recorded[i].extend(record_trace(f"w{i}", children=2)[1])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read(i: int) -> None:
        try:
            while not done.is_set():
                reply = fetch(url, "/traces?clear=true" if i else "/traces?limit=5&clear=true")
                assert reply.status == 200
                seen[i].extend(span_ids(reply.json()))
                fetch(url, "/traces?limit=3")  # a non-clearing reader in between
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(readers)]
    threads += [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads[readers:]:
        t.join(120)
    done.set()
    for t in threads[:readers]:
        t.join(120)
    assert not errors, errors
    remaining = span_ids(fetch(url, "/traces?clear=true").json())
    counts = Counter(sid for ids in seen for sid in ids) + Counter(remaining)
    expected = [sid for ids in recorded for sid in ids]
    assert len(expected) == writers * traces_each * 3
    assert counts == Counter(expected)  # each recorded span exactly once, nothing else


def test_a_slow_client_does_not_block_others(url: str) -> None:
    """A client that sends half a request and stalls does not delay other requests."""
    stalled = socket.create_connection(_addr(url), timeout=30)
    try:
        stalled.sendall(b"GET /traces HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        for _ in range(5):
            assert fetch(url, "/health", timeout=30).status == 200
    finally:
        stalled.close()


def _addr(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


# -- lifecycle --------------------------------------------------------------------------------


def test_start_and_stop_twice_on_the_same_port() -> None:
    """Stopping frees the port: a second server starts on it and answers; stop() is idempotent."""
    first = start_in_background(port=0)
    port = first.port
    assert first.url == f"http://127.0.0.1:{port}"
    assert fetch(first.url, "/health").status == 200
    first.stop()
    first.stop()
    with start_in_background(port=port) as second:
        assert second.port == port
        assert fetch(second.url, "/health").status == 200
    with pytest.raises(OSError):
        fetch(second.url, "/health", timeout=5)
    third = start_in_background("127.0.0.1", port)
    third.stop(timeout=10)


def test_server_thread_is_a_daemon() -> None:
    """The background server never keeps the process alive."""
    with start_in_background(port=0) as handle:
        threads = [t for t in threading.enumerate() if t.name == f"autotrace-server-{handle.port}"]
        assert threads and all(t.daemon for t in threads)
    deadline = time.monotonic() + 30
    while any(t.name == f"autotrace-server-{handle.port}" for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_bad_host_and_port_are_value_errors() -> None:
    """start_in_background rejects a bad port or host with a ValueError naming it."""
    for port in (-1, 65536, "80", True, 1.5):
        with pytest.raises(ValueError, match="port"):
            start_in_background(port=port)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="host"):
        start_in_background(host="", port=0)


def test_address_in_use_is_an_oserror() -> None:
    """Binding a port another server holds raises OSError, and nothing keeps running."""
    with start_in_background(port=0) as handle, pytest.raises(OSError):
        start_in_background(port=handle.port)


def test_mounted_routes_keep_the_token_and_json_errors() -> None:
    """Mounted under a prefix in another Bottle app, the routes still check the token and answer JSON."""
    import bottle

    outer = bottle.Bottle()
    outer.route("/hello", "GET", lambda: "hi")
    outer.mount("/autotrace/", create_app(token="t"))
    with start_in_background(port=0, app=outer) as handle:
        assert fetch(handle.url, "/hello").body == b"hi"
        assert fetch(handle.url, "/autotrace/health").json() == {"status": "ok"}
        assert fetch(handle.url, "/autotrace/").status == 200
        assert fetch(handle.url, "/autotrace/traces").status == 401
        good = {"Authorization": "Bearer t"}
        assert fetch(handle.url, "/autotrace/traces", headers=good).json() == {"resourceSpans": []}
        bad = fetch(handle.url, "/autotrace/traces?limit=x", headers=good)
        assert bad.status == 400 and "limit" in bad.json()["error"]


# -- browser-facing protections ---------------------------------------------------------------


def test_head_with_clear_does_not_clear(url: str) -> None:
    """HEAD /traces?clear=true sends no body, so it must not remove anything."""
    record_trace(children=0)
    assert fetch(url, "/traces?clear=true", method="HEAD").status == 200
    assert autotrace.trace_count() == 1


def test_cross_site_browser_requests_are_refused(url: str) -> None:
    """Sec-Fetch-Site cross-site or same-site is a 403 that clears nothing; same-origin and none pass."""
    record_trace(children=0)
    for site in ("cross-site", "same-site"):
        reply = fetch(url, "/traces?clear=true", headers={"Sec-Fetch-Site": site})
        assert reply.status == 403 and "cross-site" in reply.json()["error"]
    assert autotrace.trace_count() == 1
    for site in ("same-origin", "none"):
        assert fetch(url, "/traces", headers={"Sec-Fetch-Site": site}).status == 200
    assert fetch(url, "/health", headers={"Sec-Fetch-Site": "cross-site"}).status == 200


def test_loopback_server_refuses_foreign_host_headers(url: str) -> None:
    """Bound to 127.0.0.1, the server answers only loopback Host names (no DNS rebinding)."""
    port = urllib.parse.urlsplit(url).port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.2:{port}", "[::2]"):
        reply = fetch(url, "/traces", headers={"Host": host})
        assert reply.status == 403, host
        assert "Host" in reply.json()["error"]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST", "localhost."):
        assert fetch(url, "/traces", headers={"Host": host}).status == 200, host
    assert fetch(url, "/health", headers={"Host": "evil.example"}).status == 200


def test_host_check_is_off_without_allowed_hosts() -> None:
    """create_app() alone (e.g. under gunicorn behind a proxy) answers any Host."""
    with start_in_background(port=0, app=create_app()) as handle:
        assert fetch(handle.url, "/traces", headers={"Host": "traces.example.com"}).status == 200
    with start_in_background(port=0, app=create_app(allowed_hosts=["traces.example.com"])) as handle:
        assert fetch(handle.url, "/traces", headers={"Host": "traces.example.com:443"}).status == 200
        assert fetch(handle.url, "/traces").status == 403


def test_a_request_without_host_header_is_answered(url: str) -> None:
    """An HTTP/1.0 request without Host (curl --http1.0 -H 'Host:') is not refused."""
    with socket.create_connection(_addr(url), timeout=30) as sock:
        sock.sendall(b"GET /traces HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 200"), answer[:200]


def test_allowed_hosts_must_not_be_a_string() -> None:
    """allowed_hosts="localhost" (a string, not a set) is a ValueError."""
    with pytest.raises(ValueError, match="allowed_hosts"):
        create_app(allowed_hosts="localhost")


def test_app_or_store_not_both() -> None:
    """start_in_background(app=..., token=...) is ambiguous and refused."""
    with pytest.raises(ValueError, match="not both"):
        start_in_background(port=0, app=create_app(), token="x")


def test_lone_surrogates_in_span_data_still_give_valid_json(url: str) -> None:
    """A str attribute holding a lone surrogate (undecodable bytes) is exported as U+FFFD, not a 500."""
    with autotrace.span("bad\udc80name", attributes={"k": "v\udc80", "k\ud800": 1}):
        pass
    reply = fetch(url, "/traces")
    assert reply.status == 200
    (span,) = spans_of(reply.json())
    # OTLP strings must be valid UTF-8 (protobuf refuses lone surrogates): otlp.py replaces them.
    assert span["name"] == "bad\ufffdname"


def test_ipv6_loopback() -> None:
    """start_in_background("::1") serves on IPv6 with a bracketed URL."""
    try:
        handle = start_in_background("::1", 0)
    except OSError as exc:  # no IPv6 on this machine
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    with handle:
        assert handle.url == f"http://[::1]:{handle.port}"
        assert fetch(handle.url, "/traces").json() == {"resourceSpans": []}


# -- request tracing on create_app() ------------------------------------------------------------


def _server_spans(count: int = 1, timeout: float = 30.0) -> list[autotrace.Span]:
    """The SERVER spans in the store once ``count`` have ended (a span ends after its body is sent)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = [s for t in autotrace.get_trace_store().traces() for s in t if s.kind is autotrace.SpanKind.SERVER]
        if len(spans) >= count:
            return spans
        assert time.monotonic() < deadline, f"{len(spans)} of {count} SERVER spans ended"
        time.sleep(0.01)


def test_a_route_added_to_create_app_is_one_server_span() -> None:
    """app = create_app(); app.route('/predict'): each request is a SERVER span continuing traceparent."""
    import bottle

    app = create_app()
    assert isinstance(app, bottle.Bottle)

    @app.route("/predict/<name>", method="POST")
    def predict(name: str) -> dict[str, str]:
        with autotrace.span("model.forward"):
            return {"label": name}

    caller = "0af7651916cd43dd8448eb211c80319c"
    with start_in_background(port=0, app=app) as handle:
        reply = fetch(
            handle.url, "/predict/cat", method="POST", headers={"traceparent": f"00-{caller}-b7ad6b7169203331-01"}
        )
        assert reply.status == 200 and reply.json() == {"label": "cat"}
        (server,) = _server_spans()
        fresh = fetch(handle.url, "/predict/dog", method="POST")
        assert len(_server_spans(2)) == 2
    assert server.name == "POST /predict/<name>" and server.attributes["http.route"] == "/predict/<name>"
    assert server.trace_id == caller and server.parent_span_id == "b7ad6b7169203331"
    assert reply.headers["traceparent"] == f"00-{caller}-{server.span_id}-01"
    (forward,) = [s for s in autotrace.get_trace_store().get_trace(caller) or [] if s.name == "model.forward"]
    assert forward.parent_span_id == server.span_id
    assert not fresh.headers["traceparent"].startswith(f"00-{caller}-")  # no traceparent: a new trace


def test_the_servers_own_routes_are_not_traced(url: str) -> None:
    """GET /traces (the viewer polls it), /health, /ready, / and DELETE /traces record no span, and nor do 404s."""
    for path in ("/traces", "/traces?limit=1", "/health", "/ready", "/"):
        reply = fetch(url, path)
        assert reply.status == 200 and "traceparent" not in reply.headers, path
    assert fetch(url, "/traces", method="DELETE").status == 200
    missing = fetch(url, "/no-such-route")
    assert missing.status == 404 and "traceparent" not in missing.headers
    assert autotrace.trace_count() == 0


def test_trace_requests_false_turns_request_tracing_off() -> None:
    """create_app(trace_requests=False) answers without SERVER spans or traceparent."""
    app = create_app(trace_requests=False)
    app.route("/ping", "GET", lambda: "pong")
    with start_in_background(port=0, app=app) as handle:
        reply = fetch(
            handle.url, "/ping", headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        )
    assert reply.status == 200 and reply.body == b"pong" and "traceparent" not in reply.headers
    assert autotrace.trace_count() == 0
    with pytest.raises(ValueError, match="trace_requests"):
        create_app(trace_requests="yes")  # type: ignore[arg-type]


# -- the page's Content-Security-Policy ---------------------------------------------------------


class _InlineBlocks(HTMLParser):
    """Collects the text of every inline <script> and <style> element, and any inline handlers."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.blocks: dict[str, list[str]] = {"script": [], "style": []}
        self.inline_attrs: list[tuple[str, str]] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, _ in attrs:
            if name == "style" or name.startswith("on"):
                self.inline_attrs.append((tag, name))
        if tag in self.blocks:
            assert not any(name == "src" for name, _ in attrs)
            self.blocks[tag].append("")
            self._open = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open:
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.blocks[self._open][-1] += data

    def handle_entityref(self, name: str) -> None:
        self.handle_data(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self.handle_data(f"&#{name};")


def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def test_the_page_policy_allows_its_inline_script_by_hash_not_unsafe_inline(url: str) -> None:
    """script-src and style-src name the sha256 of the page's own <script> and <style>; no 'unsafe-inline'."""
    reply = fetch(url, "/")
    csp = reply.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    directives = {d.split()[0]: d.split()[1:] for d in (part.strip() for part in csp.split(";")) if d}
    parser = _InlineBlocks()
    parser.feed(reply.body.decode("utf-8"))
    parser.close()
    (script,) = parser.blocks["script"]
    (style,) = parser.blocks["style"]
    assert "function" in script and "{" in style
    assert directives["script-src"] == [_sha256_source(script)]
    assert directives["style-src"] == [_sha256_source(style)]
    assert parser.inline_attrs == []  # handlers or style="" would be blocked by the hashes-only policy
    assert directives["object-src"] == ["'none'"] and directives["frame-ancestors"] == ["'none'"]


# -- the warning for an exposed server ----------------------------------------------------------


def test_binding_all_interfaces_without_a_token_logs_one_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """start_in_background('0.0.0.0') without a token warns once on the autotrace logger; loopback or a token: no."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    caplog.set_level(logging.WARNING, logger="autotrace")
    with start_in_background("0.0.0.0", 0) as handle:
        assert fetch(f"http://127.0.0.1:{handle.port}", "/health").status == 200
    warnings = [r for r in caplog.records if r.name == "autotrace" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "reachable from other machines" in message and "0.0.0.0" in message and "AUTOTRACE_TOKEN" in message
    caplog.clear()
    with start_in_background("0.0.0.0", 0, token="k"):
        pass
    with start_in_background("127.0.0.1", 0):
        pass
    monkeypatch.setenv("AUTOTRACE_TOKEN", "from-env")
    with start_in_background("0.0.0.0", 0):
        pass
    with start_in_background("0.0.0.0", 0, app=create_app(token="k")):
        pass
    assert [r for r in caplog.records if r.name == "autotrace"] == []


def test_the_warning_reaches_stderr_without_logging_setup() -> None:
    """With no logging configured the warning still shows, once, as one readable stderr line."""
    code = (
        "import autotrace.server as s\n"
        "h = s.start_in_background('0.0.0.0', 0)\n"
        "h.stop()\n"
        "h = s.start_in_background('0.0.0.0', 0)\n"  # a second call warns again
        "h.stop()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOTRACE_", "OTEL_"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2, lines
    assert all(line.startswith("autotrace server: http://0.0.0.0:") and "no token is set" in line for line in lines)


def test_traces_answers_carry_an_etag_and_304_when_unchanged(url: str) -> None:
    """GET /traces has an ETag; If-None-Match with it is a bodiless 304 until the store changes."""
    record_trace("first", children=1)
    first = fetch(url, "/traces?limit=50")
    etag = first.headers["etag"]
    assert first.status == 200 and etag.startswith('"') and etag.endswith('"')
    again = fetch(url, "/traces?limit=50", headers={"If-None-Match": etag})
    assert again.status == 304 and again.body == b"" and again.headers["etag"] == etag
    assert fetch(url, "/traces?limit=50", headers={"If-None-Match": f'"other", W/{etag}'}).status == 304
    record_trace("second", children=1)
    changed = fetch(url, "/traces?limit=50", headers={"If-None-Match": etag})
    assert changed.status == 200 and changed.headers["etag"] != etag
    assert sorted(s["name"] for s in spans_of(changed.json()) if "." not in s["name"]) == ["first", "second"]
    assert fetch(url, "/traces?limit=1", headers={"If-None-Match": changed.headers["etag"]}).status == 200
    # clear=true always answers (and clears): a 304 would hand out nothing yet remove the traces
    cleared = fetch(url, "/traces?clear=true", headers={"If-None-Match": changed.headers["etag"]})
    assert cleared.status == 200 and "etag" not in cleared.headers and len(trace_ids(cleared.json())) == 2
    assert autotrace.trace_count() == 0


def test_connections_past_max_connections_get_503_and_slots_free_up() -> None:
    """Idle connections hold at most max_connections threads; one more gets a 503 (not /health); freed when they go."""
    handle = start_in_background(port=0, max_connections=3, max_connections_per_client=3)
    idle = []
    try:
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", handle.port), timeout=30)
            sock.sendall(b"GET /health HTTP/1.1\r\n")  # half a request: its thread waits for the rest
            idle.append(sock)
        deadline = time.monotonic() + 30
        while True:  # the three are accepted (in order): the next connection is the fourth
            busy = fetch(handle.url, "/ready")
            if busy.status == 503:
                break
            assert time.monotonic() < deadline, "never refused a fourth connection"
            time.sleep(0.05)
        assert busy.headers["retry-after"] == "1"
        assert handle.connections == 3
        assert busy.json()["status"] == 503 and "too many connections" in busy.json()["error"]
        assert fetch(handle.url, "/health").json() == {"status": "ok"}  # a liveness probe still answers
        for sock in idle:
            sock.close()
        idle = []
        deadline = time.monotonic() + 30
        while fetch(handle.url, "/ready").status != 200:
            assert time.monotonic() < deadline, "slots were not freed when the idle clients left"
            time.sleep(0.05)
        while handle.connections:
            assert time.monotonic() < deadline, "connections were not counted down"
            time.sleep(0.01)
    finally:
        for sock in idle:
            sock.close()
        handle.stop()


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "8"])
def test_max_connections_must_be_a_positive_integer(bad: object) -> None:
    """A bad max_connections is a ValueError naming it, before anything is bound."""
    with pytest.raises(ValueError, match="max_connections"):
        start_in_background(port=0, max_connections=bad)  # type: ignore[arg-type]
