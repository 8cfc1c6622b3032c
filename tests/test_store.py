"""TraceStore: whole traces, FIFO eviction by first arrival, atomic take, thread safety."""

from __future__ import annotations

import threading

import pytest

import autotrace
from autotrace import Span, TraceStore, span


def _trace(store: TraceStore, trace_id: int, n: int = 1) -> list[Span]:
    spans = [Span(f"s{i}", trace_id=trace_id) for i in range(n)]
    for s in spans:
        s.end()
        store.add(s)
    return spans


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
    """Past max_traces the trace that arrived first is evicted with all its spans."""
    store = TraceStore(max_traces=3)
    for tid in range(1, 6):
        _trace(store, tid, 2)
    kept = [t[0]._trace_id for t in store.traces()]
    assert kept == [3, 4, 5]
    assert store.span_count() == 6
    assert store.stats()["evicted_traces"] == 2


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


def test_spans_after_clear_are_kept() -> None:
    """A span of a cleared trace that ends later is stored again, not lost."""
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
    """A runaway trace keeps max_spans_per_trace spans; the rest are dropped and counted."""
    store = TraceStore(max_spans_per_trace=10)
    _trace(store, 1, 25)
    assert store.span_count() == 10
    assert store.stats()["dropped_spans"] == 15


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
