"""Limits: exposed in TraceConfig and the environment with safe defaults, enforced, and counted in the export."""

from __future__ import annotations

import logging
import tracemalloc
from typing import Any

import pytest

import autotrace
from autotrace import SpanContext, TraceConfig, span, traced
from tests.conftest import all_spans
from tests.otlp_check import spans_of, validate


def _one_span_doc() -> dict[str, Any]:
    doc = autotrace.export_traces()
    validate(doc)
    (out,) = spans_of(doc)
    return out


def test_defaults_are_bounded() -> None:
    """The defaults bound every per-span collection and every trace; string length is unlimited as in OTel."""
    c = TraceConfig()
    assert (c.max_attributes, c.max_events, c.max_links) == (128, 128, 128)
    assert c.max_spans_per_trace == 10_000
    assert c.max_traces == 1000
    assert c.capture_max_length == 1000
    assert c.max_attribute_length is None  # OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT's default (see SECURITY.md)
    assert (c.max_name_length, c.max_sequence_length) == (1024, 1024)


@pytest.mark.parametrize(
    ("var", "field", "value"),
    [
        ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "max_attributes", 7),
        ("OTEL_SPAN_EVENT_COUNT_LIMIT", "max_events", 8),
        ("OTEL_SPAN_LINK_COUNT_LIMIT", "max_links", 9),
        ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "max_attribute_length", 10),
        ("AUTOTRACE_MAX_SPANS_PER_TRACE", "max_spans_per_trace", 11),
        ("AUTOTRACE_MAX_TRACES", "max_traces", 12),
        ("AUTOTRACE_MAX_NAME_LENGTH", "max_name_length", 13),
        ("AUTOTRACE_MAX_SEQUENCE_LENGTH", "max_sequence_length", 14),
    ],
)
def test_limits_read_from_environment(var: str, field: str, value: int) -> None:
    """Each limit has an environment variable that from_env() reads."""
    config = TraceConfig.from_env({var: str(value)})
    assert getattr(config, field) == value


@pytest.mark.parametrize(
    "var",
    [
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
        "OTEL_SPAN_EVENT_COUNT_LIMIT",
        "OTEL_SPAN_LINK_COUNT_LIMIT",
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        "AUTOTRACE_MAX_SPANS_PER_TRACE",
        "AUTOTRACE_MAX_TRACES",
        "AUTOTRACE_MAX_NAME_LENGTH",
        "AUTOTRACE_MAX_SEQUENCE_LENGTH",
    ],
)
@pytest.mark.parametrize("bad", ["-1", "lots", "1.5"])
def test_bad_limit_in_environment_names_the_variable(var: str, bad: str) -> None:
    """A malformed or negative limit is a ValueError that names the variable."""
    with pytest.raises(ValueError, match=var):
        TraceConfig.from_env({var: bad})


@pytest.mark.parametrize(
    "field",
    [
        "max_attributes",
        "max_events",
        "max_links",
        "max_attribute_length",
        "max_spans_per_trace",
        "max_name_length",
        "max_sequence_length",
    ],
)
@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_bad_limit_in_code_names_the_setting(field: str, bad: Any) -> None:
    """A bad limit given in code is a ValueError that names the setting."""
    with pytest.raises(ValueError, match=field):
        TraceConfig(**{field: bad})


def test_attribute_count_limit_drops_and_counts() -> None:
    """Past max_attributes new keys are dropped; droppedAttributesCount says how many; updates still apply."""
    autotrace.configure(sample_rate=1.0, max_attributes=3)
    with span("s", attributes={"a": 1, "b": 2}) as s:
        for i in range(10):
            s.set_attribute(f"k{i}", i)
        s.set_attribute("a", 100)  # an existing key: updated, not dropped
    assert dict(s.attributes) == {"a": 100, "b": 2, "k0": 0}
    out = _one_span_doc()
    assert out["droppedAttributesCount"] == 9
    assert len(out["attributes"]) == 3


def test_event_and_link_limits_drop_and_count() -> None:
    """Past max_events / max_links new events and links are dropped and counted in the export."""
    autotrace.configure(sample_rate=1.0, max_events=2, max_links=1, max_attributes=2)
    links = [SpanContext(i + 1, i + 1, True, True, "") for i in range(3)]
    with span("s", links=links) as s:
        for i in range(5):
            s.add_event(f"e{i}", {"a": 1, "b": 2, "c": 3, "d": 4})
    out = _one_span_doc()
    assert [e["name"] for e in out["events"]] == ["e0", "e1"]
    assert out["droppedEventsCount"] == 3
    assert all(e["droppedAttributesCount"] == 2 for e in out["events"])
    assert len(out["links"]) == 1 and out["droppedLinksCount"] == 2


def test_link_attribute_limit_counts() -> None:
    """A link's attributes obey max_attributes and the excess is counted on the link."""
    autotrace.configure(sample_rate=1.0, max_attributes=1)
    with span("s") as s:
        s.add_link(SpanContext(5, 6, True, True, ""), {"x": 1, "y": 2, "z": 3})
    (link,) = _one_span_doc()["links"]
    assert len(link["attributes"]) == 1 and link["droppedAttributesCount"] == 2


def test_zero_limits_drop_everything_but_keep_the_span() -> None:
    """Limits of zero keep the span itself and count every attribute, event and link as dropped."""
    autotrace.configure(sample_rate=1.0, max_attributes=0, max_events=0, max_links=0)

    @traced(attributes={"static": 1})
    def f() -> int:
        s = autotrace.current_span()
        s.set_attribute("x", 1)
        s.add_event("e")
        s.add_link(SpanContext(5, 6, True, True, ""))
        return 5

    assert f() == 5
    out = _one_span_doc()
    assert out["attributes"] == [] and out["events"] == [] and out["links"] == []
    assert out["droppedEventsCount"] == 1 and out["droppedLinksCount"] == 1
    assert out["droppedAttributesCount"] >= 1


def test_attribute_length_limit_truncates_strings_everywhere() -> None:
    """max_attribute_length cuts string values, strings in arrays, event attributes and converted values."""
    autotrace.configure(sample_rate=1.0, max_attribute_length=4)
    with span("s", attributes={"s": "abcdefgh", "arr": ["123456", "ab"], "obj": object()}) as s:
        s.add_event("e", {"long": "zzzzzzzz"})
        s.set_attribute("n", 123456789)  # numbers are not strings: kept
    attrs = s.attributes
    assert attrs["s"] == "abcd"
    assert attrs["arr"] == ["1234", "ab"]
    assert len(attrs["obj"]) == 4
    assert attrs["n"] == 123456789
    assert s.events[0].attributes["long"] == "zzzz"
    _one_span_doc()


def test_attribute_length_limit_from_environment_applies() -> None:
    """OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT read by from_env() is enforced once configured."""
    autotrace.configure(TraceConfig.from_env({"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "3"}, sample_rate=1.0))
    with span("s", attributes={"s": "abcdef"}) as s:
        pass
    assert s.attributes["s"] == "abc"


def test_a_span_written_in_a_loop_stays_bounded() -> None:
    """A million attribute writes and events on one span keep at most the limits in memory."""
    autotrace.configure(sample_rate=1.0, max_attributes=128, max_events=128)
    tracemalloc.start()
    try:
        with span("hot") as s:
            for i in range(200_000):
                s.set_attribute(f"key{i}", i)
                s.add_event("tick", {"i": i})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(s.attributes) == 128 and len(s.events) == 128
    assert s.dropped_attributes_count == 200_000 - 128
    assert s.dropped_events_count == 200_000 - 128
    assert peak < 8 * 1024 * 1024
    out = _one_span_doc()
    assert out["droppedAttributesCount"] == 200_000 - 128
    assert out["droppedEventsCount"] == 200_000 - 128


def test_spans_per_trace_limit_from_environment(caplog: pytest.LogCaptureFixture) -> None:
    """AUTOTRACE_MAX_SPANS_PER_TRACE caps one trace in the store; the rest are counted in stats(), logged once."""
    store = autotrace.configure(TraceConfig.from_env({"AUTOTRACE_MAX_SPANS_PER_TRACE": "25"}, sample_rate=1.0))

    @traced
    def step(i: int) -> int:
        return i

    @traced
    def loop() -> int:
        return sum(step(i) for i in range(1000))

    with caplog.at_level(logging.WARNING, logger="autotrace"):
        assert loop() == sum(range(1000))
        assert loop() == sum(range(1000))
    stats = store.stats()
    assert stats["spans"] == 50
    assert stats["dropped_spans"] == 2 * (1001 - 25)
    warnings = [r.getMessage() for r in caplog.records if r.name == "autotrace"]
    assert len(warnings) == 1 and "max_spans_per_trace=25" in warnings[0] and "dropped_spans" in warnings[0]
    # Other traces are unaffected by the runaway one.
    assert step(1) == 1
    assert store.stats()["traces"] == 3


def test_sequence_values_are_cut_at_max_sequence_length() -> None:
    """A list of a million ints keeps its first max_sequence_length items (1024 by default), as do tuples and sets."""
    big = list(range(1_000_000))
    with span("default") as s:
        s.set_attribute("ints", big)
        s.set_attribute("strs", tuple(str(i) for i in range(5000)))
        s.set_attribute("set", set(range(5000)))
    autotrace.configure(sample_rate=1.0, max_sequence_length=3)
    with span("configured") as s:
        s.set_attribute("ints", big)
    doc = autotrace.export_traces()
    validate(doc)
    configured, default = sorted(spans_of(doc), key=lambda x: x["name"])
    values = {a["key"]: a["value"]["arrayValue"]["values"] for a in default["attributes"]}
    assert [len(v) for v in values.values()] == [1024, 1024, 1024]
    assert values["ints"][:2] == [{"intValue": "0"}, {"intValue": "1"}]
    (ints,) = configured["attributes"]
    assert ints["value"]["arrayValue"]["values"] == [{"intValue": "0"}, {"intValue": "1"}, {"intValue": "2"}]


def test_span_and_event_names_are_cut_at_max_name_length() -> None:
    """Span names (span(), @traced, Span(), update_name) and event names keep max_name_length characters."""
    huge = "n" * 1_000_000

    @traced(name=huge)
    def f() -> None:
        pass

    with span(huge) as s:
        s.add_event(huge)
    f()
    hand = autotrace.Span(huge)
    autotrace.record_span(hand)
    with span("renamed") as r:
        r.update_name(huge)
    names = [sp.name for sp in all_spans()]
    assert len(names) == 4 and all(n == "n" * 1024 for n in names)
    doc = autotrace.export_traces()
    validate(doc)
    assert all(out["name"] == "n" * 1024 for out in spans_of(doc))
    events = [e.name for sp in all_spans() for e in sp.events]
    assert events == ["n" * 1024]
    autotrace.configure(sample_rate=1.0, max_name_length=8)
    autotrace.clear_traces()
    with span(huge) as s:
        s.add_event(huge)
    (short,) = all_spans()
    assert short.name == "nnnnnnnn" and short.events[0].name == "nnnnnnnn"


def test_exception_message_and_stacktrace_are_bounded() -> None:
    """A megabyte exception message is cut to MAX_MESSAGE characters on the event and in the status."""
    from autotrace import _stacktrace

    with pytest.raises(ValueError), span("fails"):
        raise ValueError("m" * 1_000_000)
    (s,) = all_spans()
    (event,) = s.events
    assert event.attributes["exception.message"] == "m" * _stacktrace.MAX_MESSAGE
    assert len(event.attributes["exception.stacktrace"]) <= _stacktrace.MAX_STACKTRACE
    assert s.status.description == "ValueError: " + "m" * _stacktrace.MAX_MESSAGE
