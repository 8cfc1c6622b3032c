"""TraceStore: whole traces, FIFO eviction by first arrival, atomic take, late spans, nothing lost or kept alive."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator

import pytest

import autotrace
from autotrace import Span, SpanContext, TraceStore, span, traced
from autotrace.tracer import _S
from tests.conftest import all_spans


def _trace(store: TraceStore, trace_id: int, n: int = 1) -> list[Span]:
    spans = [Span(f"s{i}", trace_id=trace_id) for i in range(n)]
    for s in spans:
        s.end()
        store.add(s)
    return spans


def names(trace: list[Span]) -> list[str]:
    """Span names of one trace, in the order they finished."""
    return [s.name for s in trace]


def test_empty_store() -> None:
    """A new store holds nothing and exports an empty request."""
    store = TraceStore()
    assert store.trace_count() == 0 and len(store) == 0
    assert store.traces() == []
    assert store.export() == {"resourceSpans": []}
    assert store.clear() == 0


def test_add_groups_spans_by_trace() -> None:
    """Spans of one trace are held together; the store counts traces, not spans."""
    store = TraceStore()
    _trace(store, 1, 3)
    _trace(store, 2, 2)
    assert store.trace_count() == 2
    assert store.span_count() == 5
    assert [len(t) for t in store.traces()] == [3, 2]


def test_fifo_eviction_of_whole_traces() -> None:
    """Past max_traces the trace that arrived first is evicted with all its spans (add() and the hot path)."""
    store = TraceStore(max_traces=3)
    for tid in range(1, 6):
        _trace(store, tid, 2)
    kept = [t[0]._trace_id for t in store.traces()]
    assert kept == [3, 4, 5]
    assert store.span_count() == 6
    assert store.stats()["evicted_traces"] == 2
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


def test_late_span_joins_its_trace_without_reordering() -> None:
    """A span arriving late for a kept trace joins it; arrival order stays by first span."""
    store = TraceStore(max_traces=3)
    _trace(store, 1)
    _trace(store, 2)
    _trace(store, 1)
    _trace(store, 3)
    assert [t[0]._trace_id for t in store.traces()] == [1, 2, 3]
    assert len(store.get_trace(1) or []) == 2
    _trace(store, 4)
    assert [t[0]._trace_id for t in store.traces()] == [2, 3, 4]


def test_limit_returns_most_recent() -> None:
    """traces(limit) and export(limit) keep the limit most recent traces."""
    store = TraceStore()
    for tid in range(1, 6):
        _trace(store, tid)
    assert [t[0]._trace_id for t in store.traces(limit=2)] == [4, 5]
    assert store.traces(limit=0) == []
    assert len(store.export(limit=3)["resourceSpans"][0]["scopeSpans"][0]["spans"]) == 3


def test_take_removes_exactly_what_it_returns() -> None:
    """take(limit) removes the returned traces and leaves the rest."""
    store = TraceStore()
    for tid in range(1, 6):
        _trace(store, tid)
    taken = store.take(limit=2)
    assert [t[0]._trace_id for t in taken] == [4, 5]
    assert [t[0]._trace_id for t in store.traces()] == [1, 2, 3]


def test_take_many_returns_the_newest_and_keeps_the_rest_in_order() -> None:
    """take(n) over many traces removes the n newest whole and keeps the others, oldest first (and evicted first)."""
    for i in range(40):
        with span(f"t{i}"):
            with span("c"):
                pass
    store = autotrace.get_trace_store()
    taken = store.take(25)
    assert [t[-1].name for t in taken] == [f"t{i}" for i in range(15, 40)]
    assert all(len(t) == 2 for t in taken)
    assert [t[-1].name for t in store.traces()] == [f"t{i}" for i in range(15)]
    stats = store.stats()
    stats.pop("tail_sampling")  # tail sampling's counts, process-wide (tests/test_tail_sampling.py)
    assert stats == {"traces": 15, "spans": 30, "max_traces": 1000, "evicted_traces": 0, "dropped_spans": 0}
    with span("newest"):  # the traces left keep their order: a new one is the newest, t0 still the oldest
        pass
    assert [s.name for s in store.traces(limit=1)[0]] == ["newest"]
    assert [t[-1].name for t in store.traces()][:2] == ["t0", "t1"]
    assert store.clear() == 16 and store.trace_count() == 0


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


def test_spans_arriving_after_clear_are_kept() -> None:
    """clear() drops what was stored; a span of a cleared trace that ends later is kept (hot path and add())."""
    with span("root") as root:
        with span("before"):
            pass
        assert autotrace.clear_traces() == 1
        with span("after"):
            pass
    traces = autotrace.get_trace_store().traces()
    assert [sorted(names(t)) for t in traces] == [["after", "root"]]
    assert traces[0][0].trace_id == root.trace_id
    store = TraceStore()
    _trace(store, 1)
    assert store.clear() == 1
    _trace(store, 1)
    assert store.trace_count() == 1


def test_get_trace_by_hex_or_int() -> None:
    """get_trace accepts an int or a hex id and returns None for unknown or malformed ids."""
    store = TraceStore()
    _trace(store, 0xABC)
    assert store.get_trace(0xABC) is not None
    assert store.get_trace(f"{0xABC:032x}") is not None
    assert store.get_trace("zz") is None
    assert store.get_trace(5) is None


def test_spans_per_trace_limit() -> None:
    """A runaway trace keeps max_spans_per_trace spans; the rest are dropped and counted (add() and the hot path)."""
    store = TraceStore(max_spans_per_trace=10)
    _trace(store, 1, 25)
    assert store.span_count() == 10
    assert store.stats()["dropped_spans"] == 15
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_spans_per_trace=3))
    with span("root"):
        for _ in range(5):
            with span("child"):
                pass
    stats = autotrace.get_trace_store().stats()
    assert stats["spans"] == 3
    assert stats["dropped_spans"] == 3


def test_bad_constructor_arguments() -> None:
    """Non-positive or non-int limits raise ValueError naming the setting."""
    with pytest.raises(ValueError, match="max_traces"):
        TraceStore(max_traces=0)
    with pytest.raises(ValueError, match="max_traces"):
        TraceStore(max_traces="10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_spans_per_trace"):
        TraceStore(max_spans_per_trace=0)


def test_thread_safety_every_span_once() -> None:
    """4 threads recording concurrently while a reader counts: every span stored exactly once."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=100_000))
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            autotrace.trace_count()

    def writer() -> None:
        for _ in range(2_000):
            with span("root"):
                with span("child"):
                    pass

    r = threading.Thread(target=reader)
    r.start()
    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    traces = autotrace.get_trace_store().traces()
    assert len(traces) == 8_000
    ids = [s.span_id for t in traces for s in t]
    assert len(ids) == 16_000 == len(set(ids))
    for t in traces:
        root = next(s for s in t if s.name == "root")
        child = next(s for s in t if s.name == "child")
        assert child.parent_span_id == root.span_id


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


def test_global_store_is_configured_size() -> None:
    """configure(max_traces=N) bounds the global store at N traces."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=5))
    for _ in range(12):
        with span("x"):
            pass
    assert autotrace.trace_count() == 5


def test_a_late_child_of_an_old_trace_joins_it_and_is_evicted_with_it() -> None:
    """A child started after its parent ended, 70 traces later, lands in the parent's trace, never alone."""
    store = autotrace.configure(sample_rate=1.0, max_traces=100)
    with autotrace.span("root") as root:
        pass
    for i in range(70):
        with autotrace.span(f"old{i}"):
            pass

    @autotrace.traced("late-call")
    def late_call() -> None:
        pass

    with autotrace.span("late", parent=root):
        late_call()
    names = [[s.name for s in t] for t in store.traces() if t[0].trace_id == root.trace_id]
    assert len(names) == 1 and sorted(names[0]) == ["late", "late-call", "root"]
    assert store.trace_count() == 71
    for i in range(40):
        with autotrace.span(f"new{i}"):
            pass
    kept = {t[0].trace_id for t in store.traces()}
    assert root.trace_id not in kept  # evicted whole: no trace of just ["late", "late-call"]
    assert all(t[0].name.startswith(("old", "new")) for t in store.traces())
    assert store.trace_count() == 100


def test_a_late_child_of_an_evicted_trace_is_stored_as_its_own_trace() -> None:
    """When the parent's trace is gone, the late child is kept (in a trace of its own), not dropped."""
    store = autotrace.configure(sample_rate=1.0, max_traces=5)
    with autotrace.span("root") as root:
        pass
    for i in range(10):
        with autotrace.span(f"x{i}"):
            pass
    with autotrace.span("late", parent=root):
        pass
    with autotrace.span("late2", parent=root):
        pass
    mine = [t for t in store.traces() if t[0].trace_id == root.trace_id]
    assert [sorted(s.name for s in t) for t in mine] == [["late", "late2"]]


def test_child_starting_after_its_parent_ended_stays_in_one_trace() -> None:
    """A traced generator consumed after its handler returned joins the handler's trace entry."""
    store = autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=3))

    @traced
    def stream() -> Iterator[int]:
        yield 1

    @traced
    def handler() -> Iterator[int]:
        return stream()

    gen = handler()
    assert list(gen) == [1]
    traces = store.traces()
    assert len(traces) == 1 and sorted(s.name for s in traces[0]) == sorted([handler.__qualname__, stream.__qualname__])
    for _ in range(2):
        with span("other"):
            pass
    assert len(store.traces()) == 3  # the two-span trace is one entry among three
    for _ in range(1):
        with span("newer"):
            pass
    names = [s.name for t in store.traces() for s in t]
    assert stream.__qualname__ not in names and handler.__qualname__ not in names  # evicted whole


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


def test_span_ended_by_hand_inside_a_call_is_stored_once() -> None:
    """current_span().end() inside sync, capturing and async calls files the span once."""

    @traced
    def plain() -> None:
        autotrace.current_span().end()

    @traced(capture_args=True, capture_result=True)
    def capturing(x: int) -> int:
        autotrace.current_span().end()
        return x

    @traced
    async def coro() -> None:
        autotrace.current_span().end()

    plain()
    capturing(1)
    asyncio.run(coro())
    ids = [s.span_id for s in all_spans()]
    assert len(ids) == 3 == len(set(ids))


def test_configure_keeps_traces_and_open_traces_keep_filling() -> None:
    """Reconfiguring keeps stored traces; a trace open across clear() and configure() still ends up whole."""
    with span("done"):
        pass
    with span("open"):
        autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=50))
        with span("child"):
            pass
    traces = autotrace.get_trace_store().traces()
    assert [sorted(names(t)) for t in traces] == [["done"], ["child", "open"]]
    autotrace.clear_traces()
    with span("root"):
        with span("child"):
            pass
        assert autotrace.clear_traces() == 1
        autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=50))
    assert [s.name for s in all_spans()] == ["root"]


def test_configure_while_threads_record_loses_nothing() -> None:
    """configure() racing with 4 recording threads keeps every span."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=100_000))
    stop = threading.Event()

    @traced
    def work() -> None:
        pass

    def record() -> None:
        for _ in range(5_000):
            work()

    def reconfigure() -> None:
        while not stop.is_set():
            autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=100_000))

    threads = [threading.Thread(target=record) for _ in range(4)]
    r = threading.Thread(target=reconfigure)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert autotrace.get_trace_store().span_count() == 20_000


def test_configure_to_a_smaller_store_frees_what_it_evicts() -> None:
    """Reconfiguring to fewer traces keeps the newest and frees the spans of the others."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=10_000))
    for i in range(3_000):
        with span("adopted", attributes={"i": i}):
            pass
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=100))
    gc.collect()
    alive = [o for o in gc.get_objects() if type(o) is Span and o.name == "adopted"]
    assert autotrace.trace_count() == 100 and len(alive) == 100
    kept = sorted(s.attributes["i"] for s in all_spans())
    assert kept == list(range(2_900, 3_000))
    del alive
    autotrace.clear_traces()
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is Span and o.name == "adopted"]


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


def test_evicted_remote_parent_traces_are_freed() -> None:
    """Spans of traces evicted from the store are not kept alive by its index."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=100))
    for i in range(1, 400):
        with span("server", parent=SpanContext(i, i, True, True)):
            pass
    gc.collect()
    alive = sum(1 for o in gc.get_objects() if type(o) is Span and o.name == "server" and o._trace_id < 400)
    assert autotrace.trace_count() == 100
    assert alive <= 100 + max(16, 100 // 4) + 5


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
