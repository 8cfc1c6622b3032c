"""Exactly-once attacks from an outside review: spans must reach the store once, or be counted dropped."""

from __future__ import annotations

import gc
import threading
import weakref

import autotrace
from autotrace import span
from autotrace.testing import capture_spans


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
