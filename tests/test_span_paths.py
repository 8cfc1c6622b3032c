"""Every way a span is made sets every slot of Span: the canonical builder and its inline copies agree.

``tracer._new_span`` is the canonical builder; ``span()``, the sync
``@traced`` wrapper and the generated async one inline its slot stores for speed, and ``Span.__init__``,
the JSON Lines reader and the LLM helpers build spans their own way. A slot
left unset raises AttributeError on first read, so each path is checked here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import autotrace
from autotrace import InferenceSpanBuilder, Span, SpanContext, SpanKind, Status, llm, record_span, span, traced
from autotrace.export import FileExporter, decode_spans, read_jsonl
from autotrace.sampling import TraceIdRatioBased
from autotrace.testing import capture_spans

from .conftest import all_spans

# Set only when a span packs that many attributes of its own (see Span.__slots__).
INLINE_VALUE_SLOTS = {"_attr0", "_attr1", "_attr2"}


def assert_every_slot_set(s: Span, how: str) -> None:
    """Each of Span's slots is set and holds a value of the kind the rest of the code reads."""
    values = {}
    for slot in Span.__slots__:
        if slot in INLINE_VALUE_SLOTS:
            continue
        try:
            values[slot] = getattr(s, slot)
        except AttributeError:  # pragma: no cover - the failure this test exists for
            pytest.fail(f"{how}: slot {slot} is not set")
    # The folded and packed fields, read by their names as the rest of the code reads them.
    for name in ("_span_id", "_start", "_end", "_attrs", "_status"):
        values[name] = getattr(s, name)
    assert type(values["_name"]) is str and values["_name"], how
    assert type(values["_kind"]) is SpanKind, how
    assert isinstance(values["_trace_id"], int) and 0 < values["_trace_id"] < 1 << 128, how
    assert type(values["_span_id"]) is int and 0 < values["_span_id"] < 1 << 64, how
    assert values["_parent_id"] is None or (type(values["_parent_id"]) is int and values["_parent_id"] > 0), how
    assert isinstance(values["_attrs"], Mapping), how
    assert isinstance(values["_status"], Status), how
    assert type(values["_start"]) is int and values["_start"] > 0, how
    assert type(values["_end"]) is int and values["_end"] >= values["_start"], how  # every span here has ended
    assert (values["_sid"] is None) == (values["_t0"] is None), how  # packed together or not at all
    assert values["_trace"] is None, how  # filed: no reference to its trace buffer is kept
    assert values["_extra"] is None or type(values["_extra"]).__name__ == "_Extra", how
    s.to_dict()  # every property the encoder reads works


def _spans_named(name: str) -> list[Span]:
    return [s for s in all_spans() if s.name == name]


@traced
def sync_fn() -> int:
    return 1


@traced(capture_args=True, capture_result=True)
def sync_capture(x: int) -> int:
    return x


@traced
async def async_fn() -> int:
    return 2


@traced(capture_args=True)
async def async_capture(x: int) -> int:
    return x


@traced
def gen_fn() -> Iterator[int]:
    yield 1


@traced
async def agen_fn() -> AsyncIterator[int]:
    yield 1


class Model:
    @traced
    def method(self) -> int:
        return 3

    @traced
    async def amethod(self) -> int:
        return 4


def _run_async_gen() -> None:
    async def consume() -> None:
        async for _ in agen_fn():
            pass

    asyncio.run(consume())


PATHS: dict[str, tuple[Callable[[], None], str]] = {
    "@traced sync (root: inline)": (lambda: sync_fn() and None, "sync_fn"),
    "@traced sync with capture": (lambda: sync_capture(4) and None, "sync_capture"),
    "@traced method (wrapt)": (lambda: Model().method() and None, "Model.method"),
    "@traced async (generated, inline)": (lambda: asyncio.run(async_fn()) and None, "async_fn"),
    "@traced async method": (lambda: asyncio.run(Model().amethod()) and None, "Model.amethod"),
    "@traced async with capture (wrapt)": (lambda: asyncio.run(async_capture(5)) and None, "async_capture"),
    "@traced generator": (lambda: list(gen_fn()) and None, "gen_fn"),
    "@traced async generator": (_run_async_gen, "agen_fn"),
}


@pytest.mark.parametrize("how", list(PATHS))
@pytest.mark.parametrize("where", ["root", "child", "custom sampler", "remote parent"])
def test_traced_spans_have_every_slot(how: str, where: str) -> None:
    """@traced sync/async/generator/async generator, as a root, a child, via start() and below a remote parent."""
    call, suffix = PATHS[how]
    if where == "custom sampler":  # roots go through tracer.start() instead of the inline copy
        autotrace.configure(sampler=TraceIdRatioBased(1.0))
    if where == "child":
        with span("outer"):
            call()
    elif where == "remote parent":
        with autotrace.use_span(SpanContext(0xABC, 0xDEF, True, True)):
            call()
    else:
        call()
    (s,) = [s for s in all_spans() if s.name.endswith(suffix)]
    assert_every_slot_set(s, f"{how}, {where}")


@pytest.mark.parametrize("where", ["root", "child", "custom sampler", "remote parent", "attributes and links"])
def test_span_context_manager_spans_have_every_slot(where: str) -> None:
    """span() as a root (inline), a child (inline), via start(), below a remote parent, with attributes and links."""
    if where == "custom sampler":
        autotrace.configure(sampler=TraceIdRatioBased(1.0))
    if where == "child":
        with span("outer"), span("it"):
            pass
    elif where == "remote parent":
        with span("it", parent=SpanContext(0xABC, 0xDEF, True, True)):
            pass
    elif where == "attributes and links":
        with span("it", attributes={"a": 1}, links=[SpanContext(0xABC, 0xDEF)]) as s:
            s.set_attribute("b", 2)
    else:
        with span("it"):
            pass
    (s,) = _spans_named("it")
    assert_every_slot_set(s, f"span(), {where}")


def test_async_with_span_has_every_slot() -> None:
    """`async with span()` sets every slot too."""

    async def block() -> None:
        async with span("it"):
            pass

    asyncio.run(block())
    (s,) = _spans_named("it")
    assert_every_slot_set(s, "async with span()")


def test_hand_built_and_recorded_spans_have_every_slot() -> None:
    """Span(...) stored by record_span, ended by hand, or used as a block."""
    record_span(Span("recorded", attributes={"a": 1}))
    with Span("block"):
        pass
    with span("parent") as parent:
        record_span(Span("child", trace_id=parent.trace_id, parent_span_id=parent.span_id, kind="client"))
    for name in ("recorded", "block", "child"):
        (s,) = _spans_named(name)
        assert_every_slot_set(s, f"hand-built {name}")


def test_inference_builder_and_llm_spans_have_every_slot() -> None:
    """InferenceSpanBuilder.build_and_record() and autotrace.llm() (block and decorator)."""
    InferenceSpanBuilder("inference").with_request_id(1).with_model("m").with_max_tokens(3).build_and_record()
    with llm(model="m", name="llm-block") as call:
        call.set_output("hi")

    @llm
    def complete(prompt: str) -> str:
        return prompt

    complete("x")
    for name in ("inference", "llm-block"):
        (s,) = _spans_named(name)
        assert_every_slot_set(s, name)
    (s,) = _spans_named("text_completion")
    assert_every_slot_set(s, "@llm")


def test_spans_read_back_from_json_lines_have_every_slot(tmp_path: Path) -> None:
    """The JSON Lines reader (read_jsonl + decode_spans) rebuilds spans with every slot set."""
    with capture_spans() as captured:
        with span("root", attributes={"k": "v"}) as root:
            root.add_event("e", {"x": 1})
            root.add_link(SpanContext(0xABC, 0xDEF))
            with span("leaf", parent=SpanContext(0x123, 0x456, True, True, "a=b", False)):
                pass
    exporter = FileExporter(str(tmp_path / "t.jsonl"))
    assert exporter.export(list(captured))
    exporter.shutdown()
    rebuilt = [s for doc in read_jsonl(tmp_path / "t.jsonl") for s in decode_spans(doc)]
    assert sorted(s.name for s in rebuilt) == ["leaf", "root"]
    for s in rebuilt:
        assert_every_slot_set(s, f"JSON Lines {s.name}")


def test_a_span_missing_a_slot_is_caught() -> None:
    """The check itself fails for a span with a slot left unset (as a forgotten store in an inline copy would)."""
    s: Any = object.__new__(Span)
    for slot in Span.__slots__:
        if slot != "_extra" and slot not in INLINE_VALUE_SLOTS:
            object.__setattr__(s, slot, None)
    with pytest.raises(pytest.fail.Exception, match="slot _extra is not set"):
        assert_every_slot_set(s, "broken")


def test_a_span_read_from_json_lines_can_be_a_parent(tmp_path: Path) -> None:
    """A span rebuilt by the JSON Lines reader, made current, gets real children (its _trace slot is set)."""
    with span("stored"):
        pass
    exporter = FileExporter(str(tmp_path / "t.jsonl"))
    assert exporter.export(all_spans())
    exporter.shutdown()
    (loaded,) = [s for doc in read_jsonl(tmp_path / "t.jsonl") for s in decode_spans(doc)]
    with autotrace.use_span(loaded), span("child") as child:
        pass
    assert isinstance(child, Span) and child.parent_span_id == loaded.span_id
    assert autotrace.tracer.errors() == {}
