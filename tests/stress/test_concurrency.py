"""Stress: many threads and asyncio tasks record at once; every sampled span is stored exactly once."""

from __future__ import annotations

import asyncio
import threading
from typing import NamedTuple

import pytest

import autotrace
from autotrace import span, traced

pytestmark = pytest.mark.slow  # stress: deselect with -m 'not slow'; the normal test command runs it

THREADS = 8
SPANS_PER_THREAD = 20_000
SPANS_PER_TRACE = 10  # root + 4 x (span() + @traced leaf) + 1 event-carrying span
TASKS = 500
SPANS_PER_TASK = 4


class Expected(NamedTuple):
    """What one recorded span must look like in the store."""

    trace_id: int
    span_id: int
    parent_id: int | None
    name: str


def _ids() -> tuple[int, int] | None:
    """The current span's (trace id, span id) when it is sampled, else None."""
    cur = autotrace.current_span()
    if not isinstance(cur, autotrace.Span):
        return None
    return cur._trace_id, cur._span_id


@traced("leaf")
def leaf(out: list[Expected], parent: int) -> None:
    ids = _ids()
    if ids is not None:
        out.append(Expected(ids[0], ids[1], parent, "leaf"))


@traced("root")
def root(out: list[Expected], roots: list[int]) -> None:
    ids = _ids()
    if ids is None:
        # Unsampled trace: children must be unsampled too, and nothing is stored.
        with span("mid") as s:
            assert not s.is_recording
        return
    trace_id, root_id = ids
    out.append(Expected(trace_id, root_id, None, "root"))
    roots.append(trace_id)
    for i in range(4):
        with span("mid", attributes={"i": i}) as s:
            out.append(Expected(trace_id, s._span_id, root_id, "mid"))
            leaf(out, s._span_id)
    with span("last") as s:
        s.add_event("done")
        out.append(Expected(trace_id, s._span_id, root_id, "last"))


async def task_trace(out: list[Expected], roots: list[int]) -> None:
    """One asyncio task: a root span with children that await in between."""
    async with span("task") as top:
        if not isinstance(top, autotrace.Span):
            return
        out.append(Expected(top._trace_id, top._span_id, None, "task"))
        roots.append(top._trace_id)
        for i in range(SPANS_PER_TASK - 1):
            await asyncio.sleep(0)
            async with span("step", attributes={"i": i}) as s:
                await asyncio.sleep(0)
                out.append(Expected(top._trace_id, s._span_id, top._span_id, "step"))


@pytest.mark.parametrize("rate", [1.0, 0.5])
def test_threads_and_tasks_store_every_sampled_span_exactly_once(rate: float) -> None:
    """8 threads x 20,000 spans and 500 asyncio tasks at once: each sampled span stored once, parents right."""
    traces_per_thread = SPANS_PER_THREAD // SPANS_PER_TRACE
    total_traces = THREADS * traces_per_thread + TASKS
    autotrace.configure(sample_rate=rate, max_traces=total_traces + 1000)
    start = threading.Barrier(THREADS + 1)
    results: list[tuple[list[Expected], list[int]]] = []
    failures: list[BaseException] = []

    def worker() -> None:
        out: list[Expected] = []
        roots: list[int] = []
        results.append((out, roots))
        try:
            start.wait(timeout=60)
            for _ in range(traces_per_thread):
                root(out, roots)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    def event_loop() -> None:
        out: list[Expected] = []
        roots: list[int] = []
        results.append((out, roots))

        async def main() -> None:
            start.wait(timeout=60)
            await asyncio.gather(*(task_trace(out, roots) for _ in range(TASKS)))

        try:
            asyncio.run(main())
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    threads.append(threading.Thread(target=event_loop))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not failures, failures

    expected = {e.span_id: e for out, _ in results for e in out}
    sampled_traces = {tid for _, roots in results for tid in roots}
    assert len(expected) == sum(len(out) for out, _ in results), "span ids collided"
    if rate == 1.0:
        assert len(sampled_traces) == total_traces
        assert len(expected) == THREADS * SPANS_PER_THREAD + TASKS * SPANS_PER_TASK
    else:  # both paths run: some traces are sampled and some are not
        assert 0 < len(sampled_traces) < total_traces

    store = autotrace.get_trace_store()
    traces = store.traces()
    stored = [s for trace in traces for s in trace]
    stored_ids = [s._span_id for s in stored]
    assert len(stored_ids) == len(set(stored_ids)), "a span was stored twice"
    assert set(stored_ids) == set(expected), "a sampled span was lost (or an unsampled one stored)"
    for s in stored:
        want = expected[s._span_id]
        assert (s._trace_id, s._parent_id, s.name) == (want.trace_id, want.parent_id, want.name)
    for trace in traces:
        assert len({s._trace_id for s in trace}) == 1, "a trace mixes spans of two traces"
    assert store.trace_count() == len(sampled_traces)
    assert {trace[0]._trace_id for trace in traces} == sampled_traces
    stats = store.stats()
    assert stats["evicted_traces"] == 0 and stats["dropped_spans"] == 0
    assert autotrace.tracer.errors() == {}
