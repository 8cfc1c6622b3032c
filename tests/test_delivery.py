"""Nothing lost: long-open traces across clears, an over-long trace's spine, fork with a lock held, exactly once."""

from __future__ import annotations

import contextvars
import gc
import os
import threading
import weakref

import pytest

import autotrace
from autotrace import Span, span, traced
from autotrace.export import BatchSpanProcessor
from autotrace.testing import capture_spans
from autotrace.tracer import _S
from tests.conftest import all_spans, exit_code_of_forked


def _other_trace(name: str) -> None:
    """Record a one-span trace of its own, outside whatever span is current here."""

    def run() -> None:
        with span(name):
            pass

    contextvars.Context().run(run)


def test_trace_open_across_more_than_max_traces_clears_is_delivered_whole() -> None:
    """A trace open while 3 x max_traces other traces are taken still delivers every span, its root included."""
    store = autotrace.configure(sample_rate=1.0, max_traces=5)
    taken: list[list[Span]] = []
    with span("root") as root:
        with span("before"):
            pass
        taken += store.take()
        for i in range(15):  # each take parks an emptied buffer: more than max_traces of them
            _other_trace(f"other-{i}")
            taken += store.take()
        with span("after"):
            pass
    taken += store.take()
    names = sorted(s.name for trace in taken for s in trace if s.trace_id == root.trace_id)
    assert names == ["after", "before", "root"]
    others = sorted(s.name for trace in taken for s in trace if s.trace_id != root.trace_id)
    assert len(others) == 15 == len(set(others))
    assert store.stats()["dropped_spans"] == 0


def test_clear_keeps_a_taken_trace_only_while_one_of_its_spans_is_open() -> None:
    """Emptied buffers are let go once no open span can add to them: memory stays bounded by open traces."""
    store = autotrace.configure(sample_rate=1.0, max_traces=5)
    gc.collect()
    store.trace_count()
    before = len(store._limbo)  # buffers of earlier tests' traces still referenced somewhere
    for i in range(50):
        _other_trace(f"t{i}")
        store.clear()
    with span("open") as root:
        with span("child"):
            pass
        store.clear()
        store.trace_count()
        assert len(store._limbo) == before + 1  # only the open trace's buffer waits
        assert store._limbo[-1][0] == int(root.trace_id, 16)
    assert store.trace_count() == 1  # its root, delivered as a new entry
    store.clear()
    store.trace_count()
    assert len(store._limbo) == before


def _check_spine(spans: list[Span], root: Span) -> None:
    ids = {s.span_id for s in spans}
    assert root.span_id in ids, "the root must be kept"
    for s in spans:
        if s is not root:
            assert s.parent_span_id in ids, f"{s.name} lost its parent"


def test_over_long_trace_keeps_its_root_and_drops_leaves() -> None:
    """1 root + 99,999 children at max_spans_per_trace=10,000: the root and 9,999 children stored, 90,000 counted."""
    store = autotrace.configure(sample_rate=1.0, max_spans_per_trace=10_000)

    @traced
    def child() -> None:
        pass

    @traced
    def root() -> Span:
        for _ in range(99_999):
            child()
        return autotrace.current_span()  # type: ignore[return-value]

    r = root()
    (trace,) = store.traces()
    assert len(trace) == 10_000
    _check_spine(trace, r)
    assert store.stats()["dropped_spans"] == 90_000


def test_over_long_deep_trace_stays_one_connected_tree() -> None:
    """A trace of nested levels past the limit keeps every ancestor of what it stores (spine), counting the rest."""
    store = autotrace.configure(sample_rate=1.0, max_spans_per_trace=100)
    total = 1
    with span("root") as root:
        for _ in range(4):
            with span("mid"):
                total += 1
                for _ in range(3):
                    with span("inner"):
                        total += 1
                        for _ in range(30):
                            with span("leaf"):
                                total += 1
    (trace,) = store.traces()
    assert len(trace) == 100
    _check_spine(trace, root)  # type: ignore[arg-type]
    assert store.stats()["dropped_spans"] == total - 100


def test_over_long_trace_with_an_exporter_keeps_the_spine_too() -> None:
    """With processors (every span through _finish) a full trace still keeps its root; the exporter gets all."""
    got: list[Span] = []

    class Keep:
        def export(self, spans: list[Span]) -> bool:
            got.extend(spans)
            return True

    store = autotrace.configure(sample_rate=1.0, max_spans_per_trace=10, exporters=[Keep()])
    with span("root") as root:
        for _ in range(50):
            with span("leaf"):
                pass
    autotrace.flush()
    (trace,) = store.traces()
    _check_spine(trace, root)  # type: ignore[arg-type]
    assert len(trace) == 10 and len(got) == 51


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork() with threads running
def test_fork_while_other_threads_hold_the_locks_leaves_the_child_working() -> None:
    """A child forked while threads hold the store, configure() and exporter locks records, reads and flushes."""
    sent: list[int] = []

    class Count:
        def export(self, spans: list[Span]) -> bool:
            sent.append(len(spans))
            return True

    proc = BatchSpanProcessor(Count(), schedule_delay=60)
    store = autotrace.configure(sample_rate=1.0, exporters=[proc])
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store._lock, _S.lock, proc._lock:  # a /traces read, configure() and a flush, all at once
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    try:
        pid = os.fork()
        if pid == 0:  # the child: every step must finish; a hang is killed by the parent
            status = 1
            try:
                with span("in-child"):
                    pass
                ok = [s.name for t in store.traces() for s in t] == ["in-child"]
                autotrace.configure(sample_rate=1.0, exporters=[proc])  # _S.lock is free
                with span("after-configure"):
                    pass
                ok = ok and autotrace.flush(10) and sum(sent) == 2
                ok = ok and not store._busy  # else spans past 100,000 would all be dropped
                status = 0 if ok else 3
            finally:
                os._exit(status)
    finally:
        release.set()
        holder.join(10)
    assert exit_code_of_forked(pid, 30) == 0
    assert [s.name for s in all_spans()] == []  # the parent's store is its own


def test_open_trace_survives_two_configures_while_the_first_store_is_busy() -> None:
    """Spans ending in a trace taken from a store replaced twice while its reader was busy are still stored once."""
    s1 = autotrace.configure(sample_rate=1.0)
    root = span("root")
    root.__enter__()
    with span("a"):
        pass
    first = [s.name for t in s1.take() for s in t]  # the trace stays open: its buffer waits in s1's limbo
    held, release = threading.Event(), threading.Event()

    def busy_reader() -> None:
        with s1._lock:  # a reader of s1 still at work while configure() runs twice
            held.set()
            release.wait(10)

    reader = threading.Thread(target=busy_reader)
    reader.start()
    assert held.wait(10)
    autotrace.configure(sample_rate=1.0)
    s3 = autotrace.configure(sample_rate=1.0)
    release.set()
    reader.join()
    with span("b"):
        pass
    root.__exit__(None, None, None)
    later = sorted(s.name for t in s3.take() for s in t)
    assert first == ["a"]
    assert later == ["b", "root"]
    assert s3.stats()["dropped_spans"] == 0


def test_replaced_stores_do_not_pile_up() -> None:
    """Stores replaced by configure() and drained leave the chain: a thousand configure() calls keep it short."""
    store = autotrace.configure(sample_rate=1.0)
    for _ in range(1000):
        with span("x"):
            pass
        store = autotrace.configure(sample_rate=1.0)
    assert store.span_count() == 1000
    depth, link = 0, store._previous
    while link is not None:
        depth, link = depth + 1, link._previous
    assert depth <= 2


class Tensor:
    """Stands for a large buffer a failing model call holds in a local variable."""


def test_failing_llm_call_frees_its_locals_without_the_cycle_collector() -> None:
    """A failed ``@llm`` call leaves no reference cycle: its frame's locals go as soon as the exception does."""
    autotrace.configure(sample_rate=1.0)
    refs: list[weakref.ref[Tensor]] = []

    @autotrace.llm("chat", model="m")
    def chat(prompt: str) -> str:
        buffer = Tensor()
        refs.append(weakref.ref(buffer))
        raise MemoryError("out of device memory")

    enabled = gc.isenabled()
    gc.disable()
    try:
        with capture_spans() as spans:
            for _ in range(2):
                try:
                    chat("hi")
                except MemoryError:
                    pass
                with autotrace.llm("chat", model="m"):
                    pass
        assert [r() for r in refs] == [None, None]
    finally:
        if enabled:
            gc.enable()
    assert [s.attributes.get("error.type") for s in spans if s.attributes.get("error.type")] == ["MemoryError"] * 2
