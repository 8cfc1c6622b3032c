"""Property-based tests: any value, name or exception gives valid OTLP, and never changes the user's result."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import decimal
import fractions
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import autotrace
from autotrace import span, traced
from tests.otlp_check import span_count, validate

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- odd values -----------------------------------------------------------------------------


class RaisingStr:
    """An object whose __str__ and __repr__ both raise."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


class RaisingRepr:
    """An object whose __repr__ raises but __str__ works."""

    def __repr__(self) -> str:
        raise ValueError("repr is broken")


class NonStrStr:
    """__str__ returns something that is not a str."""

    def __str__(self) -> str:
        return 42  # type: ignore[return-value]

    __repr__ = __str__


class BadStrSubclass(str):
    """A str subclass whose own __str__ raises."""

    def __str__(self) -> str:
        raise RuntimeError("str subclass")


class BadInt(int):
    """An int subclass whose __int__ and __index__ raise."""

    def __int__(self) -> int:
        raise RuntimeError("int")

    def __index__(self) -> int:
        raise RuntimeError("index")


class BadFloat(float):
    """A float subclass whose __float__ and __repr__ raise."""

    def __float__(self) -> float:
        raise RuntimeError("float")

    def __repr__(self) -> str:
        raise RuntimeError("repr")


class BadIter(list):  # type: ignore[type-arg]
    """A list subclass whose iteration raises."""

    def __iter__(self) -> Any:
        raise RuntimeError("iter")

    def __len__(self) -> int:
        raise RuntimeError("len")


class BadMapping(dict):  # type: ignore[type-arg]
    """A dict subclass whose items() raises."""

    def items(self) -> Any:
        raise RuntimeError("items")


@dataclasses.dataclass
class Point:
    """A plain dataclass."""

    x: int
    y: Any


def _recursive_list() -> list[Any]:
    loop: list[Any] = [1, "a"]
    loop.append(loop)
    return loop


def _recursive_dict() -> dict[str, Any]:
    loop: dict[str, Any] = {"k": 1}
    loop["self"] = loop
    return loop


def _deep(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


surrogates = st.integers(0xD800, 0xDFFF).map(chr)
unicode_text = st.lists(st.one_of(st.characters(), surrogates), max_size=40).map("".join)
huge_text = st.integers(10_000, 300_000).map(lambda n: "é" * n)
any_text = st.one_of(st.text(), unicode_text, huge_text)

oddities = st.sampled_from(
    [
        RaisingStr,
        RaisingRepr,
        NonStrStr,
        lambda: BadStrSubclass("sub"),
        lambda: BadInt(7),
        lambda: BadFloat(1.5),
        lambda: BadIter([1, 2]),
        lambda: BadMapping(a=1),
        _recursive_list,
        _recursive_dict,
        lambda: _deep(5000),
        lambda: Point(1, RaisingStr()),
        lambda: object(),
        lambda: type,
        lambda: print,
        lambda: Ellipsis,
        lambda: NotImplemented,
        lambda: uuid.UUID(int=5),
        lambda: autotrace.SpanKind.SERVER,
        lambda: range(3),
        lambda: memoryview(b"abc"),
        lambda: bytearray(b"\x00\xff"),
        lambda: iter([1, 2]),
        lambda: (x for x in range(3)),
    ]
).map(lambda make: make())

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**80),
    st.floats(),
    any_text,
    st.binary(),
    st.complex_numbers(),
    st.decimals(),
    st.fractions(),
    st.datetimes(),
    st.dates(),
    st.timedeltas(),
    oddities,
)

any_value = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.tuples(children, children),
        st.dictionaries(st.one_of(any_text, st.integers()), children, max_size=4),
        st.frozensets(st.one_of(st.integers(), st.text()), max_size=4),
        st.sets(st.floats(allow_nan=False), max_size=4),
    ),
    max_leaves=20,
)

# -- odd exceptions -------------------------------------------------------------------------

_BASES: list[type[BaseException]] = [
    Exception,
    ValueError,
    KeyError,
    OSError,
    RuntimeError,
    UnicodeDecodeError,
    ArithmeticError,
    KeyboardInterrupt,
    SystemExit,
    BaseException,
    asyncio.CancelledError,
]


def _raise_str(self: Any) -> str:
    raise RuntimeError("__str__ raises")


def _raise_repr(self: Any) -> str:
    raise RuntimeError("__repr__ raises")


@st.composite
def exceptions(draw: st.DrawFn) -> BaseException:
    """A fresh exception of a fresh class: odd names, modules, broken __str__/__repr__, chains."""
    base = draw(st.sampled_from(_BASES))
    namespace: dict[str, Any] = {
        "__module__": draw(st.one_of(st.none(), any_text, st.integers(), st.just("builtins"), st.just(RaisingStr())))
    }
    if draw(st.booleans()):
        namespace["__str__"] = _raise_str
    if draw(st.booleans()):
        namespace["__repr__"] = _raise_repr
    if draw(st.booleans()):
        namespace["__str__"] = lambda self: 123  # not a str
    class_names = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1, max_size=20)
    name = draw(st.one_of(st.just("Boom"), class_names))
    cls = type(name, (base,), namespace)
    if base is UnicodeDecodeError:
        exc: BaseException = cls("utf-8", b"\xff", 0, 1, "bad")
    else:
        args = draw(st.lists(any_value, max_size=2))
        try:
            exc = cls(*args)
        except Exception:
            exc = cls()
    if draw(st.booleans()):
        cause = draw(st.sampled_from([ValueError("cause"), RuntimeError(RaisingStr())]))
        exc.__cause__ = cause
        if draw(st.booleans()):
            cause.__context__ = exc  # a cycle in the chain
    return exc


# -- helpers ---------------------------------------------------------------------------------


def _export_is_valid(expected_spans: int | None = None) -> dict[str, Any]:
    doc = autotrace.export_traces()
    validate(doc)
    if expected_spans is not None:
        assert span_count(doc) == expected_spans
    autotrace.clear_traces()
    return doc


# -- properties ------------------------------------------------------------------------------


@SETTINGS
@given(key=any_text, value=any_value, event_value=any_value, name=any_text, event_name=any_text)
def test_any_attribute_or_event_value_exports_valid_otlp(
    key: str, value: Any, event_value: Any, name: str, event_name: str
) -> None:
    """Any Python value as an attribute or event value, under any name, exports as schema-valid OTLP."""
    autotrace.clear_traces()
    with span(name, attributes={key: value, "fixed": value}) as s:
        s.set_attribute(key + "2", value)
        s.set_attributes({"a": event_value, key: value})
        s.add_event(event_name, {key: event_value, "n": value})
        s.add_event(event_name)
        with span(event_name) as child:
            child.set_attribute("v", event_value)
    _export_is_valid(2)


@SETTINGS
@given(value=any_value)
def test_any_value_as_an_attribute_key_or_event_attributes_mapping(value: Any) -> None:
    """Non-str keys and non-mapping attribute arguments never raise and still export valid OTLP."""
    autotrace.clear_traces()
    with span("k") as s:
        try:
            hash(value)
        except Exception:
            pass
        else:
            s.set_attribute(value, value)
            s.set_attributes({value: 1})
        s.set_attributes(value)
        s.add_event("e", value if isinstance(value, dict) else None)
        s.update_name(value)
    _export_is_valid(1)


@SETTINGS
@given(exc=exceptions(), message=any_text)
def test_any_exception_in_span_exports_valid_otlp_and_propagates_unchanged(exc: BaseException, message: str) -> None:
    """Any exception leaving a span is recorded, exported as valid OTLP and re-raised as the same object."""
    autotrace.clear_traces()
    with pytest.raises(BaseException) as info:
        with span(message) as s:
            s.record_exception(exc)
            s.set_status("error", message)
            raise exc
    assert info.value is exc
    doc = _export_is_valid(1)
    (sp,) = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert sp["status"]["code"] == 2
    # A cancellation leaving the span is no error: a "cancelled" event, the status as it was.
    leaving = "cancelled" if isinstance(exc, asyncio.CancelledError) else "exception"
    assert [e["name"] for e in sp["events"]] == ["exception", leaving]


# -- the user's result is unchanged, for every kind of function ------------------------------

decorations = st.sampled_from(
    [
        {},
        {"capture_args": True},
        {"capture_result": True},
        {"capture_args": True, "capture_result": True},
        {"kind": "server", "attributes": {"x": 1}},
    ]
)


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("ok", call())
    except BaseException as exc:
        return ("raised", exc)


@SETTINGS
@given(result=any_value, arg=any_value, options=decorations)
def test_sync_result_unchanged(result: Any, arg: Any, options: dict[str, Any]) -> None:
    """A traced sync function returns the very same object it returns untraced, for any value."""

    def plain(x: Any, *, api_key: Any = None) -> Any:
        return result

    wrapped = traced(**options)(plain)
    assert wrapped(arg, api_key=arg) is result
    assert wrapped(arg) is plain(arg)
    _export_is_valid(2)


@SETTINGS
@given(exc=exceptions(), arg=any_value, options=decorations)
def test_sync_exception_unchanged(exc: BaseException, arg: Any, options: dict[str, Any]) -> None:
    """A traced sync function raises the very same exception object, for any exception."""

    @traced(**options)
    def fails(x: Any) -> Any:
        raise exc

    kind, raised = _outcome(lambda: fails(arg))
    assert kind == "raised" and raised is exc
    _export_is_valid(1)


@SETTINGS
@given(result=any_value, exc=st.one_of(st.none(), exceptions()), arg=any_value, options=decorations)
def test_async_result_or_exception_unchanged(
    result: Any, exc: BaseException | None, arg: Any, options: dict[str, Any]
) -> None:
    """A traced coroutine returns the same object, or raises the same exception, as it does untraced."""

    async def plain(x: Any) -> Any:
        await asyncio.sleep(0)
        if exc is not None:
            raise exc
        return result

    wrapped = traced(**options)(plain)

    async def main() -> tuple[str, Any]:
        try:
            return ("ok", await wrapped(arg))
        except BaseException as error:
            return ("raised", error)

    kind, outcome = asyncio.run(main())
    if exc is None:
        assert (kind, outcome) == ("ok", result) and outcome is result
    else:
        assert kind == "raised" and outcome is exc
    _export_is_valid(1)


@SETTINGS
@given(
    items=st.lists(any_value, max_size=5),
    result=any_value,
    exc=st.one_of(st.none(), exceptions()),
    options=decorations,
)
def test_generator_items_and_outcome_unchanged(
    items: list[Any], result: Any, exc: BaseException | None, options: dict[str, Any]
) -> None:
    """A traced generator yields the same objects and ends with the same return value or exception."""

    def plain() -> Any:
        yield from items
        if exc is not None:
            raise exc
        return result

    gen = traced(**options)(plain)()
    seen: list[Any] = []
    try:
        while True:
            seen.append(next(gen))
    except StopIteration as stop:
        assert exc is None and stop.value is result
    except BaseException as error:
        assert error is exc
    assert len(seen) == len(items) and all(a is b for a, b in zip(seen, items, strict=True))
    _export_is_valid(1)


@SETTINGS
@given(items=st.lists(any_value, max_size=5), exc=st.one_of(st.none(), exceptions()), options=decorations)
def test_async_generator_items_and_outcome_unchanged(
    items: list[Any], exc: BaseException | None, options: dict[str, Any]
) -> None:
    """A traced async generator yields the same objects and raises the same exception object."""

    async def plain() -> Any:
        for item in items:
            await asyncio.sleep(0)
            yield item
        if exc is not None:
            raise exc

    wrapped = traced(**options)(plain)

    async def main() -> tuple[list[Any], BaseException | None]:
        seen: list[Any] = []
        try:
            async for item in wrapped():
                seen.append(item)
        except BaseException as error:
            return seen, error
        return seen, None

    seen, raised = asyncio.run(main())
    assert raised is exc
    assert len(seen) == len(items) and all(a is b for a, b in zip(seen, items, strict=True))
    _export_is_valid(1)


def test_deeply_nested_value_and_recursive_containers_are_stringified() -> None:
    """A 100,000-deep nested list and self-containing containers become strings, not a crash."""
    deep = _deep(100_000)
    with span("deep", attributes={"deep": deep, "loop": _recursive_list(), "dloop": _recursive_dict()}) as s:
        s.add_event("e", {"deep": deep})

    @traced(capture_args=True, capture_result=True)
    def echo(x: Any) -> Any:
        return x

    assert echo(deep) is deep
    _export_is_valid(2)


def test_stringly_values_keep_their_text() -> None:
    """Common non-OTel values are kept as readable text (datetime, Decimal, Fraction, UUID)."""
    when = datetime.datetime(2024, 1, 2, 3, 4, 5)
    with span("t", attributes={"d": decimal.Decimal("1.5"), "f": fractions.Fraction(1, 3), "w": when}) as s:
        pass
    assert s.attributes["d"] == "1.5"
    assert s.attributes["f"] == "1/3"
    assert s.attributes["w"] == str(when)
    _export_is_valid(1)
