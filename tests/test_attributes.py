"""How attributes are held: shared until written, packed when a span ends, always read as a mapping."""

from __future__ import annotations

import decimal
import fractions
import json
import subprocess
import sys

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


def test_numpy_scalars_become_otlp_numbers() -> None:
    """numpy scalars are ints, doubles and bools in OTLP, not strings; alone or in lists."""
    import numpy as np

    with span("numbers") as s:
        s.set_attribute("int", np.int64(7))
        s.set_attribute("uint", np.uint8(200))
        s.set_attribute("float", np.float32(1.5))
        s.set_attribute("double", np.float64(2.25))
        s.set_attribute("bool", np.bool_(True))
        s.set_attribute("zero_d", np.array(5))
        s.set_attribute("ints", [np.int64(1), np.int64(2)])
        s.set_attribute("floats", (np.float32(0.5), np.float64(1.0)))
        s.set_attribute("bools", [np.True_, np.False_])
        s.set_attribute("array", np.array([1, 2, 3]))  # an array is not one number: kept as its text
    doc = autotrace.export_traces()
    validate(doc)
    (out,) = spans_of(doc)
    raw = {a["key"]: a["value"] for a in out["attributes"]}
    assert raw["int"] == {"intValue": "7"}
    assert raw["uint"] == {"intValue": "200"}
    assert raw["float"] == {"doubleValue": 1.5}
    assert raw["double"] == {"doubleValue": 2.25}
    assert raw["bool"] == {"boolValue": True}
    assert raw["zero_d"] == {"intValue": "5"}
    assert raw["ints"] == {"arrayValue": {"values": [{"intValue": "1"}, {"intValue": "2"}]}}
    assert raw["floats"] == {"arrayValue": {"values": [{"doubleValue": 0.5}, {"doubleValue": 1.0}]}}
    assert raw["bools"] == {"arrayValue": {"values": [{"boolValue": True}, {"boolValue": False}]}}
    assert raw["array"] == {"stringValue": "[1 2 3]"}


class _TensorLike:
    """A 0-d tensor as torch has one: .item(), an empty shape, no numpy anywhere."""

    shape = ()

    def __init__(self, value: object) -> None:
        self.value = value

    def item(self) -> object:
        return self.value


class _FloatScalar:
    """A 0-d array of a library without .item(): a shape and __float__."""

    shape = ()

    def __float__(self) -> float:
        return 0.75


class _Index:
    """An int-like with __index__ only."""

    def __index__(self) -> int:
        return 42


def test_duck_typed_numbers_convert_without_numpy() -> None:
    """.item() (0-d), __index__, or __float__ on a 0-d value give numbers; Decimal and Fraction keep exact text."""
    assert coerce(_TensorLike(3)) == 3 and type(coerce(_TensorLike(3))) is int
    assert coerce(_TensorLike(0.25)) == 0.25
    assert coerce(_TensorLike(True)) is True
    assert isinstance(coerce(_TensorLike(1j)), str)  # a complex is no OTLP number: its text
    assert coerce(_FloatScalar()) == 0.75
    assert coerce(_Index()) == 42
    assert coerce([_Index(), 1]) == [42, 1]
    assert coerce(fractions.Fraction(1, 4)) == "1/4"
    assert coerce(decimal.Decimal("2.50")) == "2.50"
    assert coerce(_TensorLike(1 << 70)) == str(1 << 70)


def test_number_conversion_does_not_import_numpy() -> None:
    """Importing autotrace and converting values never imports numpy (it is not a dependency)."""
    code = (
        "import sys, fractions, autotrace\n"
        "from autotrace.attributes import coerce\n"
        "coerce(fractions.Fraction(1, 2)); coerce(object())\n"
        "assert 'numpy' not in sys.modules, 'numpy imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
