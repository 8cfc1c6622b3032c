"""Fuzz the /traces HTTP surface on loopback: only 2xx/4xx, JSON for every non-page answer, never a 500."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import autotrace
import autotrace.server as server
from autotrace import span
from tests.otlp_check import validate
from tests.server_helpers import settle

TOKEN = "fuzz-token-Zm9vYmFy"
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Answer(NamedTuple):
    """One HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    """Two real servers on loopback (port 0): one open, one behind a bearer token."""
    open_ = server.start_in_background("127.0.0.1", 0)
    guarded = server.start_in_background("127.0.0.1", 0, token=TOKEN)
    try:
        yield {"open": open_, "token": guarded}
    finally:
        open_.stop()
        guarded.stop()


@pytest.fixture(autouse=True)
def _settled(servers: dict[str, Any]) -> Iterator[None]:
    """After each test both servers have finished their requests (a late 404 span stays in its test)."""
    yield
    for handle in servers.values():
        settle(handle)


def _record_odd_spans() -> None:
    """Put spans with awkward content in the store so /traces has something to encode."""
    with span("root \u2603 \ud800", attributes={"nan": float("nan"), "big": 2**70, "bytes": b"\xff\x00"}) as s:
        s.add_event("e", {"list": [1, 2, 3], "text": "<script>alert(1)</script>"})
        with span("child", attributes={"unicode": "\U0001f600"}):
            pass


def _request(port: int, method: str, target: str, headers: dict[str, str], body: bytes | None = None) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, target, skip_host=False, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def _is_page(method: str, target: str, answer: Answer) -> bool:
    """True for the viewer page: GET or HEAD of / (Bottle drops bytes of the path that are not UTF-8)."""
    raw = urllib.parse.unquote_to_bytes(target.split("?", 1)[0])
    path = raw.decode("utf-8", "ignore")
    return (
        answer.status == 200
        and method in ("GET", "HEAD")
        and path.lstrip("/") == ""
        and answer.headers.get("content-type", "").startswith("text/html")
    )


def _check(method: str, target: str, answer: Answer) -> None:
    assert 200 <= answer.status < 300 or 400 <= answer.status < 500, (method, target, answer.status, answer.body[:300])
    if _is_page(method, target, answer):
        return
    ctype = answer.headers.get("content-type", "")
    assert ctype.startswith("application/json"), (method, target, answer.status, ctype, answer.body[:300])
    if method == "HEAD":
        assert answer.body == b""
        return
    doc = json.loads(answer.body.decode("utf-8"))
    if answer.status >= 400:
        assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], doc


def _healthy(port: int, headers: dict[str, str] | None = None) -> None:
    headers = headers or {}
    health = _request(port, "GET", "/health", {})
    assert health.status == 200 and json.loads(health.body) == {"status": "ok"}
    traces = _request(port, "GET", "/traces", headers)
    assert traces.status == 200
    validate(json.loads(traces.body))


# -- strategies --------------------------------------------------------------------------------

_KNOWN_PATHS = ["/", "/traces", "/health", "/ready", "/traces/", "//traces", "/TRACES", "/traces/../health", "/x"]
_KNOWN_PARAMS = ["limit", "clear", "trace_id", "LIMIT", "", "limit[]", "x"]
_ODD_VALUES = [
    "",
    "0",
    "1",
    "-1",
    "10",
    "1e3",
    "0x10",
    " 5",
    "5 ",
    "99999999999999999999999999",
    "NaN",
    "true",
    "TRUE",
    "false",
    "yes",
    "2",
    "0" * 32,
    "f" * 32,
    "F" * 32,
    "g" * 32,
    "a" * 31,
    "١٢",
    "²",
    "\x00",
    "\ud800",
    "%",
    "💥" * 50,
]
# Raw fragments that are legal on the request line but awkward to decode.
_RAW = ["%", "%zz", "%ff", "%c3%28", "%00", "&&", "=", ";", "+", "%2b", "%26", "a=b=c", "%e2%82", "?", "#"]

methods = st.one_of(
    st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"]),
    st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ-_"), min_size=1, max_size=12),
)
_any_text = st.text(st.characters(codec="utf-8"), max_size=30)


@st.composite
def paths(draw: st.DrawFn) -> str:
    """A request path: a known route, a random one, percent-encoded garbage or a long one."""
    choice = draw(st.integers(-2, 3))
    if choice <= 0:  # the real routes, most often: that is where parsing happens
        return draw(st.sampled_from(_KNOWN_PATHS))
    if choice == 1:
        segments = draw(st.lists(_any_text, max_size=4))
        return "/" + "/".join(urllib.parse.quote(s, safe="") for s in segments)
    if choice == 2:
        return draw(st.sampled_from(_KNOWN_PATHS)) + "".join(draw(st.lists(st.sampled_from(_RAW), max_size=3)))
    return "/" + "a" * draw(st.integers(100, 6000))


@st.composite
def queries(draw: st.DrawFn) -> str:
    """A query string: known and random keys, odd values, repeats, raw broken escapes."""
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.one_of(st.sampled_from(_KNOWN_PARAMS), _any_text))
        value = draw(st.one_of(st.sampled_from(_ODD_VALUES), _any_text))
        quoted = urllib.parse.quote(key, safe="") + "=" + urllib.parse.quote(value, safe="", errors="surrogatepass")
        parts.append(
            draw(st.sampled_from([quoted, urllib.parse.quote(key, safe=""), quoted + draw(st.sampled_from(_RAW))]))
        )
    return "&".join(parts)


_header_names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz-ABCXYZ0123456789"), min_size=1, max_size=20).filter(
    lambda n: n.lower() not in {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade"}
)
_header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)
_auth_values = st.one_of(
    st.just(f"Bearer {TOKEN}"),
    st.just(f"bearer   {TOKEN}  "),
    st.just(f"Basic {TOKEN}"),
    st.just("Bearer"),
    st.just("Bearer "),
    st.just(f"Bearer {TOKEN}x"),
    st.just(f"Bearer {TOKEN[:-1]}"),
    st.just("Bearer \xe9\xff"),
    _header_values,
)


@st.composite
def headers(draw: st.DrawFn) -> dict[str, str]:
    """Random headers, sometimes with an Authorization header (right, wrong or garbled)."""
    out = draw(st.dictionaries(_header_names, _header_values, max_size=4))
    if draw(st.booleans()):
        out["Authorization"] = draw(_auth_values)
    if draw(st.booleans()):
        out["Accept"] = draw(st.sampled_from(["text/html", "application/json", "*/*", "", "\xff"]))
    return out


bodies = st.one_of(st.none(), st.binary(max_size=200), st.just(b'{"limit": -1}'))


# -- the fuzz tests ----------------------------------------------------------------------------


@FUZZ
@given(method=methods, path=paths(), query=queries(), hdrs=headers(), body=bodies)
def test_fuzz_open_server(
    servers: dict[str, Any], method: str, path: str, query: str, hdrs: dict[str, str], body: bytes | None
) -> None:
    """Random methods, paths, queries, headers and bodies: 2xx/4xx only, JSON errors, never a 500."""
    if autotrace.trace_count() < 2:
        _record_odd_spans()
    target = path + ("?" + query if query else "")
    answer = _request(servers["open"].port, method, target, hdrs, body)
    _check(method, target, answer)


@FUZZ
@given(method=methods, path=paths(), query=queries(), hdrs=headers())
def test_fuzz_token_server(servers: dict[str, Any], method: str, path: str, query: str, hdrs: dict[str, str]) -> None:
    """With a token set, random requests get 2xx only with the right bearer token (or on public routes)."""
    if autotrace.trace_count() < 2:
        _record_odd_spans()
    target = path + ("?" + query if query else "")
    answer = _request(servers["token"].port, method, target, hdrs)
    _check(method, target, answer)
    decoded = urllib.parse.unquote_to_bytes(target.split("?", 1)[0]).decode("utf-8", "ignore").lstrip("/")
    public = decoded in ("", "health")
    scheme, _, credentials = hdrs.get("Authorization", "").strip().partition(" ")
    authorized = scheme.lower() == "bearer" and credentials.strip() == TOKEN
    if 200 <= answer.status < 300 and not public:
        assert authorized, (method, target, hdrs)


def test_server_healthy_after_fuzzing(servers: dict[str, Any]) -> None:
    """After the fuzz runs both servers still answer /health and serve valid OTLP on /traces."""
    _record_odd_spans()
    _healthy(servers["open"].port)
    _healthy(servers["token"].port, {"Authorization": f"Bearer {TOKEN}"})
    denied = _request(servers["token"].port, "GET", "/traces", {})
    assert denied.status == 401 and "error" in json.loads(denied.body)


_RAW_REQUESTS = [
    b"GET  /traces HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /traces?limit=\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /traces?clear=%ff%fe%fd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /\xc3\x28/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /%ed%a0%80 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /traces?trace_id=%ed%a0%80 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /traces HTTP/1.0\r\n\r\n",
    b"GET /traces HTTP/1.1\r\nHost: \xff\xfe\r\nX-Odd: \xe9\r\n\r\n",
    b"GET /traces HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"DELETE /traces?limit=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
    b"DELETE /traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}",
    b"GET /traces?" + b"limit=1&" * 2000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /traces?" + b"x" * 20000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
]
# Requests the HTTP layer (wsgiref / http.server) refuses before the app sees them.
_PROTOCOL_ERRORS = [
    b"GET /\xed\xa0\x80?\xed\xa0\x80=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # \xa0 splits the request line
    b"GET /traces HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /health HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n",  # http.server says 505: answered 400
    b"GET /health HTTP/9.9\r\n\r\n",
    b"GET /health HTTP/1.1.1\r\n\r\n",  # a bad version: used to be answered with no status line
    b"GET /health HTTP/1.x\r\n\r\n",
    b"GET /health FTP/1.1\r\n\r\n",
    b"GET\r\n\r\n",
]


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; return status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        hdrs[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return status, hdrs, body


@pytest.mark.parametrize("request_bytes", _RAW_REQUESTS, ids=range(len(_RAW_REQUESTS)))
def test_raw_malformed_requests(servers: dict[str, Any], request_bytes: bytes) -> None:
    """Raw bytes that no client library would send (invalid UTF-8, lone surrogates, no Host): 4xx/2xx JSON."""
    _record_odd_spans()
    status, hdrs, body = _raw(servers["open"].port, request_bytes)
    method, target = request_bytes.split(b" ", 2)[:2]
    _check(method.decode("latin-1"), target.decode("latin-1"), Answer(status, hdrs, body))
    _healthy(servers["open"].port)


@pytest.mark.parametrize("request_bytes", _PROTOCOL_ERRORS, ids=range(len(_PROTOCOL_ERRORS)))
def test_protocol_errors_are_client_errors(servers: dict[str, Any], request_bytes: bytes) -> None:
    """Requests refused by the HTTP layer get a 4xx JSON error, never a 5xx, and the server stays healthy."""
    try:
        status, hdrs, body = _raw(servers["open"].port, request_bytes)
    except ConnectionResetError:  # refusing by closing the connection is fine too
        _healthy(servers["open"].port)
        return
    assert 400 <= status < 500, (status, body[:300])
    assert hdrs.get("content-type", "").startswith("application/json"), (status, hdrs, body[:300])
    doc = json.loads(body.decode("utf-8"))
    assert doc["status"] == status and doc["error"]
    _healthy(servers["open"].port)


_HEADER_NAMES = ["Authorization", "Host", "Cookie", "Sec-Fetch-Site", "Origin", "Accept", "Content-Type", "X-Odd"]


@pytest.mark.parametrize("which", ["open", "token"])
@pytest.mark.parametrize("header", _HEADER_NAMES)
@pytest.mark.parametrize("path", ["/traces", "/ready", "/health", "/", "/nope"])
def test_header_values_that_are_not_utf8(servers: dict[str, Any], which: str, header: str, path: str) -> None:
    """A header value of bytes that are not UTF-8, on every route: a 2xx/4xx JSON answer, never a 500."""
    request = (
        f"GET {path} HTTP/1.1\r\n".encode()
        + (b"" if header == "Host" else b"Host: 127.0.0.1\r\n")
        + header.encode()
        + b": \xff\xfe\xe9\r\n\r\n"
    )
    status, hdrs, body = _raw(servers[which].port, request)
    _check("GET", path, Answer(status, hdrs, body))


def test_non_ascii_token_is_accepted_when_sent_as_utf8() -> None:
    """A token with non-ASCII characters works when the client sends it UTF-8 encoded, and only then."""
    token = "t\u00f8ken-\u00e9-\u2603"
    with server.start_in_background("127.0.0.1", 0, token=token) as handle:
        good = b"Authorization: Bearer " + token.encode("utf-8")
        bad = b"Authorization: Bearer " + token.encode("latin-1", "replace")
        for header, expected in ((good, 200), (bad, 401)):
            request = b"GET /traces HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\n\r\n"
            status, hdrs, body = _raw(handle.port, request)
            assert status == expected, (status, body[:200])
            assert hdrs["content-type"].startswith("application/json")
