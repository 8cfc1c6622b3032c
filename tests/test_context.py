"""The current span across threads, executors, nested pools and asyncio.to_thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import sys
import threading

import pytest

import autotrace
from autotrace.context import (
    ContextExecutor,
    ContextThread,
    current_span_context,
    run_in_context,
    wrap,
    wrap_executor,
)
from autotrace.testing import CapturedSpans, capture_spans


@autotrace.traced("task")
def task(n: int = 0) -> tuple[str, str | None]:
    """A traced unit of work; returns its own trace id and parent span id."""
    s = autotrace.current_span()
    return s.trace_id, s.parent_span_id


def _check_children(spans: CapturedSpans, parent: autotrace.Span, count: int) -> None:
    tasks = spans.by_name("task")
    assert len(tasks) == count
    for t in tasks:
        assert (t.trace_id, t.parent_span_id) == (parent.trace_id, parent.span_id)


@pytest.mark.skipif(
    bool(getattr(sys.flags, "thread_inherit_context", 0)), reason="threads inherit the context on this interpreter"
)
def test_plain_thread_loses_the_parent() -> None:
    """A plain thread starts with an empty context: its spans begin a new trace (why the helpers exist)."""
    out: list[tuple[str, str | None]] = []
    with autotrace.span("parent") as parent:
        t = threading.Thread(target=lambda: out.append(task()))
        t.start()
        t.join(30)
    assert out[0][0] != parent.trace_id and out[0][1] is None


def test_wrap_carries_the_context_into_a_thread() -> None:
    """wrap(fn) runs fn in the context captured when it was wrapped, in any thread."""
    out: list[tuple[str, str | None]] = []
    with capture_spans() as spans, autotrace.span("parent") as parent:
        t = threading.Thread(target=wrap(lambda: out.append(task())))
        t.start()
        t.join(30)
    _check_children(spans, parent, 1)
    assert out == [(parent.trace_id, parent.span_id)]


def test_wrap_keeps_function_identity_and_allows_concurrent_calls() -> None:
    """A wrapped function keeps name and docstring and may run in many threads at once."""
    with capture_spans() as spans, autotrace.span("parent") as parent:
        wrapped = wrap(task)
        assert wrapped.__name__ == "task" and wrapped.__doc__ == task.__doc__
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(wrapped, range(16)))
    assert set(results) == {(parent.trace_id, parent.span_id)}
    _check_children(spans, parent, 16)


def test_context_thread() -> None:
    """ContextThread runs its target in the context of the code that created it."""
    out: list[tuple[str, str | None]] = []
    with autotrace.span("parent") as parent:
        t = ContextThread(target=lambda: out.append(task()))
    t.start()  # started after the span closed: still the creator's context
    t.join(30)
    assert out == [(parent.trace_id, parent.span_id)]


def test_context_executor_submit_and_map() -> None:
    """Every ContextExecutor task, via submit or map, is a child of the submitter's span."""
    with ContextExecutor(max_workers=3) as pool, capture_spans() as spans:
        with autotrace.span("parent") as parent:
            futures = [pool.submit(task, i) for i in range(5)]
            mapped = list(pool.map(task, range(5)))
            results = [f.result(30) for f in futures] + mapped
    assert set(results) == {(parent.trace_id, parent.span_id)}
    _check_children(spans, parent, 10)


def test_context_is_captured_at_submit_not_at_pool_creation() -> None:
    """Two requests sharing one pool each keep their own parent; workers are left clean."""
    pool = ContextExecutor(max_workers=2)
    try:
        with autotrace.span("a") as a:
            fa = pool.submit(task)
        with autotrace.span("b") as b:
            fb = pool.submit(task)
        assert fa.result(30) == (a.trace_id, a.span_id)
        assert fb.result(30) == (b.trace_id, b.span_id)
        assert pool.submit(current_span_context).result(30) is None  # nothing leaked into the workers
    finally:
        pool.shutdown()


def test_nested_pools_keep_the_parent() -> None:
    """A task that submits to a second pool passes its own span on as the parent."""
    inner_pool = ContextExecutor(max_workers=2)

    @autotrace.traced("outer_task")
    def outer_task() -> list[tuple[str, str | None]]:
        return [f.result(30) for f in [inner_pool.submit(task) for _ in range(3)]]

    with ContextExecutor(max_workers=2) as outer_pool, capture_spans() as spans:
        with autotrace.span("parent") as parent:
            results = [f.result(60) for f in [outer_pool.submit(outer_task) for _ in range(2)]]
    inner_pool.shutdown()
    outers = spans.by_name("outer_task")
    assert len(outers) == 2
    assert all(o.parent_span_id == parent.span_id and o.trace_id == parent.trace_id for o in outers)
    inner = spans.by_name("task")
    assert len(inner) == 6
    assert {t.parent_span_id for t in inner} == {o.span_id for o in outers}
    assert all(trace == parent.trace_id for batch in results for trace, _ in batch)


def test_wrap_executor() -> None:
    """wrap_executor(ThreadPoolExecutor) runs tasks in the submitter's context; with/map/shutdown work."""
    base = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    pool = wrap_executor(base)
    assert wrap_executor(pool) is pool
    with pool, autotrace.span("parent") as parent:
        assert pool.submit(task).result(30) == (parent.trace_id, parent.span_id)
        assert list(pool.map(task, range(3))) == [(parent.trace_id, parent.span_id)] * 3
        assert pool._max_workers == 2  # type: ignore[attr-defined]  # other attributes pass through
    with pytest.raises(RuntimeError):
        base.submit(task)  # the with block shut the real executor down


def test_wrap_executor_rejects_what_it_cannot_wrap() -> None:
    """Process pools and non-executors are refused with an error that says why."""
    with concurrent.futures.ProcessPoolExecutor(1) as procs, pytest.raises(TypeError, match="process pool"):
        wrap_executor(procs)
    with pytest.raises(TypeError, match="Executor"):
        wrap_executor("pool")  # type: ignore[arg-type]


def test_asyncio_to_thread_keeps_the_parent() -> None:
    """asyncio.to_thread copies the context, so a traced call there is a child of the awaiting span."""

    async def main() -> tuple[autotrace.Span, tuple[str, str | None]]:
        async with autotrace.span("parent") as parent:
            result = await asyncio.to_thread(task)
        return parent, result

    parent, result = asyncio.run(main())
    assert result == (parent.trace_id, parent.span_id)


def test_run_in_executor_needs_wrap() -> None:
    """loop.run_in_executor does not copy the context; wrap(fn) makes it keep the parent."""

    async def main() -> tuple[autotrace.Span, tuple[str, str | None], tuple[str, str | None]]:
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            async with autotrace.span("parent") as parent:
                plain = await loop.run_in_executor(pool, task)
                wrapped = await loop.run_in_executor(pool, wrap(task))
        return parent, plain, wrapped

    parent, plain, wrapped = asyncio.run(main())
    assert plain[0] != parent.trace_id
    assert wrapped == (parent.trace_id, parent.span_id)


def test_run_in_context() -> None:
    """run_in_context runs a function under a given span, SpanContext or captured Context."""
    with autotrace.span("parent") as parent:
        captured = contextvars.copy_context()
    assert run_in_context(parent, task) == (parent.trace_id, parent.span_id)
    assert run_in_context(parent.get_span_context(), task) == (parent.trace_id, parent.span_id)
    assert run_in_context(captured, task) == (parent.trace_id, parent.span_id)
    assert run_in_context(None, task)[1] is None
    assert current_span_context() is None


def test_unsampled_context_crosses_threads() -> None:
    """An unsampled trace keeps its ids across a pool, so propagation still works there."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))

    @autotrace.traced
    def root() -> tuple[str, str]:
        with ContextExecutor(1) as pool:
            inner = pool.submit(lambda: autotrace.current_span().trace_id).result(30)
        return autotrace.current_span().trace_id, inner

    outer, inner = root()
    assert outer == inner and outer != "0" * 32
