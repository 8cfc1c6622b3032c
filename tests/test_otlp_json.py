"""The direct OTLP/JSON encoder (``_otlp_json``) writes the document ``json.dumps(otlp.encode_spans(...))`` writes.

Compared once parsed, on spans with every kind of content: attribute types,
escapes and lone surrogates, non-finite floats, events, links, status, trace
state and flags, received spans with their own resource and scope.
"""

from __future__ import annotations

import enum
import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import autotrace
from autotrace import Link, Span, SpanContext, span, traced
from autotrace import _otlp_json as direct
from autotrace._decode_json import decode_document
from autotrace._model import continued_trace_id
from autotrace._resource import current as resource_attributes
from autotrace.otlp import encode_spans
from tests.conftest import all_spans
from tests.otlp_check import span_count, validate


class Level(enum.IntEnum):
    """An int subclass as an attribute value."""

    HIGH = 3


class Tag(str):
    """A str subclass as an attribute value."""


ODD_VALUES: dict[str, Any] = {
    "ascii": "plain",
    "unicode": "héllo wörld ✓ 日本",
    "escapes": 'quote " backslash \\ newline \n tab \t nul \x00 bell \x07 sep \u2028 del \x7f',
    "surrogate": "bad \udc80 text",
    "empty": "",
    "true": True,
    "false": False,
    "zero": 0,
    "negative": -17,
    "big": 2**63 - 1,
    "huge": -(2**70),
    "float": 0.1,
    "negative_zero": -0.0,
    "tiny": 5e-324,
    "large": 1e300,
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "int_enum": Level.HIGH,
    "str_subclass": Tag("tagged"),
    "bytes": b"\x00\xff raw",
    "list": ["a", 1, 2.5, True, None, math.nan, "é\udc80"],
    "tuple": (1, 2, 3),
    "nested": {"k": [1, {"deep": "x"}], "f": -math.inf},
    "empty_list": [],
    "object": object,
    'k\u00e9y "quoted" \udcff': "a key with escapes and a lone surrogate",
}


def same_document(spans: list[Span], resource: dict[str, Any] | None = None) -> dict[str, Any]:
    """The direct encoder's bytes, parsed, after checking they equal otlp's document through json.dumps."""
    res = resource_attributes() if resource is None else resource
    expected = json.loads(json.dumps(encode_spans(spans, res)))
    for pieces in ([direct.encode(spans, res, "backslashreplace")], list(direct.stream([spans], res, 3))):
        body = b"".join(pieces)
        got = json.loads(body)
        assert got == expected
        assert body.count(b"\n") == 0 and b"NaN," not in body
    return expected


def test_every_attribute_type_encodes_as_otlp_does() -> None:
    """Strings (escapes, unicode, lone surrogates), ints, floats (NaN, inf, -0.0), bools, bytes, lists, maps."""
    s = Span("odd \u00e9 \udc80 name", attributes=ODD_VALUES)
    autotrace.record_span(s)
    hand = Span("raw attributes")
    hand._attrs = dict(ODD_VALUES)  # values the attribute rules would have coerced: the encoder takes them too
    hand.end()
    same_document([s, hand])
    validate(same_document([s]))  # the raw one may hold what OTLP cannot (an int past 64 bits), as otlp writes it


def test_events_links_status_and_flags_encode_as_otlp_does() -> None:
    """Events (dropped counts too), links (trace state, flags), error and ok status, a remote parent, drops."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_attributes=2, max_events=2, max_links=2))
    from autotrace.propagation import extract

    remote = extract(
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "v=1,w=two"}
    )
    with span("server", kind="server", parent=remote) as root:
        root.add_event("first_token", {"n": 1, "s": "x", "extra": 3})
        root.add_event("second", timestamp=1_700_000_000_000_000_000)
        root.add_event("dropped")
        root.add_link(SpanContext(1, 2, True, True, "a=b", False), {"why": "batch", "n": 2, "x": 3})
        root.add_link(Link(SpanContext(3, 4)))
        root.add_link(Link(SpanContext(5, 6)))
        root.set_attribute("a", 1)
        root.set_attribute("b", 2)
        root.set_attribute("c", 3)
        with span("child", kind="client") as child:
            child.set_status("error", 'it broke: \u00e9 "quoted"')
        with span("ok"):
            pass
    try:
        with span("raises"):
            raise ValueError("boom")
    except ValueError:
        pass
    s = Span("ok-status", trace_id=continued_trace_id(7, "k=v", random=False), parent_span_id=9)
    s.set_status("ok")
    s.end()
    autotrace.record_span(s)
    spans = all_spans()
    assert span_count(same_document(spans)) == 5
    validate(autotrace.export_traces())


def test_long_names_and_odd_times_encode_as_otlp_does() -> None:
    """A name past max_name_length is cut alike; an end before the start is written as the start."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_name_length=8))
    with span("a name longer than eight"):
        pass
    s = Span("backwards", start_time_unix_nano=2_000, end_time_unix_nano=3_000)
    s._end = 1_000
    open_span = Span("never ended", start_time_unix_nano=5)
    same_document([*all_spans(), s, open_span])


@traced
def _work(n: int) -> int:
    return n


def test_traced_spans_and_received_spans_encode_as_otlp_does() -> None:
    """@traced spans (shared attribute dict) and received spans under their own resources and scopes."""
    for i in range(3):
        _work(i)
    received: list[Span] = []
    for service in ("b-service", "a-service"):
        for scope in ("lib-one", "lib-two"):
            doc = {
                "resourceSpans": [
                    {
                        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                        "scopeSpans": [
                            {
                                "scope": {"name": scope, "version": "1.0"},
                                "spans": [
                                    {
                                        "traceId": "5b8efff798038103d269b633813fc60c",
                                        "spanId": "eee19b7ec3c1b174",
                                        "name": f"{service}/{scope}",
                                        "startTimeUnixNano": "1",
                                        "endTimeUnixNano": "2",
                                        "attributes": [{"key": "k", "value": {"arrayValue": {"values": [{}]}}}],
                                    }
                                ],
                            }
                        ],
                    }
                ]
            }
            received += decode_document(doc).spans
    local = all_spans()
    doc = same_document([received[0], *local, *received[1:]])
    assert len(doc["resourceSpans"]) == 3
    validate(doc)


def test_empty_input_is_an_empty_request() -> None:
    """No spans: ``{"resourceSpans":[]}``, as otlp writes it."""
    assert direct.encode([], resource_attributes()) == b'{"resourceSpans":[]}'
    assert b"".join(direct.stream([], {})) == b'{"resourceSpans":[]}'


def test_text_otlp_cannot_carry_is_made_valid_for_a_strict_encode() -> None:
    """A lone surrogate in a link's trace state is written as U+FFFD by both encoders, "strict" included."""
    s = Span("x", links=[SpanContext(1, 2, True, True, "k=\udc80")])
    s.end()
    resource = resource_attributes()
    json.dumps(encode_spans([s], resource), ensure_ascii=False).encode("utf-8")  # the exporters' way until now
    strict = direct.encode([s], resource)
    assert "k=\ufffd".encode() in strict
    assert direct.encode([s], resource, "backslashreplace") == strict
    assert json.loads(strict) == json.loads(json.dumps(encode_spans([s], resource)))


_leaves = (
    st.text()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.binary(max_size=8)
    | st.none()
)
_values = st.recursive(
    _leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.text(max_size=40),
    attributes=st.dictionaries(st.text(max_size=10), _values, max_size=6),
    event_name=st.text(max_size=10),
)
def test_any_span_content_encodes_as_otlp_does(name: str, attributes: dict[str, Any], event_name: str) -> None:
    """Whatever a span holds (raw, and through the attribute rules), both encoders write the same document."""
    cleaned = Span(name, attributes=attributes)
    cleaned.add_event(event_name, attributes)
    cleaned.end()
    raw = Span("raw")
    raw._attrs = attributes
    raw.end()
    same_document([cleaned, raw])


def test_get_traces_answers_the_document_export_traces_gives() -> None:
    """GET /traces, ?limit and /traces/{id} (streamed in pieces) parse to what export_traces() gives."""
    from autotrace.server import start_in_background
    from tests.server_helpers import fetch

    for i in range(300):  # more spans than one streamed piece holds
        with span(f"root{i}", attributes=ODD_VALUES if i % 7 == 0 else {"i": i}) as root:
            root.add_event("e", {"i": i})
            with span("child"):
                pass
    with start_in_background(port=0) as handle:
        whole = fetch(handle.url, "/traces")
        last = fetch(handle.url, "/traces?limit=3")
        tid = autotrace.get_trace_store().traces()[5][0].trace_id
        one = fetch(handle.url, f"/traces/{tid}")
    assert whole.status == last.status == one.status == 200
    assert whole.json() == json.loads(json.dumps(autotrace.export_traces()))
    assert last.json() == json.loads(json.dumps(autotrace.export_traces(3)))
    (only,) = [t for t in autotrace.get_trace_store().traces() if t[0].trace_id == tid]
    assert one.json() == json.loads(json.dumps(encode_spans(only, resource_attributes())))
    validate(whole.json())


def test_each_streamed_piece_holds_one_run_of_spans() -> None:
    """A small answer is one piece (one send); a large one a piece per ``chunk`` spans, brackets included."""
    for i in range(7):
        with span(f"s{i}"):
            pass
    traces = autotrace.get_trace_store().traces()
    resource = resource_attributes()
    assert len(list(direct.stream(traces, resource, 256))) == 1
    pieces = list(direct.stream(traces, resource, 3))
    assert len(pieces) == 3 and pieces[0].startswith(b'{"resourceSpans":[{"resource":')
    assert pieces[-1].endswith(b"]}]}]}")
    assert json.loads(b"".join(pieces)) == json.loads(json.dumps(encode_spans(all_spans(), resource)))
