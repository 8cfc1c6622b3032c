"""Fault isolation: broken processors, exporters, samplers, clocks, locks and values never break the caller."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

import autotrace
import autotrace.decorators
import autotrace.spans
import autotrace.tracer
from autotrace import SpanContext, span, traced
from autotrace.store import PENDING_LIMIT
from tests.otlp_check import span_count, validate

CALLS = 200


def _autotrace_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "autotrace" and r.levelno >= logging.WARNING]


class Unprintable(Exception):
    """An exception whose __str__ and __repr__ raise."""

    def __str__(self) -> str:
        raise RuntimeError("str")

    def __repr__(self) -> str:
        raise RuntimeError("repr")


class RaisingProcessor:
    """A span processor whose every method raises."""

    def __init__(self) -> None:
        self.calls = 0

    def on_end(self, span: autotrace.Span) -> None:
        self.calls += 1
        raise Unprintable()

    def force_flush(self, timeout: float | None = None) -> bool:
        raise RuntimeError("flush broken")

    def shutdown(self, timeout: float | None = None) -> bool:
        raise RuntimeError("shutdown broken")


class RaisingExporter:
    """An exporter whose export and shutdown raise."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def export(self, spans: Sequence[autotrace.Span], timeout: float | None = None) -> bool:
        with self.lock:
            self.calls += 1
        raise ConnectionError("collector down")

    def shutdown(self, timeout: float | None = None) -> None:
        raise RuntimeError("exporter shutdown broken")


@traced("work")
def work(x: int) -> int:
    """A traced function with a child span."""
    with span("inner"):
        return x * 2


async def awork(x: int) -> int:
    """An async traced body."""
    await asyncio.sleep(0)
    return x + 1


def test_raising_processor_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """A processor that raises on every span: every call still returns, the failure is counted and logged once."""
    caplog.set_level(logging.WARNING, logger="autotrace")
    proc = RaisingProcessor()
    autotrace.tracer.add_processor(proc)
    try:
        assert [work(i) for i in range(CALLS)] == [i * 2 for i in range(CALLS)]
    finally:
        autotrace.tracer.remove_processor(proc)
    assert proc.calls == 2 * CALLS
    errors = autotrace.tracer.errors()
    assert errors == {"span processor RaisingProcessor.on_end": 2 * CALLS}
    logged = _autotrace_warnings(caplog)
    assert len(logged) == 1
    assert "RaisingProcessor.on_end" in logged[0].getMessage()
    # The store still got every span despite the broken processor.
    assert autotrace.get_trace_store().span_count() == 2 * CALLS


def test_raising_processor_flush_and_shutdown_are_contained(caplog: pytest.LogCaptureFixture) -> None:
    """flush() and shutdown() report False for a processor that raises, instead of raising."""
    caplog.set_level(logging.WARNING, logger="autotrace")
    proc = RaisingProcessor()
    autotrace.tracer.add_processor(proc)
    assert autotrace.flush(1.0) is False
    assert autotrace.flush(1.0) is False
    assert autotrace.shutdown(1.0) is False
    errors = autotrace.tracer.errors()
    assert errors["RaisingProcessor.force_flush"] == 2
    assert errors["RaisingProcessor.shutdown"] == 1
    assert len(_autotrace_warnings(caplog)) == 2


def test_raising_exporter_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """An exporter given to configure() that always raises: calls return, failures are counted and logged once."""
    caplog.set_level(logging.WARNING, logger="autotrace")
    exporter = RaisingExporter()
    autotrace.configure(sample_rate=1.0, exporters=[exporter])
    assert [work(i) for i in range(CALLS)] == [i * 2 for i in range(CALLS)]
    assert asyncio.run(traced(awork)(1)) == 2
    autotrace.flush(10.0)
    assert exporter.calls >= 1
    errors = autotrace.tracer.errors()
    assert sum(errors.values()) >= 1, errors
    logged = _autotrace_warnings(caplog)
    # One log line per place that failed, never one per call.
    assert 1 <= len(logged) <= len(errors) < CALLS
    assert autotrace.get_trace_store().span_count() == 2 * CALLS + 1
    autotrace.shutdown(5.0)  # the exporter's shutdown raises too: contained


class RaisingSampler:
    """A sampler that raises for every decision."""

    def should_sample(self, trace_id: int, parent: SpanContext | None, name: str) -> bool:
        raise Unprintable()


class RatioSamplerRaisingForRemote:
    """Samples every root by bound, but raises when asked about a remote parent."""

    root_bound = 1 << 64

    def should_sample(self, trace_id: int, parent: SpanContext | None, name: str) -> bool:
        raise ValueError("remote parents are broken")


def test_raising_sampler_drops_the_trace_not_the_call(caplog: pytest.LogCaptureFixture) -> None:
    """A sampler that raises: calls run unsampled and return, the failure is counted and logged once."""
    caplog.set_level(logging.WARNING, logger="autotrace")
    autotrace.configure(sampler=RaisingSampler())  # type: ignore[arg-type]
    assert [work(i) for i in range(CALLS)] == [i * 2 for i in range(CALLS)]
    with span("manual") as s:
        assert not s.is_recording
        s.set_attribute("ignored", 1)
    assert autotrace.trace_count() == 0
    assert autotrace.tracer.errors() == {"sampler RaisingSampler": CALLS + 1}
    assert len(_autotrace_warnings(caplog)) == 1


def test_raising_sampler_for_remote_parent(caplog: pytest.LogCaptureFixture) -> None:
    """A sampler that raises on a remote parent: the span is unsampled, the code runs, logged once."""
    caplog.set_level(logging.WARNING, logger="autotrace")
    autotrace.configure(sampler=RatioSamplerRaisingForRemote())  # type: ignore[arg-type]
    remote = SpanContext(0x1234, 0x5678, True, True, "")
    for _ in range(CALLS):
        with span("child", parent=remote) as s:
            assert not s.is_recording
            assert work(3) == 6
    assert autotrace.tracer.errors() == {"sampler RatioSamplerRaisingForRemote": CALLS}
    assert len(_autotrace_warnings(caplog)) == 1


@pytest.fixture
def backwards_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A clock that goes 1 ms backwards every time it is read."""
    ticks = itertools.count()
    start = 1_700_000_000_000_000_000

    def time_ns() -> int:
        return start - next(ticks) * 1_000_000

    for module in (autotrace.tracer, autotrace.decorators, autotrace.spans):
        monkeypatch.setattr(module, "_time_ns", time_ns)
    yield


@pytest.mark.usefixtures("backwards_clock")
def test_clock_going_backwards() -> None:
    """A clock that runs backwards: calls return, durations are never negative, export is valid OTLP."""

    @traced(capture_args=True, capture_result=True)
    def captured(x: int) -> int:
        return x

    @traced
    def stream() -> Iterator[int]:
        yield 1
        yield 2

    assert work(2) == 4
    assert captured(5) == 5
    assert list(stream()) == [1, 2]
    assert asyncio.run(traced(awork)(1)) == 2
    with span("manual") as s:
        s.add_event("e")
    built = autotrace.Span("built")
    assert autotrace.record_span(built)
    spans = [x for trace in autotrace.get_trace_store().traces() for x in trace]
    assert len(spans) == 7
    assert all(x.duration_ns is not None and x.duration_ns >= 0 for x in spans)
    doc = autotrace.export_traces()
    validate(doc)  # also checks endTimeUnixNano >= startTimeUnixNano
    assert span_count(doc) == 7
    assert autotrace.tracer.errors() == {}


def test_store_lock_held_recording_does_not_block_and_reads_wait() -> None:
    """While another thread holds the store lock, recording never waits; readers wait and then see every span."""
    store = autotrace.configure(sample_rate=1.0, max_traces=100_000)
    spans_to_record = 5_120
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with store._lock:
            held.set()
            release.wait(timeout=120)

    results: list[int] = []

    def recorder() -> None:
        results.extend(work(i) for i in range(spans_to_record // 2))

    read: list[int] = []

    def reader() -> None:
        read.append(store.span_count())

    hold = threading.Thread(target=holder)
    hold.start()
    assert held.wait(timeout=30)
    try:
        rec = threading.Thread(target=recorder)
        rec.start()
        rec.join(timeout=60)  # generous: a blocked recorder would hang forever, not for 60 s
        assert not rec.is_alive(), "recording blocked on the store lock"
        assert results == [i * 2 for i in range(spans_to_record // 2)]
        rd = threading.Thread(target=reader)
        rd.start()
        rd.join(timeout=0.5)
        assert rd.is_alive() and not read, "a reader must wait for the lock"
    finally:
        release.set()
        hold.join(timeout=30)
    rd.join(timeout=30)
    assert read == [spans_to_record]
    assert store.stats()["dropped_spans"] == 0


def test_store_lock_held_queue_is_capped_and_drops_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    """With the store lock stuck, PENDING_LIMIT spans are taken in; the excess is counted and logged once."""
    store = autotrace.configure(sample_rate=1.0, max_traces=200_000)
    extra = 5_000

    @traced
    def tiny() -> int:
        return 1

    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with store._lock:
            held.set()
            release.wait(timeout=120)

    hold = threading.Thread(target=holder)
    hold.start()
    assert held.wait(timeout=30)
    try:
        with caplog.at_level(logging.WARNING, logger="autotrace"):
            total = sum(tiny() for _ in range(PENDING_LIMIT + extra))
        assert total == PENDING_LIMIT + extra
    finally:
        release.set()
        hold.join(timeout=30)
    stats = store.stats()
    assert (stats["spans"], stats["dropped_spans"]) == (PENDING_LIMIT, extra)
    warnings = [r.getMessage() for r in caplog.records if r.name == "autotrace"]
    assert len(warnings) == 1 and "lock was held" in warnings[0]


class RaisingRepr:
    """A value whose __str__ and __repr__ raise."""

    def __str__(self) -> str:
        raise RuntimeError("str")

    def __repr__(self) -> str:
        raise RuntimeError("repr")


def test_values_whose_str_and_repr_raise() -> None:
    """Attribute, event, name and captured values whose __str__/__repr__ raise become placeholders; calls return."""
    bad = RaisingRepr()

    @traced(capture_args=True, capture_result=True, attributes={"static": bad})
    def echo(value: Any) -> Any:
        autotrace.current_span().set_attribute("dynamic", bad)
        autotrace.current_span().add_event("e", {"bad": bad})
        return value

    assert echo(bad) is bad
    with span(bad, attributes={"bad": bad}) as s:  # type: ignore[arg-type]
        s.set_status("error", bad)  # type: ignore[arg-type]
        s.update_name(bad)  # type: ignore[arg-type]
    (first,) = [t for t in autotrace.get_trace_store().traces() if t[0].name != s.name]
    attrs = first[0].attributes
    assert attrs["static"] == attrs["dynamic"] == "<unprintable RaisingRepr>"
    assert "unprintable" in attrs["code.function.args.value"]
    assert "unprintable" in attrs["code.function.result"]
    assert s.name == "<unprintable RaisingRepr>"
    validate(autotrace.export_traces())


def test_user_exception_with_broken_str_is_recorded_and_reraised() -> None:
    """An exception whose __str__ and __repr__ raise propagates as the same object and is still recorded."""
    exc = Unprintable()

    @traced
    def fails() -> None:
        raise exc

    with pytest.raises(Unprintable) as info:
        fails()
    assert info.value is exc
    (trace,) = autotrace.get_trace_store().traces()
    (event,) = trace[0].events
    assert event.name == "exception"
    assert event.attributes["exception.type"].endswith("Unprintable")
    assert autotrace.tracer.errors() == {}
    validate(autotrace.export_traces())


def _real_export() -> Any:
    """The real autotrace.export (batching on a thread)."""
    import autotrace.export as export

    return export


class HangingExporter:
    """An exporter that blocks until released: a collector that stopped answering."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def export(self, spans: Sequence[autotrace.Span], timeout: float | None = None) -> bool:
        self.entered.set()
        self.release.wait(timeout=60)
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        self.release.set()


def test_hanging_exporter_never_blocks_the_caller() -> None:
    """An exporter stuck in export(): traced calls keep returning, the full queue drops and counts, flush times out."""
    export = _real_export()
    exporter = HangingExporter()
    proc = export.BatchSpanProcessor(exporter, max_queue_size=100, max_export_batch_size=10, schedule_delay=0.01)
    autotrace.configure(sample_rate=1.0, max_traces=10_000, exporters=[proc])
    try:
        assert work(0) == 0
        assert exporter.entered.wait(timeout=30)
        done: list[int] = []
        caller = threading.Thread(target=lambda: done.extend(work(i) for i in range(5_000)))
        caller.start()
        caller.join(timeout=60)  # generous: a blocked caller would never finish
        assert not caller.is_alive(), "a traced call waited for the exporter"
        assert done == [i * 2 for i in range(5_000)]
        assert proc.dropped > 0
        assert autotrace.flush(0.2) is False
        assert autotrace.get_trace_store().span_count() == 2 * 5_001
    finally:
        exporter.release.set()
        autotrace.shutdown(10.0)


def test_unreachable_collector_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """An OTLP/HTTP exporter pointed at a closed loopback port: calls return, failures counted, one log line."""
    export = _real_export()
    caplog.set_level(logging.WARNING, logger="autotrace")
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exporter = export.OTLPHttpExporter(f"http://127.0.0.1:{port}/v1/traces", timeout=2.0, max_retries=0)
    autotrace.configure(sample_rate=1.0, exporters=[exporter])
    for _ in range(3):
        assert [work(i) for i in range(50)] == [i * 2 for i in range(50)]
        autotrace.flush(10.0)
    autotrace.shutdown(10.0)
    assert sum(autotrace.tracer.errors().values()) >= 1
    logged = _autotrace_warnings(caplog)
    assert 1 <= len(logged) <= len(autotrace.tracer.errors())
    assert autotrace.get_trace_store().span_count() == 300


def test_failures_from_many_threads_are_counted_exactly_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """A processor failing in 8 threads at once: every failure is counted, and the log has exactly one line."""
    caplog.set_level(logging.WARNING, logger="autotrace")
    proc = RaisingProcessor()
    autotrace.tracer.add_processor(proc)
    start = threading.Barrier(8)
    per_thread = 5_000

    @traced
    def tiny() -> int:
        return 1

    def worker() -> None:
        start.wait(timeout=30)
        for _ in range(per_thread):
            tiny()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        autotrace.tracer.remove_processor(proc)
    assert autotrace.tracer.errors() == {"span processor RaisingProcessor.on_end": 8 * per_thread}
    assert len(_autotrace_warnings(caplog)) == 1
