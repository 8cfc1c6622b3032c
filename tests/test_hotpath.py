"""The hot path and the trace store it files spans into: whole traces, eviction, late spans."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading

import pytest

import autotrace
from autotrace import Span, TraceStore, span, traced
from autotrace.context import current_span, current_span_context
from autotrace.spans import SpanContext
from autotrace.tracer import _S


def names(trace: list[Span]) -> list[str]:
    """Span names of one trace, in the order they finished."""
    return [s.name for s in trace]


def test_child_ending_after_its_root_lands_in_the_same_trace() -> None:
    """A span that ends after its root has ended is stored in the root's trace."""
    with span("root") as root:
        pass
    with span("late", parent=root):  # e.g. a background task finishing after the request
        pass
    traces = autotrace.get_trace_store().traces()
    assert len(traces) == 1
    assert sorted(names(traces[0])) == ["late", "root"]


def test_spans_arriving_after_clear_are_kept() -> None:
    """clear() drops what was stored; spans of a trace still open that end later are kept."""
    with span("root") as root:
        with span("before"):
            pass
        assert autotrace.clear_traces() == 1
        with span("after"):
            pass
    traces = autotrace.get_trace_store().traces()
    assert [sorted(names(t)) for t in traces] == [["after", "root"]]
    assert traces[0][0].trace_id == root.trace_id


def test_spans_arriving_after_take_are_kept_for_the_next_reader() -> None:
    """take() hands over what is there; a span ending later shows up at the next read."""
    store = autotrace.get_trace_store()
    with span("root"):
        with span("a"):
            pass
        taken = store.take()
        assert [names(t) for t in taken] == [["a"]]
    assert [names(t) for t in store.traces()] == [["root"]]
    assert store.stats()["evicted_traces"] == 0


def test_eviction_is_by_whole_trace_oldest_first() -> None:
    """With max_traces=2, a third trace evicts all spans of the first and nothing else."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=2))
    for i in range(3):
        with span(f"root{i}"):
            for j in range(3):
                with span(f"child{i}.{j}"):
                    pass
    store = autotrace.get_trace_store()
    traces = store.traces()
    assert [t[-1].name for t in traces] == ["root1", "root2"]
    assert all(len(t) == 4 for t in traces)
    assert store.stats()["evicted_traces"] == 1


def test_eviction_count_ignores_traces_already_cleared() -> None:
    """Traces removed by clear() are not counted again when newer traces push them out."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=2))
    for _ in range(2):
        with span("old"):
            pass
    autotrace.clear_traces()
    for _ in range(3):
        with span("new"):
            pass
    stats = autotrace.get_trace_store().stats()
    assert (stats["traces"], stats["evicted_traces"]) == (2, 1)


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


def test_span_limit_per_trace_drops_and_counts() -> None:
    """Spans past max_spans_per_trace are dropped and counted, the trace is kept."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_spans_per_trace=3))
    with span("root"):
        for _ in range(5):
            with span("child"):
                pass
    stats = autotrace.get_trace_store().stats()
    assert stats["spans"] == 3
    assert stats["dropped_spans"] == 3


def test_record_span_joins_the_trace_by_id() -> None:
    """A hand-built span recorded with a stored trace's id joins that trace."""
    with span("root") as root:
        pass
    extra = Span("extra", trace_id=root.trace_id, parent_span_id=root.span_id)
    assert autotrace.record_span(extra)
    traces = autotrace.get_trace_store().traces()
    assert len(traces) == 1
    assert sorted(names(traces[0])) == ["extra", "root"]


def test_remote_parent_children_join_one_trace() -> None:
    """Two server spans continuing the same remote trace are stored as one trace."""
    remote = SpanContext(0x1234, 0x99, True, True)
    for _ in range(2):
        with span("server", parent=remote):
            pass
    store = autotrace.get_trace_store()
    assert store.trace_count() == 1
    assert len(store.get_trace(0x1234) or []) == 2


def test_store_add_groups_by_trace_and_evicts_whole_traces() -> None:
    """TraceStore.add() groups hand-built spans by trace id and evicts whole traces FIFO."""
    store = TraceStore(max_traces=2)
    for t in (1, 2, 1, 3):
        store.add(Span(f"s{t}", trace_id=t, end_time_unix_nano=1))
    assert [len(x) for x in store.traces()] == [1, 1]
    assert store.get_trace(1) is None
    assert store.stats()["evicted_traces"] == 1
    assert [names(x) for x in store.take()] == [["s2"], ["s3"]]
    assert store.trace_count() == 0


def test_configure_keeps_traces_and_open_traces_keep_filling() -> None:
    """Reconfiguring keeps stored traces, and a trace open across it still ends up whole."""
    with span("done"):
        pass
    with span("open"):
        autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=50))
        with span("child"):
            pass
    traces = autotrace.get_trace_store().traces()
    assert [sorted(names(t)) for t in traces] == [["done"], ["child", "open"]]


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


def test_span_ended_by_hand_inside_traced_is_stored_once() -> None:
    """Ending the current @traced span by hand inside the call stores it once."""

    @traced
    def f() -> None:
        current_span().end()

    f()
    assert autotrace.get_trace_store().stats()["spans"] == 1


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


def test_threads_record_whole_traces_without_losing_spans() -> None:
    """Four threads recording at once lose no span and mix no traces."""

    @traced
    def leaf() -> None:
        return None

    @traced
    def root() -> None:
        for _ in range(3):
            leaf()

    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=10_000))

    def work() -> None:
        for _ in range(500):
            root()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    traces = autotrace.get_trace_store().traces()
    assert len(traces) == 2000
    assert all(len(t) == 4 and len({s.trace_id for s in t}) == 1 for t in traces)


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


def test_store_reads_stay_consistent_while_threads_record() -> None:
    """Readers (traces, take, clear) running beside recording threads see whole spans only."""
    stop = threading.Event()

    def record() -> None:
        while not stop.is_set():
            with span("r"):
                with span("c"):
                    pass

    threads = [threading.Thread(target=record) for _ in range(2)]
    for t in threads:
        t.start()
    store = autotrace.get_trace_store()
    try:
        for i in range(200):
            if i % 3 == 0:
                store.clear()
            for trace in store.take(5) if i % 2 else store.traces():
                assert len({s.trace_id for s in trace}) == 1
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert store.stats()["spans"] >= 0
    assert autotrace.tracer.errors() == {}
    assert _S.store is store


def test_evicted_traces_are_freed_without_the_cyclic_collector() -> None:
    """Stored spans hold no reference cycle: evicted traces are freed by reference counting."""

    @traced
    def leaf() -> None:
        return None

    @traced
    def root() -> None:
        leaf()
        with span("block") as s:
            s.set_attribute("k", 1)

    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=2))
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            root()
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert autotrace.get_trace_store().stats()["evicted_traces"] == 48


def test_take_many_returns_the_newest_and_keeps_the_rest_in_order() -> None:
    """take(n) over many traces removes the n newest whole and keeps the others, oldest first."""
    for i in range(40):
        with span(f"t{i}"):
            with span("c"):
                pass
    store = autotrace.get_trace_store()
    taken = store.take(25)
    assert [t[-1].name for t in taken] == [f"t{i}" for i in range(15, 40)]
    assert all(len(t) == 2 for t in taken)
    assert [t[-1].name for t in store.traces()] == [f"t{i}" for i in range(15)]
    assert store.stats() == {"traces": 15, "spans": 30, "max_traces": 1000, "evicted_traces": 0, "dropped_spans": 0}
    assert store.clear() == 15 and store.trace_count() == 0


def test_store_add_many_traces_prunes_its_index_and_keeps_grouping() -> None:
    """add() of spans from many more traces than max_traces keeps the newest, each whole."""
    store = TraceStore(max_traces=5)
    for t in range(1, 101):
        for k in range(3):
            store.add(Span(f"s{t}.{k}", trace_id=t, end_time_unix_nano=1))
    traces = store.traces()
    assert [t[0].trace_id for t in traces] == [f"{t:032x}" for t in range(96, 101)]
    assert all(len(t) == 3 for t in traces)
    assert len(store._index) <= 2 * 5 + 16
    assert store.stats()["evicted_traces"] == 95


def test_export_pauses_the_collector_only_while_encoding() -> None:
    """export_traces() gives every stored span and leaves the garbage collector as it found it."""
    for _ in range(3):
        with span("root"), span("child") as c:
            c.set_attribute("n", 1)
    assert gc.isenabled()
    doc = autotrace.export_traces()
    assert gc.isenabled()
    assert len(doc["resourceSpans"][0]["scopeSpans"][0]["spans"]) == 6
    gc.disable()
    try:
        autotrace.get_trace_store().export(clear=True)
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert autotrace.trace_count() == 0


def test_in_process_remote_child_joins_the_local_trace_in_end_order() -> None:
    """A span continuing (as a remote parent) a trace started in this process is stored in it, in end order."""
    with span("client") as client:
        remote = client.get_span_context()._replace(is_remote=True)
        with span("server", parent=remote) as server:
            pass
    store = autotrace.get_trace_store()
    assert store.trace_count() == 1
    trace = store.get_trace(client.trace_id)
    assert trace is not None and names(trace) == ["server", "client"]
    assert server.parent_span_id == client.span_id
    assert [names(t) for t in store.take()] == [["server", "client"]]


def test_held_store_lock_caps_what_is_taken_in_and_recording_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the store lock is held, recording never waits and spans past PENDING_LIMIT are dropped and counted."""
    import autotrace.store as store_module

    monkeypatch.setattr(store_module, "PENDING_LIMIT", 10)
    store = autotrace.get_trace_store()
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with store._lock:
            held.set()
            release.wait(60)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(30)
    try:
        assert _S.fast_limit == -1
        for _ in range(15):
            with span("r"):
                pass
    finally:
        release.set()
        t.join(30)
    assert _S.fast_limit == store.max_spans_per_trace
    stats = store.stats()
    assert (stats["spans"], stats["dropped_spans"]) == (10, 5)
    with span("after"):
        pass
    assert store.stats()["spans"] == 11
