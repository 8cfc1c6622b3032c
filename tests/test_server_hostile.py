"""The /traces server against a hostile client and a hostile web page: eviction, amplification, rebinding, CSRF."""

from __future__ import annotations

import io
import json
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import autotrace
from autotrace.server import create_app, is_loopback, loopback_hosts, start_in_background
from autotrace.wsgi import MAX_HEADER, MAX_PATH, TracingMiddleware
from tests.otlp_check import validate

from .server_helpers import fetch, record_trace, settle, spans_of, trace_ids

SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _raw(port: int, request: bytes, host: str = "127.0.0.1") -> bytes:
    """Send raw request bytes and read the whole answer (the server closes after one request)."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def _wsgi_get(app: Any, query: str, headers: dict[str, str] | None = None) -> tuple[str, dict[str, str], Any]:
    """Call the WSGI app in process; returns status, headers and the (unconsumed) body iterable."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/traces",
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    seen: dict[str, Any] = {}

    def start_response(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"] = status
        seen["headers"] = {k.lower(): v for k, v in hdrs}
        return lambda data: None

    body = app(environ, start_response)
    return seen["status"], seen["headers"], body


def _consume(body: Iterable[bytes]) -> bytes:
    try:
        return b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()


def test_unknown_paths_and_refused_requests_cannot_evict_real_traces(monkeypatch: pytest.MonkeyPatch) -> None:
    """404s, 405s and requests the Host/cross-site/token checks refuse start no trace, even with a traceparent."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=5))
    real = {record_trace(f"real{i}", children=1)[0] for i in range(5)}
    from autotrace.server import Guard, _TracedBottle, install

    guard = Guard("s3cret", allowed_hosts=loopback_hosts("127.0.0.1"))
    app = install(_TracedBottle(catchall=True), guard=guard)
    app.route("/predict", "POST", guard(lambda: {"ok": True}))
    with start_in_background(port=0, app=app) as handle:
        good = {"Authorization": "Bearer s3cret", "traceparent": SAMPLED}
        refused = [
            ("GET", "/x1", {"Host": "evil.example", "traceparent": SAMPLED}),
            ("GET", "/cat-1", {"traceparent": SAMPLED}),
            ("GET", "/predict", good),  # wrong method: 405
            ("POST", "/predict", {"traceparent": SAMPLED}),  # no token
            ("POST", "/predict", {**good, "Host": "evil.example"}),  # DNS rebinding
            ("POST", "/predict", {**good, "Sec-Fetch-Site": "cross-site"}),
            ("GET", "/" + "x" * 60_000, {"User-Agent": "u" * 60_000}),
        ]
        for i in range(3):
            for method, path, headers in refused:
                reply = fetch(
                    handle.url, f"{path}{i}" if path.startswith("/x") else path, method=method, headers=headers
                )
                assert reply.status in (400, 401, 403, 404, 405, 414), (method, path[:20], reply.status)
                assert "traceparent" not in reply.headers
        settle(handle)
        assert {t for t in (s.trace_id for tr in autotrace.get_trace_store().traces() for s in tr)} == real
        served = fetch(handle.url, "/predict", method="POST", headers=good)
        settle(handle)
    assert served.status == 200 and served.headers["traceparent"].startswith(SAMPLED[:36])
    assert autotrace.get_trace_store().stats()["evicted_traces"] == 1  # the one request served


def test_recorded_path_and_user_agent_are_bounded() -> None:
    """A 60 KB path or User-Agent is kept as at most MAX_PATH / MAX_HEADER characters in the SERVER span."""

    def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hi"]

    app = TracingMiddleware(hello)
    environ = {
        "REQUEST_METHOD": "G" * 60_000,
        "PATH_INFO": "/" + "p" * 60_000,
        "HTTP_USER_AGENT": "u" * 60_000,
        "HTTP_HOST": "h" * 60_000,
        "wsgi.url_scheme": "http",
    }
    _consume(app(environ, lambda status, headers, exc_info=None: None))
    ((span,),) = autotrace.get_trace_store().traces()
    assert len(span.attributes["url.path"]) == MAX_PATH and span.attributes["url.path"].endswith("\u2026")
    assert len(span.name) <= MAX_PATH + 10
    for key in ("user_agent.original", "server.address", "http.request.method_original"):
        assert len(span.attributes[key]) == MAX_HEADER, key


def _traces_of(n: int, spans_each: int) -> list[str]:
    return [record_trace(f"t{i}", children=spans_each - 1)[0] for i in range(n)]


def test_the_answer_is_streamed_in_pieces_and_stays_one_valid_request() -> None:
    """GET /traces yields the document piece by piece (not one encoded blob) and the pieces make valid OTLP/JSON."""
    tids = _traces_of(3, 300)
    app = create_app(trace_requests=False)
    status, headers, body = _wsgi_get(app, "")
    pieces = []
    try:
        for piece in body:
            pieces.append(piece)
    finally:
        body.close()
    assert status.startswith("200") and "content-length" not in headers
    assert len(pieces) == 4  # 256 spans at most each; the head and the tail travel with the first and the last
    doc = json.loads(b"".join(pieces))
    validate(doc)
    assert trace_ids(doc) == tids and len(spans_of(doc)) == 900


def test_the_answer_holds_at_most_max_answer_spans_and_says_what_it_left_out() -> None:
    """Past max_answer_spans the newest whole traces that fit are sent, X-Autotrace-Omitted-Traces counts the rest."""
    tids = _traces_of(5, 4)
    with start_in_background(port=0, app=create_app(trace_requests=False, max_answer_spans=10)) as handle:
        reply = fetch(handle.url, "/traces")
        validate(reply.json())
        assert trace_ids(reply.json()) == tids[-2:] and reply.headers["x-autotrace-omitted-traces"] == "3"
        assert "x-autotrace-omitted-traces" not in fetch(handle.url, "/traces?limit=2").headers
        # Paging with clear=true: each answer takes the newest that fit; the rest stay for the next.
        pages = [trace_ids(fetch(handle.url, "/traces?clear=true").json()) for _ in range(3)]
    assert pages == [tids[3:], tids[1:3], tids[:1]]
    assert autotrace.trace_count() == 0


def test_a_third_concurrent_answer_gets_503_and_slots_come_back() -> None:
    """With two answers being sent a third GET is a 503 with Retry-After; 304s, 404s and sent answers free a slot."""
    _traces_of(2, 2)
    app = create_app(trace_requests=False, encode_wait=0)
    status, headers, first = _wsgi_get(app, "")
    etag = headers["etag"]
    first.close()
    for _ in range(3):  # none of these keeps a slot
        assert _wsgi_get(app, "", {"If-None-Match": etag})[0].startswith("304")
        assert _wsgi_get(app, "trace_id=" + "f" * 32)[0].startswith("404")
    held = [_wsgi_get(app, "")[2], _wsgi_get(app, "limit=1")[2]]
    try:
        busy_status, busy_headers, busy = _wsgi_get(app, "")
        assert busy_status.startswith("503") and busy_headers["retry-after"] == "1"
        assert "being sent" in json.loads(_consume(busy))["error"]
    finally:
        for body in held:
            body.close()
    status, _, again = _wsgi_get(app, "")
    assert status.startswith("200") and len(spans_of(json.loads(_consume(again)))) == 4


def _etag_of(app: Any) -> str:
    _, headers, body = _wsgi_get(app, "")
    body.close()
    return str(headers["etag"])


def test_the_etag_follows_the_store_not_a_hash_of_the_body() -> None:
    """The ETag changes when a span joins a trace or a trace is replaced, and stays while nothing changes."""
    app = create_app(trace_requests=False)
    with autotrace.span("open"):
        with autotrace.span("a"):
            pass
        tag1 = _etag_of(app)
        assert _etag_of(app) == tag1
        with autotrace.span("b"):
            pass
        tag2 = _etag_of(app)
    tag3 = _etag_of(app)
    autotrace.clear_traces()
    record_trace("other", children=2)
    assert len({tag1, tag2, tag3, _etag_of(app)}) == 4


def test_any_loopback_bind_answers_only_loopback_names_and_itself() -> None:
    """Bound to 127.0.0.2 the Host allow-list is on: foreign names are 403, loopback names and 127.0.0.2 pass."""
    assert loopback_hosts("127.0.0.2") == frozenset({"localhost", "127.0.0.1", "::1", "127.0.0.2"})
    assert "::1" in (loopback_hosts("0:0:0:0:0:0:0:1") or ())
    assert loopback_hosts("0.0.0.0") is None and loopback_hosts("192.0.2.1") is None
    record_trace(children=0)
    try:
        handle = start_in_background("127.0.0.2", 0)
    except OSError as exc:
        pytest.skip(f"cannot bind 127.0.0.2: {exc}")
    with handle:
        assert fetch(handle.url, "/traces", headers={"Host": "rebind.evil.example"}).status == 403
        assert fetch(handle.url, "/traces", headers={"Host": f"127.0.0.2:{handle.port}"}).status == 200
        assert fetch(handle.url, "/traces", headers={"Host": f"localhost:{handle.port}"}).status == 200


def test_http11_without_a_host_or_with_a_spaced_host_is_refused() -> None:
    """Over HTTP/1.1 no Host, or 'Host :' (which parses as no Host), is a 400; HTTP/1.0 without Host still passes."""
    record_trace(children=0)
    with start_in_background(port=0) as handle:
        for request in (
            b"GET /traces HTTP/1.1\r\n\r\n",
            b"GET /traces HTTP/1.1\r\nHost : evil.example\r\n\r\n",
            b"GET /traces?clear=true HTTP/1.1\r\nHost :evil.example\r\n\r\n",
        ):
            answer = _raw(handle.port, request)
            assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer[:100]
            assert b"Host" in answer
        assert _raw(handle.port, b"GET /traces HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200")
    assert autotrace.trace_count() == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Sec-Fetch-User": "?1"},
        {"Sec-Fetch-Site": "none"},
        {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"},
        {"Sec-Fetch-Dest": "image"},
        {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
        {"Upgrade-Insecure-Requests": "1"},
        {"Origin": "http://evil.example"},
    ],
    ids=[
        "clicked-link",
        "typed-or-chat-link",
        "same-origin-navigation",
        "img-tag",
        "old-browser",
        "uir",
        "foreign-origin",
    ],
)
def test_clearing_by_get_is_refused_from_browsers(headers: dict[str, str]) -> None:
    """GET /traces?clear=true with any browser navigation mark or a foreign Origin is a 403 that clears nothing."""
    record_trace(children=0)
    with start_in_background(port=0) as handle:
        reply = fetch(handle.url, "/traces?clear=true", headers=headers)
        assert reply.status == 403 and "DELETE" in reply.json()["error"], reply.body
        assert autotrace.trace_count() == 1
        assert fetch(handle.url, "/traces", headers=headers).status in (200, 403)  # reading is not clearing


def test_collectors_and_the_viewer_origin_still_clear() -> None:
    """curl-style GET ?clear=true, a same-origin fetch and DELETE still clear."""
    with start_in_background(port=0) as handle:
        record_trace(children=0)
        assert len(trace_ids(fetch(handle.url, "/traces?clear=true").json())) == 1
        record_trace(children=0)
        same = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
        same["Origin"] = f"http://127.0.0.1:{handle.port}"
        assert len(trace_ids(fetch(handle.url, "/traces?clear=true", headers=same).json())) == 1
        record_trace(children=0)
        assert fetch(handle.url, "/traces", method="DELETE", headers=same).json() == {"cleared": 1}
    assert autotrace.trace_count() == 0


def test_ready_shows_the_sample_rate() -> None:
    """/ready says the configured sample rate, so an empty store can be explained."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.25))
    with start_in_background(port=0) as handle:
        assert fetch(handle.url, "/ready").json()["sample_rate"] == 0.25


def _trickle(port: int, head: bytes, then: bytes) -> bytes:
    """Send ``head``, then ``then`` one byte every 0.1 s until the server answers or closes; returns the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        sock.settimeout(0.1)
        answer = b""
        for byte in then:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    break
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
        sock.settimeout(30)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    return answer


@pytest.mark.parametrize(
    "head, then",
    [
        (b"GET /traces HTTP/1.1\r\n", b"X-Slow: " + b"a" * 10_000),  # headers, one byte at a time
        (b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000\r\n\r\n", b"b" * 10_000),  # a body
    ],
    ids=["headers", "body"],
)
def test_a_trickled_request_is_closed_with_408_at_the_request_deadline(head: bytes, then: bytes) -> None:
    """A client trickling its headers or body is answered 408 and closed at request_timeout, however it trickles."""
    import bottle

    app = create_app()
    app.route("/echo", "POST", lambda: {"size": len(bottle.request.body.read())})
    with start_in_background(port=0, app=app, request_timeout=1.0) as handle:
        answer = _trickle(handle.port, head, then)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"status":408' in answer
        settle(handle)
        assert fetch(handle.url, "/health").status == 200


def test_one_client_address_cannot_hold_every_slot() -> None:
    """Past max_connections_per_client one client gets 503 (all of loopback is one client); slots come back."""
    with start_in_background("0.0.0.0", 0, max_connections=8, max_connections_per_client=2) as handle:
        idle = [socket.create_connection(("127.0.0.1", handle.port), timeout=30) for _ in range(2)]
        try:
            for sock in idle:
                sock.sendall(b"GET /ready HTTP/1.1\r\n")  # half a request: holds its slot
            url = f"http://127.0.0.1:{handle.port}"
            while handle.connections < 2:  # both accepted
                time.sleep(0.01)
            crowded = fetch(url, "/ready")
            assert crowded.status == 503 and "from your address" in crowded.json()["error"]
            assert crowded.headers["retry-after"] == "1"
            with socket.create_connection(("127.0.0.1", handle.port), timeout=30, source_address=("127.0.0.2", 0)) as s:
                s.sendall(b"GET /ready HTTP/1.0\r\n\r\n")
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
            # Every loopback address is one client (one program can use them all): still crowded.
            assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        finally:
            for sock in idle:
                sock.close()
        while handle.connections:
            time.sleep(0.01)
        assert fetch(url, "/ready").status == 200  # the slots come back


def test_health_is_answered_at_the_cap_and_other_paths_get_503() -> None:
    """With every slot held, GET /health is still 200 and anything else a 503 with Retry-After."""
    with start_in_background(port=0, max_connections=2, max_connections_per_client=2) as handle:
        idle = [socket.create_connection(("127.0.0.1", handle.port), timeout=30) for _ in range(2)]
        try:
            for sock in idle:
                sock.sendall(b"GET /ready HTTP/1.1\r\n")
            while handle.connections < 2:  # both accepted
                time.sleep(0.01)
            assert fetch(handle.url, "/health").json() == {"status": "ok"}
            assert fetch(handle.url, "/health", method="HEAD").status == 200
            busy = fetch(handle.url, "/traces")
            assert busy.status == 503 and busy.headers["retry-after"] == "1"
            assert _raw(handle.port, b"GET /health").startswith(b"HTTP/1.1 503")  # no line end in 1 s: 503
        finally:
            for sock in idle:
                sock.close()


def test_the_listen_backlog_takes_a_burst_of_connections() -> None:
    """While the server is not accepting, 100 connections still complete (backlog 128, not socketserver's 5)."""
    import select

    handle = start_in_background(port=0)
    clients = []
    try:
        handle._server.shutdown()  # the accept loop stops; the listening socket stays open
        for _ in range(100):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", handle.port))
            clients.append(c)
        pending = list(clients)
        connected = 0
        while pending:
            _, writable, _ = select.select([], pending, [], 5.0)
            if not writable:
                break
            for c in writable:
                pending.remove(c)
                connected += c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        listener = handle._server.socket
        listener.settimeout(1.0)
        accepted = 0
        try:
            while accepted < 100:
                conn, _ = listener.accept()
                conn.close()
                accepted += 1
        except OSError:
            pass
        assert accepted == 100, accepted
    finally:
        for c in clients:
            c.close()
        handle.stop()


@pytest.mark.parametrize(
    "kwargs",
    [{"backlog": 0}, {"request_timeout": 0}, {"idle_timeout": -1}, {"max_connections_per_client": 0}],
)
def test_bad_connection_limits_are_value_errors(kwargs: dict[str, Any]) -> None:
    """A bad backlog, timeout or per-client cap is a ValueError naming it."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        start_in_background(port=0, **kwargs)


def test_a_route_with_a_non_ascii_path_is_traced() -> None:
    """A request to a route spelled in UTF-8 (/café) is matched as Bottle matches it, and traced."""
    app = create_app()
    app.route("/caf\u00e9", "GET", lambda: "ok")
    with start_in_background(port=0, app=app) as handle:
        reply = fetch(handle.url, "/caf%C3%A9")
        settle(handle)
    assert reply.status == 200 and "traceparent" in reply.headers
    assert autotrace.trace_count() == 1


def test_clients_that_hang_up_mid_answer_give_their_slot_back() -> None:
    """Readers that close the connection halfway through a large answer do not keep an encode slot."""
    _traces_of(40, 250)  # 10,000 spans: about 3 MB of JSON, more than the socket buffers hold
    with start_in_background(port=0, app=create_app(trace_requests=False, encode_wait=0)) as handle:
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", handle.port), timeout=30) as sock:
                sock.sendall(b"GET /traces HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert sock.recv(4096).startswith(b"HTTP/1.0 200")
            settle(handle)
        reply = fetch(handle.url, "/traces")
    assert reply.status == 200 and len(spans_of(reply.json())) == 10_000


def _raw(port: int, request: bytes, host: str = "127.0.0.1") -> bytes:
    """Send raw request bytes and read the whole answer (the server closes after one request)."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def _stored_trace_ids() -> set[str]:
    return {s.trace_id for trace in autotrace.get_trace_store().traces() for s in trace}


@pytest.fixture
def no_env_token(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No AUTOTRACE_TOKEN from the environment running the tests."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    yield


@pytest.mark.parametrize(
    "target",
    [
        b"?x",  # an empty path: Bottle routes it to the page at /
        b"/%FF",  # not UTF-8: Bottle drops the byte and routes /, the guard answers 404
        b"/health%FF",
        b"/ready%C0",
        b"/traces%FF",
    ],
)
@pytest.mark.usefixtures("no_env_token")
def test_other_spellings_of_the_own_routes_cannot_evict_traces_without_the_token(target: bytes) -> None:
    """A stranger without the token cannot record spans (and evict real traces) through `GET ?x` or `/%FF`."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=3))
    real = {record_trace(f"real{i}", children=0)[0] for i in range(3)}
    with start_in_background(port=0, token="s3cret") as handle:
        for i in range(4):
            parent = f"00-{i + 1:032x}-b7ad6b7169203331-01"  # a sampled caller: would force recording
            answer = _raw(
                handle.port,
                b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\ntraceparent: " + parent.encode() + b"\r\n\r\n",
            )
            assert b"traceparent" not in answer.partition(b"\r\n\r\n")[0].lower()
        settle(handle)
    assert _stored_trace_ids() == real
    assert autotrace.get_trace_store().stats()["evicted_traces"] == 0


_GOOD_LINE = (
    '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"%032x","spanId":"b7ad6b7169203331",'
    '"name":"good","startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}\n'
)


def test_a_line_with_a_5000_digit_number_is_skipped_and_the_rest_is_served(tmp_path: Path) -> None:
    """`serve --file` skips and counts a line whose number json cannot convert, and loads the good lines."""
    from autotrace import cli
    from autotrace.export import read_jsonl

    path = tmp_path / "spans.jsonl"
    path.write_text(_GOOD_LINE % 1 + '{"resourceSpans":[' + "9" * 5000 + "]}\n" + _GOOD_LINE % 2)
    bad: list[tuple[int, str]] = []
    assert len(read_jsonl(path, bad_lines=bad)) == 2
    assert [n for n, _ in bad] == [2]
    parser = cli.build_parser()
    cli._configure(parser, parser.parse_args(["serve", "--port", "0", "--file", str(path)]))
    assert {s.name for trace in autotrace.get_trace_store().traces() for s in trace} == {"good"}
    assert autotrace.get_trace_store().stats()["spans"] == 2


@pytest.mark.parametrize("bind", ["127.1", "2130706433", "::ffff:127.0.0.1"])
def test_a_loopback_bind_spelled_otherwise_still_checks_host(bind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bound to 127.1, 2130706433 or ::ffff:127.0.0.1 the server refuses a DNS-rebinding Host as any loopback bind."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    assert is_loopback(bind)
    assert loopback_hosts(bind) is not None
    record_trace("secret", children=0)
    if ":" in bind and not socket.has_ipv6:
        pytest.skip("no IPv6")
    with start_in_background(host=bind, port=0) as handle:
        target = "::1" if ":" in bind else "127.0.0.1"
        if ":" in bind:
            pytest.skip("an IPv4-mapped bind is reached over IPv4; checked above through loopback_hosts")
        reply = fetch(f"http://{target}:{handle.port}", "/traces", headers={"Host": f"attacker.example:{handle.port}"})
        assert reply.status == 403, reply.body[:200]
        assert fetch(f"http://{target}:{handle.port}", "/traces").status == 200
        settle(handle)


def test_several_loopback_source_addresses_count_as_one_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections from 127.0.0.2 and 127.0.0.3 share one per-client cap, so they cannot hold every slot."""
    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)
    held: list[socket.socket] = []
    with start_in_background(port=0, max_connections=4) as handle:  # at most 2 per client
        try:
            answers = []
            for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"):
                sock = socket.socket()
                sock.settimeout(30)
                sock.bind((source, 0))
                sock.connect(("127.0.0.1", handle.port))
                sock.sendall(b"GET /traces HTTP/1.1\r\n")  # a request left half-sent
                held.append(sock)
            for sock in held[2:]:
                answer = b""
                while chunk := sock.recv(4096):  # the server closes after its 503
                    answer += chunk
                answers.append(answer)
            assert all(b"503" in a and b"your address" in a for a in answers), answers
        finally:
            for sock in held:
                sock.close()
        settle(handle)


def _wait_for(condition: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _thread_app(seen: list[Any]) -> Any:
    """A WSGI app that records the thread serving each request."""
    import threading

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(threading.current_thread())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return app


def test_connections_reuse_an_idle_worker_thread() -> None:
    """A connection arriving while a worker waits idle is served by it: no thread started per connection."""
    seen: list[Any] = []
    with start_in_background(port=0, app=_thread_app(seen)) as handle:
        server = handle._server
        for i in range(10):
            assert fetch(handle.url, "/").status == 200
            assert _wait_for(lambda: server._idle == 1), f"no idle worker after request {i}"
    assert len(seen) == 10 and len(set(seen)) == 1, {t.name for t in seen}
    assert seen[0].name == "autotrace-server-worker"


def test_idle_workers_end_when_the_server_stops_or_after_their_idle_timeout() -> None:
    """stop() ends the waiting worker threads at once; a worker idle for worker_idle_timeout ends by itself."""
    seen: list[Any] = []
    with start_in_background(port=0, app=_thread_app(seen)) as handle:
        handle._server.worker_idle_timeout = 0.2
        assert fetch(handle.url, "/").status == 200
        assert _wait_for(lambda: not seen[0].is_alive()), "the idle worker did not end after its timeout"
        handle._server.worker_idle_timeout = 60.0
        assert fetch(handle.url, "/").status == 200
        assert _wait_for(lambda: handle._server._idle == 1)
        assert seen[1] is not seen[0] and seen[1].is_alive()
    assert _wait_for(lambda: not seen[1].is_alive(), 5.0), "stop() left an idle worker waiting"


def test_concurrent_connections_get_their_own_workers_within_the_cap() -> None:
    """Connections served at once each have a worker; the workers never outnumber max_connections."""
    import threading

    gate = threading.Event()
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(threading.current_thread())
        gate.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    with start_in_background(port=0, app=app, max_connections=4, max_connections_per_client=4) as handle:
        replies: list[int] = []
        clients = [threading.Thread(target=lambda: replies.append(fetch(handle.url, "/").status)) for _ in range(4)]
        for c in clients:
            c.start()
        assert _wait_for(lambda: len(seen) == 4)
        gate.set()
        for c in clients:
            c.join(10)
        assert replies == [200] * 4 and len(set(seen)) == 4
        assert _wait_for(lambda: handle._server._idle == 4)
        for _ in range(8):
            assert fetch(handle.url, "/").status == 200
        assert len(set(seen)) == 4  # the later connections were served by the same four threads


def test_an_answer_piece_goes_out_in_one_send_at_flush() -> None:
    """The server's write side sends nothing until flush(), then everything written since in one send."""
    from autotrace._serving import _CoalescingWriter

    left, right = socket.socketpair()
    try:
        right.setblocking(False)
        writer = _CoalescingWriter(left)
        for part in (b"HTTP/1.0 200 OK\r\n", b"Date: x\r\n", b"Content-Type: text/plain\r\n\r\n", b"body"):
            assert writer.write(part) == len(part)
        with pytest.raises(BlockingIOError):
            right.recv(100)  # nothing sent before the flush
        writer.flush()
        assert right.recv(1000) == b"HTTP/1.0 200 OK\r\nDate: x\r\nContent-Type: text/plain\r\n\r\nbody"
        writer.write(b"unflushed")
        writer.close()  # what was not flushed is dropped, as the handler only closes after its flush
        with pytest.raises(BlockingIOError):
            right.recv(100)
    finally:
        left.close()
        right.close()


def test_accepted_connections_have_nagle_off() -> None:
    """TCP_NODELAY on each connection: a streamed answer's last segment does not wait for a delayed ACK."""
    flags: list[int] = []
    holder: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        # Before the answer starts, the connection is among those the watchdog holds to a deadline.
        for sock in list(holder[0]._server._deadlines):
            flags.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    with start_in_background(port=0, app=app) as handle:
        holder.append(handle)
        assert fetch(handle.url, "/").status == 200
    assert flags and all(flags), flags


def test_never_more_worker_threads_than_connection_slots() -> None:
    """Under a steady stream of connections the server never runs more worker threads than max_connections."""
    import threading

    seen: list[Any] = []
    with start_in_background(port=0, app=_thread_app(seen), max_connections=2, max_connections_per_client=2) as h:

        def client() -> None:
            for _ in range(40):
                fetch(h.url, "/")  # a 503 past the cap is fine: only served requests are counted

        clients = [threading.Thread(target=client) for _ in range(4)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(60)
    assert seen and len(set(seen)) <= 2, len(set(seen))
