"""How attributes are held: shared until written, packed when a span ends, always read as a mapping."""

from __future__ import annotations

import json

import autotrace
from autotrace import span, traced
from autotrace.attributes import FrozenAttrs, SharedAttrs, coerce, freeze
from autotrace.testing import capture_spans
from tests.otlp_check import attrs_of, spans_of, validate


def test_decorator_attributes_are_shared_and_copied_on_write() -> None:
    """Spans of one @traced function share its attribute dict; a write copies it first."""

    @traced(attributes={"model": "m"})
    def f(write: bool) -> None:
        if write:
            autotrace.current_span().set_attribute("extra", 1)

    with capture_spans() as spans:
        f(False)
        f(True)
        f(False)
    a, b, c = spans
    assert a._attrs is c._attrs and type(a._attrs) is SharedAttrs
    assert "extra" not in a.attributes and "extra" not in c.attributes
    assert b.attributes["extra"] == 1 and b.attributes["model"] == "m"


def test_ended_span_attributes_are_packed_and_read_as_a_mapping() -> None:
    """A span's own attributes are packed at end and still behave like a read-only dict."""
    with span("x", attributes={"a": 1, "b": "two"}) as s:
        s.set_attribute("c", 3.5)
    assert type(s._attrs) is FrozenAttrs
    attrs = s.attributes
    assert attrs == {"a": 1, "b": "two", "c": 3.5}
    assert dict(attrs) == {"a": 1, "b": "two", "c": 3.5}
    assert list(attrs) == ["a", "b", "c"] and len(attrs) == 3
    assert attrs["b"] == "two" and attrs.get("zz") is None and "a" in attrs and "zz" not in attrs
    s.set_attribute("late", 1)  # ignored after end, as before
    assert "late" not in s.attributes


def test_packed_attributes_export_unchanged() -> None:
    """Packed attributes export to the same OTLP KeyValues, in the order they were set."""
    with span("x") as s:
        s.set_attribute("n", 2**40)
        s.set_attribute("flag", True)
        s.set_attribute("names", ["a", "b"])
    doc = autotrace.export_traces()
    validate(doc)
    (out,) = spans_of(doc)
    assert [kv["key"] for kv in out["attributes"]] == ["n", "flag", "names"]
    assert attrs_of(out) == {"n": 2**40, "flag": True, "names": ["a", "b"]}
    json.dumps(doc)


def test_same_keys_share_one_keys_tuple() -> None:
    """Spans that set the same keys in the same order share one keys tuple."""
    a = freeze({"k1": 1, "k2": 2})
    b = freeze({"k1": 3, "k2": 4})
    assert tuple.__getitem__(a, 0) is tuple.__getitem__(b, 0)
    assert a != b and a == {"k1": 1, "k2": 2} and a == freeze({"k1": 1, "k2": 2})


def test_a_huge_range_is_stored_as_its_repr_not_expanded() -> None:
    """range(10**12) would be terabytes as a list: it is kept as "range(0, 1000000000000)"; small ones expand."""
    assert coerce(range(10**12)) == "range(0, 1000000000000)"
    assert coerce(range(3)) == [0, 1, 2]
    assert coerce(range(1024)) == list(range(1024))
    assert coerce(range(1025)) == "range(0, 1025)"
    assert coerce(range(10**12), limit=5) == "range"
