"""span(), @traced with span(), current_span(), record_span() and the global store functions."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

import autotrace
from autotrace import NonRecordingSpan, Span, SpanContext, SpanKind, StatusCode, span, traced
from autotrace.context import current_span, current_span_context
from autotrace.testing import capture_spans
from tests.conftest import all_spans


def names(trace: list[Span]) -> list[str]:
    """Span names of one trace, in the order they finished."""
    return [s.name for s in trace]


def test_with_span_records_attributes_events_and_nesting() -> None:
    """`with span()` is current inside, ends on exit, and nests children."""
    with span("decode", attributes={"step": 3}, kind="client") as s:
        assert autotrace.current_span() is s
        s.set_attribute("tokens", 12)
        s.add_event("first_token", {"ttft_ms": 41.2})
        with span("inner") as child:
            assert child.parent_span_id == s.span_id
            assert child.trace_id == s.trace_id
        assert autotrace.current_span() is s
    assert autotrace.current_span().is_recording is False
    assert s.end_time_unix_nano is not None
    stored = {x.name: x for x in all_spans()}
    assert stored["decode"].attributes["step"] == 3 and stored["decode"].attributes["tokens"] == 12
    assert stored["decode"].kind is SpanKind.CLIENT
    assert stored["decode"].events[0].name == "first_token"
    assert autotrace.trace_count() == 1


def test_async_with_span() -> None:
    """`async with span()` works like `with` inside coroutines."""

    async def main() -> str:
        async with span("async-block") as s:
            await asyncio.sleep(0)
            assert autotrace.current_span() is s
            return s.span_id

    span_id = asyncio.run(main())
    assert [s.span_id for s in all_spans()] == [span_id]


def test_exception_in_with_block() -> None:
    """An exception leaving `with span()` is recorded, marks ERROR and propagates unchanged."""
    original = ZeroDivisionError("div")
    with pytest.raises(ZeroDivisionError) as info, span("risky"):
        raise original
    assert info.value is original
    (s,) = all_spans()
    assert s.status.code is StatusCode.ERROR and s.status.description == "ZeroDivisionError: div"
    assert s.events[0].attributes["exception.escaped"] is True


def test_current_span_outside_is_non_recording() -> None:
    """Outside any span current_span() is a non-recording span with zero ids that accepts writes."""
    cur = autotrace.current_span()
    assert isinstance(cur, NonRecordingSpan)
    assert not cur.is_recording and cur.trace_id == "0" * 32
    cur.set_attribute("x", 1)
    cur.add_event("e")
    cur.record_exception(ValueError())
    cur.end()


def test_explicit_parent_context() -> None:
    """span(parent=SpanContext) continues that trace under that span id."""
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, True, "k=v")
    with span("server", parent=remote) as s:
        pass
    assert s.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert s.parent_span_id == "b7ad6b7169203331"
    assert s.get_span_context().trace_state == "k=v"


def test_unsampled_remote_parent_honoured() -> None:
    """A remote parent whose sampled flag is off yields a non-recording span with its trace id."""
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, True)
    with span("server", parent=remote) as s:
        assert not s.is_recording
        assert s.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert all_spans() == []


def test_use_span_makes_remote_context_current() -> None:
    """use_span(ctx) makes traced calls inside children of the remote span."""
    remote = SpanContext(0x1234, 0x5678, True, True)

    @traced
    def handler() -> str:
        return autotrace.current_span().parent_span_id or ""

    with autotrace.use_span(remote):
        assert handler() == f"{0x5678:016x}"
    (s,) = all_spans()
    assert s.trace_id == f"{0x1234:032x}"


def test_record_span_hand_built() -> None:
    """record_span stores a hand-built span when sampled (True) and ends it if still open."""
    s = Span("custom_operation", attributes={"k": "v"})
    assert autotrace.record_span(s) is True
    assert s.end_time_unix_nano is not None
    assert autotrace.trace_count() == 1
    assert all_spans()[0].attributes["k"] == "v"


def test_record_span_unsampled_returns_false() -> None:
    """With sampling off record_span returns False and stores nothing."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))
    assert autotrace.record_span(Span("x")) is False
    assert autotrace.trace_count() == 0


def test_hand_built_span_end_does_not_store() -> None:
    """end() on a hand-built span does not store it; record_span does, once."""
    s = Span("x")
    s.end()
    assert autotrace.trace_count() == 0
    assert autotrace.record_span(s) is True
    assert autotrace.get_trace_store().span_count() == 1


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_a_hand_built_span_used_as_a_block_keeps_its_trace_whole_or_not_at_all(rate: float) -> None:
    """`with Span(...)`: its children follow its sampling decision, so the store never holds them without it."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=rate))

    @traced("child-call")
    def child_call() -> str:
        with span("grandchild"):
            pass
        return autotrace.current_span().trace_id

    with Span("manual") as manual:
        seen = child_call()
    assert seen == manual.trace_id  # ids propagate either way
    stored = [[s.name for s in t] for t in autotrace.get_trace_store().traces()]
    if rate == 0.0:
        assert stored == []
    else:
        assert [sorted(t) for t in stored] == [["child-call", "grandchild", "manual"]]
        by_name = {s.name: s for s in all_spans()}
        assert by_name["child-call"].parent_span_id == manual.span_id
        assert by_name["grandchild"].parent_span_id == by_name["child-call"].span_id


def test_capture_spans_keeps_a_hand_built_block_and_its_children_whatever_the_rate() -> None:
    """Under capture_spans (forced sampling) a hand-built span and its children are all recorded."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))
    with capture_spans() as spans:
        with Span("manual"):
            with span("inner"):
                pass
    assert sorted(s.name for s in spans) == ["inner", "manual"]


def test_record_span_rejects_non_spans() -> None:
    """record_span with something that is not a Span raises TypeError naming the type."""
    with pytest.raises(TypeError, match="dict"):
        autotrace.record_span({"name": "x"})  # type: ignore[arg-type]


def test_unsampled_spans_still_carry_ids_for_propagation() -> None:
    """In an unsampled trace current_span() has a stable valid trace id and sampled=False."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))
    seen = []

    @traced
    def inner() -> None:
        seen.append(autotrace.current_span().get_span_context())

    @traced
    def outer() -> None:
        seen.append(autotrace.current_span().get_span_context())
        inner()
        with span("block") as s:
            seen.append(s.get_span_context())

    outer()
    assert all(c.is_valid and not c.sampled for c in seen)
    assert len({c.trace_id for c in seen}) == 1
    assert all_spans() == []
    outer()
    assert seen[3].trace_id != seen[0].trace_id  # a new trace each time


def test_unsampled_with_span_root_has_ids() -> None:
    """An unsampled `with span()` root is non-recording but has a valid trace id."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))
    with span("root") as s:
        ctx = s.get_span_context()
        assert autotrace.current_span().get_span_context() == ctx
        with span("child") as c:
            assert c.get_span_context().trace_id == ctx.trace_id
    assert ctx.is_valid and not ctx.sampled


def test_threads_do_not_inherit_context() -> None:
    """A plain thread starts outside any span (contextvars are not inherited)."""
    result = []
    with span("main"):
        t = threading.Thread(target=lambda: result.append(autotrace.current_span().is_recording))
        t.start()
        t.join()
    assert result == [False]


def test_global_store_functions() -> None:
    """trace_count, export_traces, clear_traces and get_trace_store work on the global store."""
    assert autotrace.trace_count() == 0
    assert autotrace.export_traces() == {"resourceSpans": []}
    for _ in range(3):
        with span("t"):
            pass
    assert autotrace.trace_count() == 3
    assert autotrace.get_trace_store().trace_count() == 3
    assert len(autotrace.export_traces(limit=2)["resourceSpans"][0]["scopeSpans"][0]["spans"]) == 2
    assert autotrace.clear_traces() == 3
    assert autotrace.trace_count() == 0
    with pytest.raises(ValueError, match="limit"):
        autotrace.export_traces(limit=-1)


def test_configure_keeps_recorded_traces() -> None:
    """Reconfiguring carries stored traces over to the new store."""
    with span("kept"):
        pass
    store = autotrace.configure(sample_rate=1.0, max_traces=50)
    assert store is autotrace.get_trace_store() and store.max_traces == 50
    assert [s.name for s in all_spans()] == ["kept"]
    assert autotrace.init_trace_store is autotrace.configure


def test_disabled_sdk_is_no_op() -> None:
    """With enabled=False nothing is recorded, even under a sampled remote parent."""
    autotrace.configure(autotrace.TraceConfig(enabled=False))

    @traced
    def f() -> int:
        return 1

    assert f() == 1
    with span("x", parent=SpanContext(1, 2, True, True)) as s:
        assert not s.is_recording
    assert autotrace.record_span(Span("y")) is False
    assert autotrace.trace_count() == 0


def test_capture_spans_forces_sampling() -> None:
    """capture_spans() captures everything even at sample rate 0, then sampling returns to normal."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))
    with capture_spans() as spans:
        with span("a"):
            pass
        autotrace.record_span(Span("b"))
    assert spans.names() == ["a", "b"]
    with span("c") as s:
        assert not s.is_recording


def test_entering_the_no_span_placeholder_in_threads_is_safe() -> None:
    """`with current_span():` outside any span, in several threads at once, leaves no span current."""
    errors: list[object] = []

    def worker() -> None:
        for _ in range(2_000):
            with autotrace.current_span():
                pass
        if autotrace.current_span().get_span_context().is_valid or autotrace.context.CURRENT.get() is not None:
            errors.append("leaked")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert not autotrace.tracer.errors()


def test_under_an_unsampled_hand_built_span_nothing_below_is_recorded() -> None:
    """span() children of a dropped hand-built span say unsampled, so their own children are not stored either."""
    from autotrace import propagation

    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))

    @traced("f")
    def f() -> None:
        pass

    with Span("hand") as hand:
        with span("child") as child:
            assert not child.get_span_context().sampled
            assert propagation.inject({})["traceparent"].endswith("-02")  # not sampled; random id
            with span("grand"):
                pass
            f()
    assert child.trace_id == hand.trace_id
    assert autotrace.get_trace_store().traces() == []


def test_a_hand_built_span_entered_twice_restores_the_context() -> None:
    """`with s: with s:` on a Span(...) leaves the outer context current afterwards and stores it once."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0))
    s = Span("hand")
    with s:
        with s:
            assert autotrace.current_span() is s
    assert not autotrace.current_span().get_span_context().is_valid  # outside any span again
    assert autotrace.get_trace_store().span_count() == 1


def test_traced_and_span_share_one_trace() -> None:
    """Spans from @traced and span() nested in each other form one stored trace."""

    @traced
    def inner() -> None:
        with span("leaf"):
            pass

    @traced
    def outer() -> None:
        inner()
        inner()

    outer()
    traces = autotrace.get_trace_store().traces()
    assert len(traces) == 1
    assert len(traces[0]) == 5
    root = traces[0][-1]
    assert root.name.endswith("outer") and root.parent_span_id is None
    assert {s.trace_id for s in traces[0]} == {root.trace_id}


def test_unsampled_span_carries_stable_ids_and_children_stay_unsampled() -> None:
    """An unsampled span() has fixed non-zero ids that its children propagate; nothing is stored."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))

    @traced
    def child() -> str:
        return current_span().trace_id

    with span("root") as s:
        assert not s.is_recording and not s.is_sampled
        ctx = current_span_context()
        assert ctx is not None and ctx.trace_id != 0 and ctx.span_id != 0
        assert s.get_span_context() == ctx
        assert child() == s.trace_id
        with span("inner") as inner:
            assert inner.trace_id == s.trace_id
    assert current_span_context() is None
    assert autotrace.trace_count() == 0


def test_span_without_attributes_gets_its_own_dict_on_first_write() -> None:
    """span() spans share an empty attribute dict until written; a write never leaks to others."""
    with span("a") as a:
        pass
    with span("b") as b:
        b.set_attribute("k", 1)
    with span("c") as c:
        pass
    assert dict(a.attributes) == {} and dict(c.attributes) == {}
    assert dict(b.attributes) == {"k": 1}


def test_exception_is_recorded_and_reraised() -> None:
    """An exception leaving a traced call or a span() block marks the span ERROR and propagates."""

    @traced
    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        boom()
    with pytest.raises(ValueError), span("block"):
        raise ValueError("y")
    spans = [s for t in autotrace.get_trace_store().traces() for s in t]
    assert [s.status.code.name for s in spans] == ["ERROR", "ERROR"]
    assert all(s.events[0].name == "exception" for s in spans)


def test_span_exited_in_another_context_still_ends() -> None:
    """A span entered in one context and exited in another still ends and is stored."""
    s = span("moved")
    contextvars.copy_context().run(s.__enter__)
    s.__exit__(None, None, None)
    assert current_span_context() is None
    assert autotrace.get_trace_store().stats()["spans"] == 1
    assert autotrace.tracer.errors() == {}


def test_async_traced_spans_nest_per_task() -> None:
    """Concurrent traced coroutines each get their own child span under their task's root."""

    @traced
    async def step() -> None:
        await asyncio.sleep(0)

    @traced
    async def request() -> None:
        await step()
        await step()

    async def main() -> None:
        await asyncio.gather(*(request() for _ in range(5)))

    asyncio.run(main())
    traces = autotrace.get_trace_store().traces()
    assert len(traces) == 5
    assert all(len(t) == 3 for t in traces)
