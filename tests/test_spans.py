"""The span model: creation, ids, duration, status, attributes, events, links, limits."""

from __future__ import annotations

import logging
import math
import re

import pytest

import autotrace
from autotrace import Link, Span, SpanContext, SpanKind, StatusCode
from tests.otlp_check import validate as validate_export


def test_span_creation_defaults() -> None:
    """A hand-built span has a name, fresh ids, INTERNAL kind, a start time and no end yet."""
    s = Span("custom_operation")
    assert s.name == "custom_operation"
    assert re.fullmatch(r"[0-9a-f]{32}", s.trace_id) and s.trace_id != "0" * 32
    assert re.fullmatch(r"[0-9a-f]{16}", s.span_id) and s.span_id != "0" * 16
    assert s.parent_span_id is None
    assert s.kind is SpanKind.INTERNAL
    assert s.start_time_unix_nano > 1_600_000_000 * 10**9
    assert s.end_time_unix_nano is None and s.duration_ns is None
    assert s.is_recording
    assert s.status.code is StatusCode.UNSET


def test_ids_are_unique_and_hex_formatted() -> None:
    """Ids are lower-case hex of the right length and distinct across spans."""
    spans = [Span("x") for _ in range(500)]
    assert len({s.span_id for s in spans}) == 500
    assert len({s.trace_id for s in spans}) == 500
    for s in spans[:20]:
        assert len(s.trace_id) == 32 and len(s.span_id) == 16
        assert s.trace_id == s.trace_id.lower()


def test_explicit_ids_and_validation() -> None:
    """Ids given as hex or int are kept; malformed or zero ids raise ValueError naming the field."""
    s = Span(
        "x", trace_id="0af7651916cd43dd8448eb211c80319c", span_id=0xB7AD6B7169203331, parent_span_id="00f067aa0ba902b7"
    )
    assert s.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert s.span_id == "b7ad6b7169203331"
    assert s.parent_span_id == "00f067aa0ba902b7"
    with pytest.raises(ValueError, match="trace_id"):
        Span("x", trace_id="xyz")
    with pytest.raises(ValueError, match="span_id"):
        Span("x", span_id=0)


def test_duration_from_end() -> None:
    """duration_ns is end minus start once ended, and never negative."""
    s = Span("x", start_time_unix_nano=1_000, end_time_unix_nano=4_500)
    assert s.duration_ns == 3_500
    t = Span("y", start_time_unix_nano=5_000)
    t.end(end_time=4_000)  # a clock that went backwards
    assert t.duration_ns == 0


def test_end_is_idempotent_and_freezes_span() -> None:
    """After end() the span ignores writes and keeps its first end time."""
    s = Span("x")
    s.end()
    first = s.end_time_unix_nano
    s.end()
    s.set_attribute("late", 1)
    s.add_event("late")
    s.update_name("renamed")
    assert s.end_time_unix_nano == first
    assert "late" not in s.attributes and not s.events and s.name == "x"
    assert not s.is_recording


def test_status_rules() -> None:
    """ERROR keeps a description, OK drops it and is final, UNSET never overrides."""
    s = Span("x")
    s.set_status(StatusCode.ERROR, "boom")
    assert s.status.code is StatusCode.ERROR and s.status.description == "boom"
    s.set_status(StatusCode.UNSET)
    assert s.status.code is StatusCode.ERROR
    s.set_status("ok", "ignored")
    assert s.status.code is StatusCode.OK and s.status.description is None
    s.set_status(StatusCode.ERROR, "again")
    assert s.status.code is StatusCode.OK


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        (True, True),
        (42, 42),
        (-(2**63), -(2**63)),
        (2.5, 2.5),
        (["a", "b"], ["a", "b"]),
        ((1, 2, 3), [1, 2, 3]),
        ([1.5, 2.5], [1.5, 2.5]),
        ([True, False], [True, False]),
        ([], []),
        (2**70, str(2**70)),
        ([1, "a"], ["1", "a"]),
        (b"bytes", "bytes"),
        ({"k": 1}, "{'k': 1}"),
        (None, None),
    ],
)
def test_attribute_types(value: object, expected: object) -> None:
    """Valid OpenTelemetry values are kept, everything else is converted, None is dropped."""
    s = Span("x")
    s.set_attribute("k", value)
    if expected is None:
        assert "k" not in s.attributes
    else:
        assert s.attributes["k"] == expected
        assert type(s.attributes["k"]) is type(expected)


def test_attribute_float_specials_and_odd_objects() -> None:
    """NaN and infinities are kept as floats; objects whose __str__ raises do not raise."""

    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("no")

        __repr__ = __str__

    s = Span("x")
    s.set_attribute("nan", float("nan"))
    s.set_attribute("inf", float("inf"))
    s.set_attribute("bad", Bad())
    s.set_attribute(7, "non-str key")
    assert math.isnan(s.attributes["nan"]) and s.attributes["inf"] == math.inf
    assert "unprintable" in s.attributes["bad"]
    assert s.attributes["7"] == "non-str key"


def test_attributes_view_is_read_only() -> None:
    """span.attributes cannot be written to directly."""
    s = Span("x", attributes={"a": 1})
    with pytest.raises(TypeError):
        s.attributes["b"] = 2  # type: ignore[index]


def test_attribute_limits_count_drops() -> None:
    """Past max_attributes new keys are dropped and counted; long strings are truncated."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_attributes=3, max_attribute_length=5))
    s = Span("x")
    for i in range(5):
        s.set_attribute(f"k{i}", "abcdefgh")
    s.set_attribute("k0", "zz")  # updating an existing key is fine
    assert dict(s.attributes) == {"k0": "zz", "k1": "abcde", "k2": "abcde"}
    assert s.dropped_attributes_count == 2


def test_event_and_link_limits() -> None:
    """Events and links past their limits are dropped and counted."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_events=2, max_links=1))
    s = Span("x")
    for i in range(4):
        s.add_event(f"e{i}", {"i": i})
    s.add_link(SpanContext(1, 2))
    s.add_link(SpanContext(3, 4))
    assert [e.name for e in s.events] == ["e0", "e1"] and s.dropped_events_count == 2
    assert len(s.links) == 1 and s.dropped_links_count == 1


def test_events_carry_time_and_attributes() -> None:
    """add_event keeps name, attributes and a timestamp (given or now)."""
    s = Span("x")
    s.add_event("first_token", {"ttft_ms": 41.2})
    s.add_event("at", timestamp=123)
    first, second = s.events
    assert first.name == "first_token" and first.attributes == {"ttft_ms": 41.2}
    assert first.timestamp >= s.start_time_unix_nano
    assert second.timestamp == 123


def test_record_exception_fields() -> None:
    """record_exception adds an `exception` event with type, message and stacktrace."""
    s = Span("x")
    try:
        raise ValueError("boom")
    except ValueError as exc:
        s.record_exception(exc)
    (event,) = s.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "boom"
    assert "ValueError: boom" in event.attributes["exception.stacktrace"]
    assert "test_record_exception_fields" in event.attributes["exception.stacktrace"]


def test_links_from_contexts_and_spans() -> None:
    """Links accept a SpanContext, a Span or a Link and expose hex ids."""
    other = Span("other")
    s = Span("x", links=[other.get_span_context(), Link(SpanContext(5, 6), {"why": "batch"})])
    s.add_link(other)
    assert [lk.span_id for lk in s.links] == [other.span_id, "0000000000000006", other.span_id]
    assert s.links[1].attributes == {"why": "batch"}


def test_kind_coercion() -> None:
    """kind accepts members and lower-case names; others raise ValueError listing the choices."""
    assert Span("x", kind="server").kind is SpanKind.SERVER
    assert Span("x", kind=SpanKind.CONSUMER).kind is SpanKind.CONSUMER
    with pytest.raises(ValueError, match="internal, server, client, producer, consumer"):
        Span("x", kind="sideways")


def test_non_str_name_is_converted() -> None:
    """A name that is not a str is converted, not raised on."""
    assert Span(123).name == "123"  # type: ignore[arg-type]


def test_span_methods_never_raise_on_bad_arguments(caplog: pytest.LogCaptureFixture) -> None:
    """Bad timestamps and links from user code: the span carries on (now, a counted dropped link), logged once."""
    autotrace.configure(sample_rate=1.0)
    with caplog.at_level(logging.WARNING, logger="autotrace"):
        with autotrace.span("s") as s:
            s.add_event("e1", timestamp="abc")  # type: ignore[arg-type]
            s.add_event("e2", timestamp=None)
            s.add_event("e3", timestamp=object())  # type: ignore[arg-type]
            s.add_link(5)  # type: ignore[arg-type]
            s.add_link("not a link")  # type: ignore[arg-type]
        s2 = autotrace.span("t")
        with s2:
            pass
        s2.end("x")  # type: ignore[arg-type]  # already ended: ignored
        s3 = Span("hand")
        s3.end("later")  # type: ignore[arg-type]
    assert [e.name for e in s.events] == ["e1", "e2", "e3"]
    assert all(e.timestamp >= s.start_time_unix_nano for e in s.events)
    assert not s.links and s.dropped_links_count == 2
    assert s3.end_time_unix_nano is not None and s3.end_time_unix_nano >= s3.start_time_unix_nano
    warnings = [r.getMessage() for r in caplog.records if r.name == "autotrace"]
    assert sum("add_event(timestamp=)" in w for w in warnings) == 1
    assert sum("add_link" in w for w in warnings) == 1
    assert sum("end(end_time=)" in w for w in warnings) == 1
    validate_export(autotrace.export_traces())


def test_a_bad_kind_or_link_in_span_keeps_the_span_and_its_trace() -> None:
    """span(kind="bogus") or a bad link is an INTERNAL span (bad link dropped) in the same trace, not a new one."""
    autotrace.configure(sample_rate=1.0)
    with autotrace.span("root") as root:
        with autotrace.span("c1", kind="bogus") as c1:  # type: ignore[arg-type]
            with autotrace.span("g1") as g1:
                pass
        with autotrace.span("c2", links=[42]) as c2:  # type: ignore[list-item]
            pass
    assert c1.kind == SpanKind.INTERNAL and c1.parent_span_id == root.span_id
    assert g1.trace_id == root.trace_id and g1.parent_span_id == c1.span_id
    assert c2.parent_span_id == root.span_id and c2.dropped_links_count == 1
    assert autotrace.trace_count() == 1


def test_entering_a_span_twice_restores_the_context() -> None:
    """`with s: with s:` leaves the outer context current afterwards, and the span is stored once."""
    autotrace.configure(sample_rate=1.0)
    with autotrace.span("outer") as outer:
        s = autotrace.span("twice")
        with s:
            with s:
                assert autotrace.current_span() is s
        assert autotrace.current_span() is outer
    assert autotrace.get_trace_store().span_count() == 2


def test_none_in_a_sequence_attribute_keeps_its_place_in_otlp() -> None:
    """(True, None, False) is exported as three values, the middle one empty, so positions hold."""
    autotrace.configure(sample_rate=1.0)
    with autotrace.span("s") as s:
        s.set_attribute("flags", (True, None, False))
    doc = autotrace.export_traces()
    validate_export(doc)
    (attr,) = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
    assert attr["value"]["arrayValue"]["values"] == [{"boolValue": True}, {}, {"boolValue": False}]


def test_span_context_round_trips_through_pickle_and_copy() -> None:
    """A SpanContext (extracted, or of a span below a remote parent) survives pickle, copy and deepcopy unchanged."""
    import copy
    import pickle

    from autotrace.propagation import extract

    remote = extract({"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01", "tracestate": "vendor=x"})
    assert remote is not None
    with autotrace.span("server", parent=remote) as s:
        pass
    contexts = [remote, s.get_span_context(), SpanContext(1, 2, False, False, "", True)]
    assert contexts[1].trace_state == "vendor=x" and type(contexts[1].trace_id) is int
    for ctx in contexts:
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            back = pickle.loads(pickle.dumps(ctx, protocol))
            assert back == ctx and type(back) is SpanContext and back.trace_flags == ctx.trace_flags
        assert copy.copy(ctx) == ctx and copy.deepcopy(ctx) == ctx
