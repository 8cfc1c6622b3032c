"""export_traces(): a real OTLP/JSON ExportTraceServiceRequest, checked with the official schema."""

from __future__ import annotations

import json
import math

import pytest

import autotrace
from autotrace import Link, Span, SpanContext, span, traced
from autotrace.otlp import any_value
from tests.otlp_check import attrs_of, spans_of, validate


def _record_sample() -> None:
    @traced("generate", kind="server", attributes={"gen_ai.request.model": "tiny-llm"})
    def generate() -> None:
        with span("decode", attributes={"step": 3, "ok": True, "t": 0.5, "toks": ["a", "b"]}) as s:
            s.add_event("first_token", {"ttft_ms": 41.2})
            s.add_link(SpanContext(0x5B8EFFF798038103D269B633813FC60C, 0xEEE19B7EC3C1B174, True, True, "a=b"))
        raise ValueError("boom")

    with pytest.raises(ValueError):
        generate()


def test_export_validates_against_official_schema() -> None:
    """The document parses with opentelemetry-proto's ExportTraceServiceRequest, ids of the right size."""
    _record_sample()
    doc = autotrace.export_traces()
    message = validate(doc)
    spans = message.resource_spans[0].scope_spans[0].spans
    assert len(spans) == 2
    assert all(len(s.trace_id) == 16 and len(s.span_id) == 8 for s in spans)
    decode = next(s for s in spans if s.name == "decode")
    assert len(decode.parent_span_id) == 8
    assert len(decode.links[0].trace_id) == 16


def test_export_format_details() -> None:
    """Keys, hex ids, enum integers, decimal-string 64-bit ints and AnyValue attributes."""
    _record_sample()
    doc = autotrace.export_traces()
    rs = doc["resourceSpans"]
    assert len(rs) == 1 and len(rs[0]["scopeSpans"]) == 1
    spans = {s["name"]: s for s in spans_of(doc)}
    gen, dec = spans["generate"], spans["decode"]
    assert gen["kind"] == 2 and dec["kind"] == 1
    assert "parentSpanId" not in gen
    assert dec["parentSpanId"] == gen["spanId"]
    assert len(gen["traceId"]) == 32 and len(gen["spanId"]) == 16
    assert isinstance(gen["startTimeUnixNano"], str) and int(gen["endTimeUnixNano"]) >= int(gen["startTimeUnixNano"])
    assert gen["status"] == {"code": 2, "message": "ValueError: boom"}
    assert dec["status"] == {}
    assert {"key": "step", "value": {"intValue": "3"}} in dec["attributes"]
    assert {"key": "ok", "value": {"boolValue": True}} in dec["attributes"]
    assert {"key": "t", "value": {"doubleValue": 0.5}} in dec["attributes"]
    assert {"key": "toks", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"stringValue": "b"}]}}} in dec[
        "attributes"
    ]
    (event,) = dec["events"]
    assert event["name"] == "first_token" and isinstance(event["timeUnixNano"], str)
    (link,) = dec["links"]
    assert link["traceId"] == "5b8efff798038103d269b633813fc60c" and link["traceState"] == "a=b"
    exc_event = gen["events"][0]
    assert exc_event["name"] == "exception"
    assert attrs_of(exc_event)["exception.type"] == "ValueError"
    json.dumps(doc, allow_nan=False)


def test_resource_and_scope() -> None:
    """Resource carries service.name/version and telemetry.sdk.*; scope is autotrace with version."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, service_name="svc", service_version="2.0"))
    with span("x"):
        pass
    doc = autotrace.export_traces()
    resource = attrs_of(doc["resourceSpans"][0]["resource"])
    assert resource["service.name"] == "svc" and resource["service.version"] == "2.0"
    assert resource["telemetry.sdk.name"] == "autotrace"
    assert resource["telemetry.sdk.language"] == "python"
    assert resource["telemetry.sdk.version"] == autotrace.__version__
    scope = doc["resourceSpans"][0]["scopeSpans"][0]["scope"]
    assert scope == {"name": "autotrace", "version": autotrace.__version__}


def test_empty_export() -> None:
    """With nothing stored the request has an empty resourceSpans list and is valid."""
    doc = autotrace.export_traces()
    assert doc == {"resourceSpans": []}
    validate(doc)


def test_export_limit_keeps_most_recent_whole_traces() -> None:
    """export_traces(limit=N) returns the N most recent traces, each whole."""
    for i in range(5):
        with span(f"root{i}"):
            with span(f"child{i}"):
                pass
    doc = autotrace.export_traces(limit=2)
    names = sorted(s["name"] for s in spans_of(doc))
    assert names == ["child3", "child4", "root3", "root4"]
    assert autotrace.export_traces(limit=0) == {"resourceSpans": []}


def test_special_values_encode() -> None:
    """NaN and infinities become the strings OTLP/JSON uses; big ints stay exact."""
    assert any_value(float("nan")) == {"doubleValue": "NaN"}
    assert any_value(math.inf) == {"doubleValue": "Infinity"}
    assert any_value(-math.inf) == {"doubleValue": "-Infinity"}
    assert any_value(2**62) == {"intValue": str(2**62)}
    assert any_value(b"\x00\x01") == {"bytesValue": "AAE="}
    s = Span("x", attributes={"nan": float("nan"), "big": 2**62, "none_in_list": ["a", None]})
    autotrace.record_span(s)
    validate(autotrace.export_traces())


def test_dropped_counts_exported() -> None:
    """Dropped attribute/event/link counts appear as OTLP fields."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_attributes=1, max_events=1, max_links=1))
    s = Span("x", attributes={"a": 1, "b": 2})
    s.add_event("e1")
    s.add_event("e2")
    s.add_link(Link(SpanContext(1, 2)))
    s.add_link(Link(SpanContext(3, 4)))
    autotrace.record_span(s)
    doc = autotrace.export_traces()
    validate(doc)
    (out,) = spans_of(doc)
    assert out["droppedAttributesCount"] == 1
    assert out["droppedEventsCount"] == 1
    assert out["droppedLinksCount"] == 1


def test_span_to_dict() -> None:
    """Span.to_dict() is the span's OTLP/JSON object."""
    s = Span("x", trace_id=1, span_id=2)
    d = s.to_dict()
    assert d["traceId"] == "0" * 31 + "1" and d["spanId"] == "0" * 15 + "2" and d["name"] == "x"


REMOTE_TRACE = "0af7651916cd43dd8448eb211c80319c"
REMOTE_PARENT = "b7ad6b7169203331"


@pytest.mark.parametrize(("incoming", "low_byte"), [("01", 0x01), ("03", 0x03)])
def test_span_flags_say_whether_the_parent_is_remote(incoming: str, low_byte: int) -> None:
    """OTLP span flags: W3C trace flags in the low byte, 0x100 (known), and 0x200 when the span's parent is remote."""
    from autotrace.propagation import extract

    remote = extract({"traceparent": f"00-{REMOTE_TRACE}-{REMOTE_PARENT}-{incoming}", "tracestate": "v=1"})

    @traced("work")
    def work() -> None:
        with span("inner"):
            pass

    with span("server", kind="server", parent=remote):
        work()
    with span("local-root"):
        work()
    doc = autotrace.export_traces()
    message = validate(doc)
    flags = {s["name"]: s["flags"] for s in spans_of(doc) if s["traceId"] == REMOTE_TRACE}
    assert flags == {"server": 0x300 | low_byte, "work": 0x100 | low_byte, "inner": 0x100 | low_byte}
    local = [s for s in spans_of(doc) if s["traceId"] != REMOTE_TRACE]
    assert len(local) == 3 and {s["flags"] for s in local} == {0x103}  # sampled, random id, parent local (or none)
    parsed = {s.name: s.flags for rs in message.resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert parsed["server"] == 0x300 | low_byte and parsed["local-root"] == 0x103


def test_link_flags_carry_both_trace_flags() -> None:
    """A link's OTLP flags carry the linked context's sampled and random bits beside is-remote."""
    with span("a") as a:
        pass
    with span("b", links=[a.get_span_context(), SpanContext(1, 2, False, True, "", True)]):
        pass
    (b,) = [s for s in spans_of(autotrace.export_traces()) if s["name"] == "b"]
    assert [lk["flags"] for lk in b["links"]] == [0x103, 0x302]
