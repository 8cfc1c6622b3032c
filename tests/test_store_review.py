"""Regressions found by review: spans stored once, whole traces, nothing lost across configure()."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator

import autotrace
from autotrace import Span, SpanContext, span, traced
from tests.conftest import all_spans


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


def test_clear_then_configure_keeps_the_rest_of_an_open_trace() -> None:
    """A trace open during clear() and configure() still stores its root when it ends."""
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


def test_take_many_keeps_the_newest_trace_newest() -> None:
    """After take() of many traces, the remaining order (and so eviction order) is unchanged."""
    store = autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_traces=100))
    for i in range(60):
        with span(f"t{i}"):
            pass
    taken = store.take(limit=30)
    assert len(taken) == 30
    with span("newest"):
        pass
    assert [s.name for s in store.traces(limit=1)[0]] == ["newest"]
    assert [t[0].name for t in store.traces()][:2] == ["t0", "t1"]


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
