"""What a hostile span producer or sender can put in the store never makes an export unreadable.

One span with a malformed link, a time outside OTLP's fixed64, or a received
scope or trace state holding a lone surrogate used to make every export that
held it fail (the file and OTLP/HTTP exporters encode strictly) or be refused
whole by a real OTLP parser (GET /traces escapes what is not UTF-8). Each is
checked here with opentelemetry-proto's own JSON parser, through real servers.
"""

from __future__ import annotations

import enum
import json
import math
import random
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import autotrace
from autotrace import Link, Span, SpanContext, StatusCode
from autotrace.export import FileExporter
from autotrace.server import start_in_background
from tests.conftest import all_spans
from tests.otlp_check import validate
from tests.server_helpers import fetch


def _parsed(body: bytes) -> ExportTraceServiceRequest:
    """The body as the official OTLP/JSON parser reads it (raises on anything it refuses)."""
    return json_format.Parse(body, ExportTraceServiceRequest())


def _received_document() -> bytes:
    """An OTLP/JSON request whose scope, trace states and texts hold lone surrogates (valid JSON escapes)."""
    bad = "\\udc80"
    tid = "5b8efff798038103d269b633813fc60c"
    doc = (
        '{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"s'
        + bad
        + '"}}]},"scopeSpans":[{"scope":{"name":"lib'
        + bad
        + '","version":"1'
        + bad
        + '","attributes":[{"key":"k'
        + bad
        + '","value":{"stringValue":"v"}}]},"spans":[{"traceId":"'
        + tid
        + '","spanId":"eee19b7ec3c1b174","traceState":"a=b'
        + bad
        + '","name":"n'
        + bad
        + '","startTimeUnixNano":"1","endTimeUnixNano":"2","links":[{"traceId":"'
        + tid
        + '","spanId":"eee19b7ec3c1b175","traceState":"c=d'
        + bad
        + '"}]}]}]}]}'
    )
    json.loads(doc)  # valid JSON, as a sender would post it
    return doc.encode("ascii")


def test_received_scope_and_trace_states_with_lone_surrogates_stay_exportable(tmp_path: Path) -> None:
    """A POST /v1/traces with lone surrogates in its scope and trace states: GET /traces and a file export parse."""
    with autotrace.span("local"):
        pass
    with start_in_background(port=0) as handle:
        sent = fetch(
            handle.url,
            "/v1/traces",
            method="POST",
            body=_received_document(),
            headers={"Content-Type": "application/json"},
        )
        assert sent.status == 200, sent.body
        got = fetch(handle.url, "/traces")
    assert got.status == 200
    message = _parsed(got.body)
    assert sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans) == 2
    validate(got.json())
    scopes = [ss.scope.name for rs in message.resource_spans for ss in rs.scope_spans]
    assert "lib\ufffd" in scopes
    exporter = FileExporter(tmp_path / "spans.jsonl")
    assert exporter.export(all_spans())  # strict UTF-8: one bad text used to fail the whole batch
    (line,) = (tmp_path / "spans.jsonl").read_bytes().splitlines()
    _parsed(line)


def test_a_link_a_trace_state_with_a_lone_surrogate_is_written_as_valid_text() -> None:
    """A link's trace state given with a lone surrogate is written with U+FFFD, strict encoding included."""
    s = Span("x", links=[SpanContext(1, 2, True, True, "k=\udc80")])
    s.end()
    autotrace.record_span(s)
    doc = autotrace.export_traces()
    validate(doc)
    from autotrace import _otlp_json
    from autotrace._resource import current

    body = _otlp_json.encode([s], current())  # strict, as the exporters encode
    assert json.loads(body) == json.loads(json.dumps(doc))
    assert _parsed(body).resource_spans[0].scope_spans[0].spans[0].links[0].trace_state == "k=\ufffd"


def _bad_contexts() -> list[Any]:
    return [
        SpanContext(1 << 130, 1),
        SpanContext(-1, 1),
        SpanContext(1, 1 << 65),
        SpanContext("ab", 1),  # type: ignore[arg-type]
        SpanContext(1.0, 2),  # type: ignore[arg-type]
        SpanContext(1, 2, trace_state=None),  # type: ignore[arg-type]
        SpanContext(1, 2, trace_state=5),  # type: ignore[arg-type]
        Link("not a context"),  # type: ignore[arg-type]
        Link(SpanContext(True, 2)),  # type: ignore[arg-type]
    ]


def test_a_link_to_a_malformed_context_is_refused_and_counted_not_exported() -> None:
    """SpanContext is a plain tuple: a link with a bad id or trace state is dropped (counted), the span exports."""
    with autotrace.span("linked") as s:
        for ctx in _bad_contexts():
            s.add_link(ctx)
        s.add_link(SpanContext(3, 4, trace_state="a=b"))
    assert s.dropped_links_count == len(_bad_contexts())
    assert [lk.context for lk in s.links] == [SpanContext(3, 4, trace_state="a=b")]
    hand = Span("hand", links=_bad_contexts())
    autotrace.record_span(hand)
    assert hand.dropped_links_count == len(_bad_contexts())
    with start_in_background(port=0) as handle:
        got = fetch(handle.url, "/traces")
    assert got.status == 200
    assert sum(len(ss.spans) for rs in _parsed(got.body).resource_spans for ss in rs.scope_spans) == 2
    validate(autotrace.export_traces())


def test_times_outside_fixed64_are_held_in_range() -> None:
    """Start, end and event times below 0 or past 2**64-1 are held to the range: the export parses."""
    top = (1 << 64) - 1
    a = Span("before zero", start_time_unix_nano=-5, end_time_unix_nano=1 << 70)
    autotrace.record_span(a)
    b = Span("past the top", start_time_unix_nano=1 << 80)
    b.add_event("late", timestamp=1 << 90)
    b.add_event("early", timestamp=-1)
    b.end(end_time=1 << 100)
    autotrace.record_span(b)
    assert (a.start_time_unix_nano, a.end_time_unix_nano) == (0, top)
    assert (b.start_time_unix_nano, b.end_time_unix_nano) == (top, top)
    assert [e.timestamp for e in b.events] == [top, 0]
    with start_in_background(port=0) as handle:
        got = fetch(handle.url, "/traces")
    assert got.status == 200
    spans = [s for rs in _parsed(got.body).resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert sorted(s.end_time_unix_nano for s in spans) == [top, top]
    validate(autotrace.export_traces())


def test_a_status_tuple_with_a_code_that_is_no_status_code_is_ignored() -> None:
    """Status is a plain tuple: set_status(Status("x")) or Status(5) is ignored as set_status("x") is, not exported."""
    from autotrace import Status, StatusCode

    for bad in (Status("x"), Status(5, "five"), Status(2.5), Status([2])):  # type: ignore[arg-type]
        with autotrace.span("odd status") as s:
            s.set_status(bad)
        assert s.status.code == StatusCode.UNSET
    with autotrace.span("error status") as s:
        s.set_status(Status("error", "broke"))  # type: ignore[arg-type]  # a code by name, as a bare one
    assert s.status == Status(StatusCode.ERROR, "broke")
    with start_in_background(port=0) as handle:
        got = fetch(handle.url, "/traces")
    assert got.status == 200
    spans = [s for rs in _parsed(got.body).resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert sorted(s.status.code for s in spans) == [0, 0, 0, 0, 2]
    validate(autotrace.export_traces())


def test_long_attribute_keys_are_not_kept_by_the_encoder_after_their_spans_go() -> None:
    """Keys of any length (a received span's can be megabytes) leave no copy behind once the store lets go."""
    import gc
    import tracemalloc

    from autotrace import _otlp_json
    from autotrace._resource import current

    spans = []
    for i in range(40):
        s = Span("long keys", attributes={f"{i}-" + "k" * 100_000: i})
        s.end()
        spans.append(s)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        body = _otlp_json.encode(spans, current())
        assert len(body) > 4_000_000
        del body, spans, s
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 400_000, f"{kept} bytes kept after encoding 4 MB of keys"  # before: about 4 MB


class _IntEnum(enum.IntEnum):
    """An int subclass as a value."""

    A = 7


class _Float(float):
    """A float subclass as a value."""


class _Str(str):
    """A str subclass as a value or key."""


def _text(r: random.Random) -> str:
    pool = ["a", "é", "\udc80", "\ud800", "\x00", "\x1f", "\u202e", "\u2028", '"', "\\", "日", "\U0001f600", "\ufeff"]
    return "".join(r.choice(pool) for _ in range(r.randint(0, 6)))


def _value(r: random.Random, depth: int = 0) -> Any:
    choice = r.randint(0, 13)
    if choice == 1:
        return r.choice([True, False])
    if choice == 2:
        return r.choice([0, -1, 2**63 - 1, -(2**63), 2**63, -(2**64) - 3, 10**30, _IntEnum.A])
    if choice == 3:
        return r.choice([0.1, -0.0, math.nan, math.inf, -math.inf, 5e-324, _Float(1.5), _Float("nan")])
    if choice == 4:
        return _Str(_text(r))
    if choice == 5:
        return bytes(r.randrange(256) for _ in range(3))
    if choice == 6 and depth < 3:
        return [_value(r, depth + 1) for _ in range(r.randint(0, 3))]
    if choice == 7 and depth < 3:
        return {_text(r): _value(r, depth + 1) for _ in range(r.randint(0, 3))}
    if choice == 8:
        return None
    if choice == 9:
        return r.choice([(1, "a"), {1, 2}, range(3), object(), bytearray(b"\xff")])
    return _text(r)


def test_any_span_made_through_the_api_exports_as_a_document_the_official_parser_accepts() -> None:
    """Seeded random spans (odd values, names, times, links, trace states, status): encoders agree, and it parses."""
    from autotrace import Status, _otlp_json
    from autotrace._model import continued_trace_id
    from autotrace._resource import current
    from autotrace.otlp import encode_spans

    r = random.Random(20)
    resource = current()
    for _ in range(150):
        spans = []
        tid = continued_trace_id(r.getrandbits(128) or 1, r.choice(["", "a=b", "k=\udc80"]), r.random() < 0.5)
        for _ in range(r.randint(1, 3)):
            attrs = {r.choice([_text(r), 5, None, b"k", _Str("s")]): _value(r) for _ in range(r.randint(0, 5))}
            s = Span(
                _text(r),
                attributes=attrs,  # type: ignore[arg-type]
                kind=r.choice(["server", "client", "internal", "producer", "consumer"]),
                trace_id=tid,
                parent_span_id=r.choice([None, r.getrandbits(64) or 1]),
                start_time_unix_nano=r.choice([0, 1, 2**64 - 1, 2**70, -3, 1_700_000_000_000_000_000]),
            )
            for _ in range(r.randint(0, 2)):
                s.add_event(_text(r), {_text(r): _value(r)}, timestamp=r.choice([None, -1, 2**65, 5]))
            for _ in range(r.randint(0, 2)):
                state = r.choice(["", "x=y", "\udc80"])
                ctx = SpanContext(r.getrandbits(128), r.getrandbits(64), r.random() < 0.5, r.random() < 0.5, state)
                s.add_link(ctx, {_text(r): _value(r)})
            if r.random() < 0.5:
                s.set_status(r.choice(["error", "ok", Status(StatusCode.ERROR, _text(r))]), _text(r))
            s.set_attribute(_text(r), _value(r))
            s.end(end_time=r.choice([None, 0, 2**66, -5]))
            autotrace.record_span(s)  # packed as it is filed
            s.set_attribute("after the end", 1)  # ignored
            spans.append(s)
        body = _otlp_json.encode(spans, resource)  # strict UTF-8, as the exporters encode
        assert json.loads(body) == json.loads(json.dumps(encode_spans(spans, resource)))
        message = _parsed(body)
        assert sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans) == len(spans)
