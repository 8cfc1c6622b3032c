"""What a stored span and its trace keep in memory: no room reserved that nothing uses."""

from __future__ import annotations

import sys
from typing import Any

import autotrace
from autotrace import span, traced
from autotrace.store import TraceStore

# What a list holding exactly two items takes: a one-span trace's buffer, [trace_id, span].
TWO_ITEMS = sys.getsizeof([0, 0])


def _buffers() -> list[list[Any]]:
    """The store's trace buffers holding spans of this test (a trace left open by another test stays across clears)."""
    return [
        b
        for b in autotrace.get_trace_store()._ring
        if len(b) > 1 and getattr(b[1], "name", "").startswith(("root", "child", "_leaf"))
    ]


@traced
def _leaf() -> None:
    return None


def test_one_span_trace_buffer_has_no_spare_room() -> None:
    """The buffer of a trace of one span, from span() or @traced, is a list of exactly two slots."""
    with span("root"):
        pass
    _leaf()
    a, b = _buffers()
    assert len(a) == len(b) == 2
    assert sys.getsizeof(a) == sys.getsizeof(b) == TWO_ITEMS


def test_store_opened_buffers_have_no_spare_room() -> None:
    """Buffers the store opens itself (a new trace, a trace continued from elsewhere) fit their first span too."""
    store = TraceStore(10)
    for buf in (store._new_trace(5), store._open(6)):
        buf.append(object())
        assert sys.getsizeof(buf) == TWO_ITEMS


def test_larger_traces_still_grow_their_buffer() -> None:
    """A buffer made with room for one span takes any number of them, in the order they ended."""
    with span("root"):
        for i in range(20):
            with span(f"child{i}"):
                pass
    (buf,) = _buffers()
    assert [s.name for s in buf[1:]] == [f"child{i}" for i in range(20)] + ["root"]


def test_up_to_three_own_attributes_live_in_the_span() -> None:
    """A finished span keeps up to three attributes of its own in its slots, read back as the same mapping."""
    with span("x") as s:
        s.set_attribute("model", "m")
        s.set_attribute("tokens", 7)
        s.set_attribute("latency", 0.5)
    assert s._attr_data == ("model", "tokens", "latency") and type(s._attr_data) is tuple
    assert (s._attr0, s._attr1, s._attr2) == ("m", 7, 0.5)
    assert s.attributes == {"model": "m", "tokens": 7, "latency": 0.5}
    assert list(s.attributes) == ["model", "tokens", "latency"] and len(s.attributes) == 3
    assert s.attributes["tokens"] == 7 and "model" in s.attributes and "other" not in s.attributes


def test_same_keys_share_one_keys_tuple_in_place() -> None:
    """Spans that set the same keys in the same order point at one keys tuple."""
    ends = []
    for i in range(2):
        with span("x") as s:
            s.set_attribute("a", i)
            s.set_attribute("b", i)
        ends.append(s)
    assert ends[0]._attr_data is ends[1]._attr_data
    assert ends[0].attributes == {"a": 0, "b": 0} and ends[1].attributes == {"a": 1, "b": 1}


def test_each_count_of_own_attributes_reads_back() -> None:
    """0 to 5 attributes of one's own (in slots up to three, a FrozenAttrs past) read back and export the same."""
    from autotrace.attributes import FrozenAttrs

    for n in range(6):
        with span(f"n{n}") as s:
            s.set_attribute("gone", 1)
            s.set_attribute("gone", None)  # removed again: the span owns a dict that may end empty
            for i in range(n):
                s.set_attribute(f"k{i}", i)
        expected = {f"k{i}": i for i in range(n)}
        assert dict(s.attributes) == expected, n
        assert type(s._attr_data) is (tuple if n <= 3 else FrozenAttrs), n
        assert {kv["key"] for kv in s.to_dict().get("attributes", [])} == set(expected), n


def test_ids_and_times_are_packed_and_read_back() -> None:
    """A span with attributes of its own packs its span id, start and end into one int; every reader sees the same."""
    with span("root") as s:
        s.set_attribute("a", 1)
        sid, start, ctx = s.span_id, s.start_time_unix_nano, s.get_span_context()
    assert s._sid is None and s._t0 is None and s._t1 is not None  # one int holds all three
    assert s.span_id == sid and s._span_id == int(sid, 16) and s.get_span_context() == ctx
    assert s.start_time_unix_nano == start == s._start
    end = s.end_time_unix_nano
    assert end is not None and end >= start and s._end == end and s.duration_ns == end - start
    assert not s.is_recording
    out = s.to_dict()
    assert out["spanId"] == sid and out["startTimeUnixNano"] == str(start) and out["endTimeUnixNano"] == str(end)


def test_a_packed_span_written_by_name_unpacks_first() -> None:
    """Writing _start, _end or _span_id on a packed span (as a builder might) keeps the other two values."""
    for field, value in (("_start", 5), ("_end", 10**18), ("_span_id", 0xABC)):
        with span("x") as s:
            s.set_attribute("a", 1)
        before = {"_start": s._start, "_end": s._end, "_span_id": s._span_id}
        setattr(s, field, value)
        assert getattr(s, field) == value
        for other, old in before.items():
            if other != field:
                assert getattr(s, other) == old, (field, other)


def test_times_that_do_not_fit_64_bits_are_kept_unpacked() -> None:
    """A span whose times were set past 64 bits (by slot, as a builder might) keeps them: nothing is lost by packing."""
    s = autotrace.Span("big", attributes={"a": 1})
    s._start, s._end = 2**70, 2**70 + 5  # the constructor holds times to OTLP's 64 bits (test_export_hostile)
    assert autotrace.record_span(s)
    (stored,) = autotrace.get_trace_store().traces()[0]
    assert stored is s and s._t0 == 2**70
    assert s.start_time_unix_nano == 2**70 and s.end_time_unix_nano == 2**70 + 5


def test_children_of_a_packed_span_get_its_id() -> None:
    """A span current after its end (ended by hand inside its block) and packed still parents its children by id."""
    with span("parent") as p:
        p.set_attribute("a", 1)
        p.end()
        assert p._sid is None  # packed
        with span("child") as c:
            pass
        _leaf()
    assert c.parent_span_id == p.span_id
    leaf = [x for x in autotrace.get_trace_store().traces()[0] if x.name.endswith("_leaf")]
    assert [x.parent_span_id for x in leaf] == [p.span_id]


def test_status_lives_in_the_extra_part() -> None:
    """A span's status is UNSET with no extra part; setting one makes it, and it reads and exports the same."""
    with span("ok") as s:
        pass
    assert s._extra is None and s.status.code is autotrace.StatusCode.UNSET
    with span("bad") as b:
        b.set_status("error", "boom")
    assert b._extra is not None and b.status.code is autotrace.StatusCode.ERROR and b.status.description == "boom"
    assert b.to_dict()["status"] == {"code": 2, "message": "boom"}
    assert s._extra is None


def test_a_packed_span_entered_again_is_unchanged() -> None:
    """Entering an ended, packed span again (``with s:``) makes it current and changes none of its values."""
    with span("x") as s:
        s.set_attribute("a", 1)
    before = s.to_dict()
    with s:
        assert autotrace.current_span() is s
    assert s.to_dict() == before


def test_a_packed_span_pickles_and_copies() -> None:
    """A finished, packed span survives pickle, copy and deepcopy with every value the same."""
    import copy
    import pickle

    with span("x") as s:
        s.set_attribute("a", 1)
        s.set_attribute("b", [1, 2])
    for clone in (pickle.loads(pickle.dumps(s)), copy.copy(s), copy.deepcopy(s)):
        assert clone.to_dict() == s.to_dict() and clone.attributes == s.attributes


def test_a_span_built_slot_by_slot_by_the_old_names_is_whole() -> None:
    """Code that builds a span with object.__new__ and the old field names (as builders did) gets a complete span."""
    from autotrace._model import _UNSET_STATUS
    from autotrace.spans import Span

    s: Any = object.__new__(Span)
    s._status = _UNSET_STATUS  # before _extra, as an old inline copy may order it
    s._name = "built"
    s._kind = autotrace.SpanKind.INTERNAL
    s._trace_id = 7
    s._span_id = 9
    s._parent_id = None
    s._attrs = {"a": 1}
    s._token = None
    s._trace = None
    s._start = 100
    s._end = 200
    assert s.status.code is autotrace.StatusCode.UNSET and s._extra is None
    assert (s.span_id, s.start_time_unix_nano, s.end_time_unix_nano) == ("0000000000000009", 100, 200)
    assert s.attributes == {"a": 1} and s.to_dict()["spanId"] == "0000000000000009"
