"""W3C Trace Context: inject/extract, the header rules, remote parents and outgoing calls."""

from __future__ import annotations

import email.message
import http.client
import io
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autotrace
from autotrace import propagation
from autotrace.propagation import extract, inject, parse_traceparent, parse_tracestate
from autotrace.redaction import redact_url
from autotrace.spans import SpanContext, SpanKind, StatusCode
from autotrace.testing import capture_spans
from tests.conftest import all_spans

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
VALID = f"00-{TRACE}-{PARENT}-01"

# (traceparent, expected (trace hex, parent hex, sampled) or None for invalid)
TRACEPARENT_CASES = [
    (VALID, (TRACE, PARENT, True)),
    (f"00-{TRACE}-{PARENT}-00", (TRACE, PARENT, False)),
    (f"00-{TRACE}-{PARENT}-09", (TRACE, PARENT, True)),  # unknown flag bits are ignored
    (f"00-{TRACE}-{PARENT}-08", (TRACE, PARENT, False)),
    (f"00-{TRACE}-{PARENT}-ff", (TRACE, PARENT, True)),
    (f"  {VALID}\t", (TRACE, PARENT, True)),  # surrounding spaces and tabs are tolerated
    (f"\t\t{VALID}  ", (TRACE, PARENT, True)),
    (f"01-{TRACE}-{PARENT}-01", (TRACE, PARENT, True)),  # a future version, same four fields
    (f"cc-{TRACE}-{PARENT}-01-what-the-future-will-be-like", (TRACE, PARENT, True)),
    (f"fe-{TRACE}-{PARENT}-00-x", (TRACE, PARENT, False)),
    (f"00-{'0' * 31}1-{'0' * 15}1-01", ("0" * 31 + "1", "0" * 15 + "1", True)),
    ("", None),
    ("00", None),
    (f"00-{TRACE}-{PARENT}", None),  # no flags
    (f"00-{TRACE}-{PARENT}-1", None),  # one-digit flags
    (f"00-{TRACE}-{PARENT}-01-", None),  # version 00 is exactly 55 characters
    (f"00-{TRACE}-{PARENT}-01-extra", None),
    (f"00-{TRACE}-{PARENT}-010", None),
    (f"cc-{TRACE}-{PARENT}-01x", None),  # a future version's extra part must follow a dash
    (f"ff-{TRACE}-{PARENT}-01", None),  # version ff is forbidden
    (f"0g-{TRACE}-{PARENT}-01", None),
    (f"0A-{TRACE}-{PARENT}-01", None),  # upper-case hex is invalid everywhere
    (f"00-{TRACE.upper()}-{PARENT}-01", None),
    (f"00-{TRACE}-{PARENT.upper()}-01", None),
    (f"00-{TRACE}-{PARENT}-0A", None),
    (f"00-{'0' * 32}-{PARENT}-01", None),  # all-zero trace id
    (f"00-{TRACE}-{'0' * 16}-01", None),  # all-zero parent id
    (f"00-{TRACE[:-1]}-{PARENT}-01", None),
    (f"00-{TRACE}a-{PARENT}-01", None),
    (f"00-{TRACE}-{PARENT}a-01", None),
    (f"00_{TRACE}_{PARENT}_01", None),
    (f"00-{TRACE}-{PARENT}-01\n", None),  # only spaces and tabs are trimmed
    (f"\n{VALID}", None),
    (f"00-{TRACE[:-1]}g-{PARENT}-01", None),
    (f"00-{TRACE[:-1]}\u0661-{PARENT}-01", None),  # a non-ASCII digit
    (f"00 {TRACE} {PARENT} 01", None),
    (f"{VALID},{VALID}", None),
]

KEY256 = "k" * 256
VAL256 = "v" * 256
# (tracestate, normalised result; "" = invalid, dropped)
TRACESTATE_CASES = [
    ("foo=1", "foo=1"),
    ("foo=1,bar=2", "foo=1,bar=2"),
    ("  foo=1 ,\tbar=2  ", "foo=1,bar=2"),
    ("foo=1,,bar=2,", "foo=1,bar=2"),  # empty members are allowed
    ("a_-*/z9=x", "a_-*/z9=x"),
    ("tenant@system=1", "tenant@system=1"),
    ("0tenant@sys=1", "0tenant@sys=1"),
    ("foo=a b", "foo=a b"),
    ("foo=!~\"'", "foo=!~\"'"),
    (f"{KEY256}=1", f"{KEY256}=1"),
    (f"foo={VAL256}", f"foo={VAL256}"),
    (",".join(f"k{i}=v" for i in range(32)), ",".join(f"k{i}=v" for i in range(32))),
    ("", ""),
    ("foo", ""),
    ("foo=", ""),
    ("=1", ""),
    ("Foo=1", ""),
    ("1foo=1", ""),  # a simple key starts with a letter
    ("foo=1,foo=2", ""),  # duplicate keys
    ("foo=a=b", ""),
    ("foo=caf\u00e9", ""),
    ("foo=a\tb", ""),
    (f"k{KEY256}=1", ""),
    (f"foo=v{VAL256}", ""),
    ("tenant@System=1", ""),
    ("tenant@s23456789012345=1", ""),  # system id up to 14 characters
    ("t@=1", ""),
    ("foo=1,bad key=2", ""),  # one bad member drops the whole tracestate
    (",".join(f"k{i}=v" for i in range(33)), ""),  # more than 32 entries
]


@pytest.mark.parametrize(("header", "expected"), TRACEPARENT_CASES)
def test_traceparent_rules(header: str, expected: tuple[str, str, bool] | None) -> None:
    """Each traceparent string parses or is rejected exactly as the W3C rules say."""
    ctx = parse_traceparent(header)
    via_extract = extract({"traceparent": header})
    if expected is None:
        assert ctx is None
        assert via_extract is None
        return
    assert ctx is not None and via_extract is not None
    assert (ctx.trace_id_hex, ctx.span_id_hex, ctx.sampled) == expected
    assert ctx.is_remote and via_extract == ctx


@pytest.mark.parametrize(("header", "expected"), TRACESTATE_CASES)
def test_tracestate_rules(header: str, expected: str) -> None:
    """Each tracestate is kept (normalised) or dropped whole, and the traceparent always stands."""
    assert parse_tracestate(header) == expected
    ctx = extract({"traceparent": VALID, "tracestate": header})
    assert ctx is not None
    assert ctx.trace_id_hex == TRACE
    assert ctx.trace_state == expected


def test_tracestate_headers_are_joined() -> None:
    """Several tracestate headers are one list, joined in order, as HTTP combines them."""
    ctx = extract([("traceparent", VALID), ("tracestate", "a=1"), ("TraceState", "b=2")])
    assert ctx is not None and ctx.trace_state == "a=1,b=2"


def test_tracestate_without_traceparent_is_ignored() -> None:
    """A tracestate alone, or with an invalid traceparent, gives no context."""
    assert extract({"tracestate": "a=1"}) is None
    assert extract({"traceparent": "nope", "tracestate": "a=1"}) is None


def test_duplicate_traceparent_starts_a_new_trace() -> None:
    """Two traceparent headers are ambiguous: extract gives None."""
    assert extract([("traceparent", VALID), ("Traceparent", f"00-{TRACE}-{'1' * 16}-01")]) is None


def test_extract_carriers() -> None:
    """Dicts (any case), pairs (str or bytes), email/http.client messages and WSGI environs all work."""
    want = (int(TRACE, 16), int(PARENT, 16))
    msg = email.message.Message()
    msg["TRACEPARENT"] = VALID
    raw = f"Host: x\r\nTraceParent: {VALID}\r\nTraceState: a=1\r\n\r\n".encode()
    parsed = http.client.parse_headers(io.BytesIO(raw))
    carriers = [
        {"traceparent": VALID},
        {"TraceParent": VALID},
        [("TRACEPARENT", VALID)],
        [(b"traceparent", VALID.encode())],
        msg,
        parsed,
        {"HTTP_TRACEPARENT": VALID, "HTTP_TRACESTATE": "a=1", "PATH_INFO": "/"},
    ]
    for carrier in carriers:
        ctx = extract(carrier)
        assert ctx is not None, carrier
        assert (ctx.trace_id, ctx.span_id) == want
    parsed_ctx = extract(parsed)
    assert parsed_ctx is not None and parsed_ctx.trace_state == "a=1"


@pytest.mark.parametrize(
    "carrier",
    [None, {}, [], 42, "traceparent", {"traceparent": None}, {"traceparent": 12}, [("x",)], [1, 2], {1: VALID}],
)
def test_extract_bad_carriers_give_none(carrier: object) -> None:
    """Missing or malformed carriers give None and never raise."""
    assert extract(carrier) is None


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.dictionaries(st.text(max_size=20), st.text(max_size=80)),
        st.dictionaries(st.sampled_from(["traceparent", "tracestate", "TraceParent"]), st.text(max_size=120)),
        st.lists(st.tuples(st.one_of(st.text(), st.binary()), st.one_of(st.text(), st.binary(), st.none()))),
    )
)
def test_extract_never_raises(carrier: object) -> None:
    """Any carrier of junk gives a remote SpanContext or None, never an exception."""
    ctx = extract(carrier)
    assert ctx is None or (isinstance(ctx, SpanContext) and ctx.is_remote and ctx.is_valid)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789abcdefABCDEF- \t\nxz", max_size=70))
def test_parse_traceparent_fuzz_near_misses(text: str) -> None:
    """Near-miss traceparent strings never raise and are valid only in the W3C shape."""
    ctx = parse_traceparent(text)
    if ctx is not None:
        stripped = text.strip(" \t")
        assert stripped[:2] != "ff" and stripped == stripped.lower()
        assert len(stripped) == 55 or (stripped[:2] != "00" and stripped[55] == "-")


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.booleans(), st.booleans())
def test_format_parse_round_trip(trace_id: int, span_id: int, sampled: bool, random: bool) -> None:
    """A formatted traceparent parses back to the same ids and flags."""
    text = propagation.format_traceparent(SpanContext(trace_id, span_id, sampled, random=random))
    assert len(text) == 55
    assert parse_traceparent(text) == SpanContext(trace_id, span_id, sampled, True, "", random)


def test_inject_writes_the_current_span() -> None:
    """inject() writes the current span's traceparent and returns the same dict."""
    with autotrace.span("op") as s:
        headers: dict[str, str] = {"accept": "*/*"}
        out = inject(headers)
    assert out is headers
    assert headers == {"accept": "*/*", "traceparent": f"00-{s.trace_id}-{s.span_id}-03"}  # sampled, random id


def test_inject_without_a_span_writes_nothing() -> None:
    """Outside any span inject() leaves the headers alone (a new dict when none given)."""
    assert inject() == {}
    headers = {"a": "b"}
    assert inject(headers) == {"a": "b"}


def test_inject_replaces_other_spellings() -> None:
    """An existing Traceparent header in another case is replaced, not duplicated."""
    headers = {"Traceparent": "old", "TRACESTATE": "old=1"}
    ctx = SpanContext(int(TRACE, 16), int(PARENT, 16), True, False, "a=1")
    inject(headers, ctx)
    assert headers == {"traceparent": VALID, "tracestate": "a=1"}
    msg = email.message.Message()
    msg["TraceParent"] = "old"
    inject(msg, ctx)
    assert msg.get_all("traceparent") == [VALID]


def test_inject_unsampled_trace_gives_flags_02() -> None:
    """An unsampled trace (the seed @traced keeps) still propagates its ids, with flags 02 (random id, not sampled)."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))

    @autotrace.traced
    def call() -> tuple[dict[str, str], str]:
        return inject(), autotrace.current_span().trace_id

    headers, trace_id = call()
    ctx = extract(headers)
    assert ctx is not None and not ctx.sampled
    assert ctx.trace_id_hex == trace_id and trace_id != "0" * 32
    assert headers["traceparent"].endswith("-02")


def test_inject_explicit_context_and_tracestate() -> None:
    """inject(context=...) writes that context, with its tracestate."""
    remote = extract({"traceparent": VALID, "tracestate": "vendor=x"})
    assert inject({}, remote) == {"traceparent": VALID, "tracestate": "vendor=x"}


def test_inject_extract_round_trip() -> None:
    """What inject writes, extract reads back as the same ids, remote."""
    with autotrace.span("op") as s:
        ctx = extract(inject())
    assert ctx is not None
    assert (ctx.trace_id_hex, ctx.span_id_hex, ctx.sampled, ctx.is_remote) == (s.trace_id, s.span_id, True, True)


def test_remote_parent_continues_the_trace() -> None:
    """span(parent=extract(h)) is in the caller's trace, with the caller's span as parent, and keeps tracestate."""
    with capture_spans() as spans:
        with autotrace.span("handle", kind="server", parent=extract({"traceparent": VALID, "tracestate": "v=1"})) as s:
            child_headers = inject()
            with autotrace.span("inner"):
                pass
    server = spans.one("handle")
    assert (server.trace_id, server.parent_span_id, server.kind) == (TRACE, PARENT, SpanKind.SERVER)
    assert spans.one("inner").parent_span_id == s.span_id
    assert child_headers["tracestate"] == "v=1"


def test_attach_makes_traced_calls_children() -> None:
    """Inside attach(headers), @traced calls are children of the remote span in its trace."""

    @autotrace.traced
    def work() -> str:
        return autotrace.current_span().span_id

    with capture_spans() as spans, propagation.attach({"traceparent": VALID}) as ctx:
        inner_id = work()
    assert ctx is not None and ctx.span_id_hex == PARENT
    span = spans.one(work.__qualname__)
    assert (span.trace_id, span.parent_span_id, span.span_id) == (TRACE, PARENT, inner_id)


def test_attach_honours_unsampled_flag() -> None:
    """A remote parent with flags 00 is not sampled: nothing is recorded, ids still propagate."""

    @autotrace.traced
    def work() -> dict[str, str]:
        return inject()

    before = autotrace.trace_count()
    with propagation.attach({"traceparent": f"00-{TRACE}-{PARENT}-00"}):
        headers = work()
        with autotrace.span("manual") as s:
            assert not s.is_recording
    assert autotrace.trace_count() == before
    assert headers["traceparent"].startswith(f"00-{TRACE}-")
    assert headers["traceparent"].endswith("-00")
    assert PARENT not in headers["traceparent"]  # the traced call's own span id, not the caller's


def test_use_span_accepts_extracted_context() -> None:
    """The core's use_span(extract(h)) works the same way as attach."""
    with capture_spans() as spans, autotrace.use_span(extract({"traceparent": VALID})), autotrace.span("x"):
        pass
    assert spans.one("x").parent_span_id == PARENT


def test_attach_invalid_headers_keeps_current_context() -> None:
    """attach() with junk yields None and leaves the current span current."""
    with autotrace.span("outer") as outer, propagation.attach({"traceparent": "junk"}) as ctx:
        assert ctx is None
        assert autotrace.current_span() is outer


def test_inject_request_adds_header() -> None:
    """inject_request puts the current traceparent on a urllib Request, replacing an old one."""
    req = urllib.request.Request("http://127.0.0.1:1/x", headers={"traceparent": "old"})
    with autotrace.span("call") as s:
        out = propagation.inject_request(req)
    assert out is req
    assert req.get_header("Traceparent") == f"00-{s.trace_id}-{s.span_id}-03"
    assert [k for k in req.header_items() if k[0].lower() == "traceparent"] == [
        ("Traceparent", f"00-{s.trace_id}-{s.span_id}-03")
    ]


# -- what every span below a remote parent sends on ------------------------------------------


def _tree(parent: SpanContext | None) -> tuple[list[dict[str, str]], list[str]]:
    """Under ``parent``: a server span, two @traced children and a grandchild, each injecting; (headers, span ids)."""
    sent: list[dict[str, str]] = []
    ids: list[str] = []

    def note() -> None:
        sent.append(inject({}))
        ids.append(autotrace.current_span().span_id)

    @autotrace.traced
    def grandchild() -> None:
        note()

    @autotrace.traced
    def child() -> None:
        note()
        grandchild()

    @autotrace.traced
    def sibling() -> None:
        note()

    with autotrace.span("server", kind="server", parent=parent):
        note()
        child()
        sibling()
        with autotrace.span("block"):
            note()
    return sent, ids


@pytest.mark.parametrize("flags", ["00", "01", "02", "03"])
def test_tracestate_reaches_every_descendant(flags: str) -> None:
    """Every span below a remote parent sends its tracestate on, sampled or not, and stores it as OTLP traceState."""
    remote = extract({"traceparent": f"00-{TRACE}-{PARENT}-{flags}", "tracestate": "vendor=x,other=y"})
    sent, _ = _tree(remote)
    assert len(sent) == 5
    assert all(h["tracestate"] == "vendor=x,other=y" for h in sent)
    assert all(h["traceparent"].startswith(f"00-{TRACE}-") for h in sent)
    stored = all_spans()
    if flags in ("01", "03"):
        assert sorted(s.name.rsplit(".", 1)[-1] for s in stored) == [
            "block",
            "child",
            "grandchild",
            "server",
            "sibling",
        ]
        assert all(s.to_dict()["traceState"] == "vendor=x,other=y" for s in stored)
        assert all(s.get_span_context().trace_state == "vendor=x,other=y" for s in stored)
    else:
        assert stored == []


def test_a_trace_started_here_sends_no_tracestate() -> None:
    """Without a remote parent no tracestate is invented, and none leaks from an earlier remote trace."""
    _tree(extract({"traceparent": VALID, "tracestate": "vendor=x"}))
    autotrace.clear_traces()
    sent, _ = _tree(None)
    assert all("tracestate" not in h for h in sent)
    stored = all_spans()
    assert len(stored) == 5 and all("traceState" not in s.to_dict() for s in stored)


@pytest.mark.parametrize(
    ("incoming", "outgoing"),
    [("00", "00"), ("01", "01"), ("02", "02"), ("03", "03"), ("ff", "03"), ("fd", "01"), ("08", "00"), ("0a", "02")],
)
def test_sampled_and_random_flags_are_kept_when_continuing_a_trace(incoming: str, outgoing: str) -> None:
    """Below a remote parent every span sends the W3C flags it received (sampled, random), and no other bit."""
    remote = extract({"traceparent": f"00-{TRACE}-{PARENT}-{incoming}"})
    assert remote is not None
    assert remote.trace_flags == int(outgoing, 16)
    sent, _ = _tree(remote)
    assert {h["traceparent"][-2:] for h in sent} == {outgoing}


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_a_new_trace_says_its_id_is_random(rate: float) -> None:
    """A trace started here (our ids are random) sends the random-trace-id flag, sampled or not."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=rate))
    sent, _ = _tree(None)
    assert {h["traceparent"][-2:] for h in sent} == {"03" if rate else "02"}
    with autotrace.span("root") as root:
        ctx = root.get_span_context()
    assert ctx.random and ctx.trace_flags == (0x03 if rate else 0x02)


@pytest.mark.parametrize("flags", ["00", "02"])
def test_every_span_below_an_unsampled_remote_parent_sends_its_own_parent_id(flags: str) -> None:
    """Below an unsampled remote parent each span sends its own span id as parent-id, never the caller's."""
    sent, ids = _tree(extract({"traceparent": f"00-{TRACE}-{PARENT}-{flags}"}))
    parent_ids = [h["traceparent"][36:52] for h in sent]
    assert parent_ids == ids  # what is sent is what current_span() says
    assert len(set(parent_ids)) == 5  # server, child, grandchild, sibling, block: one id each
    assert PARENT not in parent_ids
    assert all(h["traceparent"][3:35] == TRACE for h in sent)
    assert autotrace.trace_count() == 0


def test_an_unsampled_trace_started_here_sends_its_own_root_id() -> None:
    """In an unsampled trace started here every span sends the local root's id: ours, at no cost per call."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))
    sent, ids = _tree(None)
    assert {h["traceparent"][36:52] for h in sent} == set(ids) == {ids[0]}
    assert len({h["traceparent"][3:35] for h in sent}) == 1
    assert autotrace.trace_count() == 0


def test_an_unsampled_span_keeps_its_id_while_it_runs() -> None:
    """The id an unsampled span sends is the same each time it is asked, and a child's differs from it."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))

    @autotrace.traced
    def child() -> str:
        return inject({})["traceparent"]

    with propagation.attach({"traceparent": f"00-{TRACE}-{PARENT}-00"}):
        with autotrace.span("server") as s:
            first = inject({})["traceparent"]
            below = child()
            assert inject({})["traceparent"] == first == f"00-{TRACE}-{s.span_id}-00"
    assert below != first and below[:36] == first[:36]


# -- traced_urlopen against a real loopback server ------------------------------------------


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[str]:
    """A loopback WSGI server answering with the traceparent it received (status from the path)."""

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        status = "500 Internal Server Error" if environ.get("PATH_INFO") == "/fail" else "200 OK"
        start_response(status, [("Content-Type", "text/plain")])  # type: ignore[operator]
        return [str(environ.get("HTTP_TRACEPARENT", "")).encode()]

    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_traced_urlopen_client_span(echo_server: str) -> None:
    """traced_urlopen makes a CLIENT span and the server receives that span as parent."""
    with capture_spans() as spans, autotrace.span("caller") as caller:
        with propagation.traced_urlopen(f"{echo_server}/hello?q=1", timeout=10) as resp:
            received = resp.read().decode()
    client = spans.one("GET")
    assert client.kind == SpanKind.CLIENT and client.parent_span_id == caller.span_id
    assert received == f"00-{client.trace_id}-{client.span_id}-03"
    attrs = client.attributes
    assert attrs["http.request.method"] == "GET"
    assert attrs["url.full"] == f"{echo_server}/hello?q=1"
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == int(echo_server.rsplit(":", 1)[1])
    assert attrs["http.response.status_code"] == 200
    assert client.status.code == StatusCode.UNSET


def test_traced_urlopen_error_status(echo_server: str) -> None:
    """A 5xx answer raises urlopen's own HTTPError and marks the client span ERROR."""
    with capture_spans() as spans, pytest.raises(urllib.error.HTTPError) as info:
        propagation.traced_urlopen(f"{echo_server}/fail", timeout=10)
    info.value.close()
    client = spans.one("GET")
    assert client.attributes["http.response.status_code"] == 500
    assert client.status.code == StatusCode.ERROR


def test_traced_urlopen_hides_credentials(echo_server: str) -> None:
    """url.full never records a user name or password."""
    port = echo_server.rsplit(":", 1)[1]
    req = urllib.request.Request(f"http://127.0.0.1:{port}/x", method="POST", data=b"hi")
    with capture_spans() as spans, propagation.traced_urlopen(req, timeout=10) as resp:
        resp.read()
    assert spans.one("POST").attributes["http.request.method"] == "POST"
    assert redact_url("http://user:pw@host:8/p") == "http://REDACTED:REDACTED@host:8/p"
