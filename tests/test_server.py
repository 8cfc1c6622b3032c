"""The /traces server over real HTTP on loopback: endpoints, bad input, token, concurrency, lifecycle."""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import autotrace
from autotrace.server import ServerHandle, create_app, start_in_background

from .server_helpers import fetch, record_trace, span_ids, spans_of, trace_ids, validate_otlp


@pytest.fixture(scope="module")
def server() -> Iterator[ServerHandle]:
    """One server on a free port for the module; it reads the global store per request."""
    with start_in_background(port=0) as handle:
        yield handle


@pytest.fixture()
def url(server: ServerHandle) -> str:
    """The base URL of the module's server."""
    return server.url


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
    validate_otlp(doc)
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
    validate_otlp(doc)
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
    for path in ("/nope", "/traces/", "/traces/x", "/%FFx", "/..%2f..%2fetc/passwd", "/" + "a" * 5000):
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
