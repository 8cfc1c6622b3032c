"""BatchSpanProcessor: queueing, batching, flushing, shutdown and counters, with in-process exporters."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

import autotrace
from autotrace.export import BatchSpanProcessor, live_processors, stats
from autotrace.spans import Span
from autotrace.tracer import _S


class ListExporter:
    """Keeps every batch it is given; can wait until a number of spans arrived."""

    def __init__(self) -> None:
        self.batches: list[list[Span]] = []
        self.threads: set[int] = set()
        self.shutdowns = 0
        self.arrived = threading.Condition()

    def export(self, spans: Sequence[Span]) -> bool:
        with self.arrived:
            self.batches.append(list(spans))
            self.threads.add(threading.get_ident())
            self.arrived.notify_all()
        return True

    def shutdown(self) -> None:
        self.shutdowns += 1

    def names(self) -> list[str]:
        return [s.name for b in self.batches for s in b]

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.names()) >= count, timeout)


class BlockingExporter(ListExporter):
    """Blocks in export until released, like a collector that never answers."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def export(self, spans: Sequence[Span]) -> bool:
        self.entered.set()
        self.release.wait(60)
        return super().export(spans)

    def shutdown(self) -> None:
        super().shutdown()
        self.release.set()


def install(exporter: Any, **batch: Any) -> BatchSpanProcessor:
    proc = BatchSpanProcessor(exporter, **batch)
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, exporters=[proc]))
    return proc


def produce(count: int, prefix: str = "s") -> None:
    for n in range(count):
        with autotrace.span(f"{prefix}{n}"):
            pass


def test_a_full_batch_is_sent_without_waiting_for_the_schedule() -> None:
    """max_export_batch_size queued spans wake the worker at once (the 60 s schedule is not awaited)."""
    exporter = ListExporter()
    install(exporter, schedule_delay=60.0, max_export_batch_size=10)
    produce(25)
    assert exporter.wait_for(20)
    assert [len(b) for b in exporter.batches[:2]] == [10, 10]


def test_the_schedule_delay_sends_a_partial_batch() -> None:
    """Fewer spans than a batch still leave after schedule_delay."""
    exporter = ListExporter()
    install(exporter, schedule_delay=0.05)
    produce(3)
    assert exporter.wait_for(3)
    assert exporter.names() == ["s0", "s1", "s2"]


def test_force_flush_sends_everything_in_order_from_the_worker_thread() -> None:
    """flush() delivers every queued span, oldest first, and exports never run on the caller's thread."""
    exporter = ListExporter()
    proc = install(exporter, schedule_delay=60.0, max_export_batch_size=7)
    produce(30)
    assert autotrace.flush(30)
    assert exporter.names() == [f"s{n}" for n in range(30)]
    assert threading.get_ident() not in exporter.threads
    assert proc.stats() == {"queued": 0, "exported": 30, "dropped": 0, "failed": 0, "retried": 0}


def test_an_exporter_that_raises_is_counted_logged_once_and_the_worker_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Exceptions from export never reach user code; the batch counts as failed; later batches still go."""
    caplog.set_level(logging.WARNING, logger="autotrace")

    class Flaky(ListExporter):
        calls = 0

        def export(self, spans: Sequence[Span]) -> bool:
            self.calls += 1
            if self.calls <= 2:
                raise RuntimeError("collector exploded")
            return super().export(spans)

    exporter = Flaky()
    proc = install(exporter, schedule_delay=60.0)
    produce(4)
    assert not autotrace.flush(30)  # spans failed: flush says so
    produce(4)
    assert not autotrace.flush(30)
    produce(4, "ok")
    assert autotrace.flush(30)
    assert exporter.names() == ["ok0", "ok1", "ok2", "ok3"]
    assert proc.stats()["failed"] == 8 and proc.stats()["exported"] == 4
    assert sum("collector exploded" in r.getMessage() for r in caplog.records) == 1
    assert autotrace.tracer.errors()["exporter Flaky.export"] == 2


def test_an_exporter_returning_false_or_otel_failure_counts_the_batch_failed() -> None:
    """export() -> False, or OpenTelemetry's SpanExportResult.FAILURE, means the batch was lost."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    results: list[Any] = [False, SpanExportResult.FAILURE, SpanExportResult.SUCCESS, None]

    class Answering:
        def export(self, spans: Sequence[Span]) -> Any:
            return results.pop(0)

    proc = install(Answering(), schedule_delay=60.0)
    for round_ in range(4):
        produce(2)
        assert autotrace.flush(30) is (round_ >= 2)  # flush() says whether the spans were delivered
    assert proc.stats()["failed"] == 4 and proc.stats()["exported"] == 4


def test_a_full_queue_drops_the_newest_spans_and_counts_them() -> None:
    """While the exporter is stuck, on_end keeps returning; spans past max_queue_size are dropped and counted."""
    base = stats()  # the module counters are process-wide: other tests' drops are in them too
    exporter = BlockingExporter()
    proc = install(exporter, schedule_delay=0.01, max_queue_size=20, max_export_batch_size=5)
    produce(1, "first")
    assert exporter.entered.wait(30)
    produce(100)
    assert proc.stats()["queued"] == 20 and proc.stats()["dropped"] == 80
    exporter.release.set()
    assert autotrace.flush(30)
    assert exporter.names() == ["first0"] + [f"s{n}" for n in range(20)]
    assert stats()["dropped"] - base["dropped"] == 80


def test_flush_and_shutdown_share_one_deadline_across_processors() -> None:
    """flush(t) and shutdown(t) take about t in all, not t per processor, and still stop every processor."""
    exporters = [BlockingExporter() for _ in range(3)]
    procs = [BatchSpanProcessor(e, schedule_delay=0.01) for e in exporters]
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, exporters=procs))
    produce(1)
    assert all(e.entered.wait(30) for e in exporters)  # every worker is now stuck in export
    started = time.monotonic()
    assert autotrace.flush(1.0) is False
    assert time.monotonic() - started < 2.5  # 3 s if each processor had the whole second
    started = time.monotonic()
    assert autotrace.shutdown(1.0) is False
    assert time.monotonic() - started < 2.5
    # Past the deadline the later processors were still shut down (with no time left), exporters included.
    assert [e.shutdowns for e in exporters] == [1, 1, 1]
    for proc in procs:
        proc._worker.join(30)
        assert not proc._worker.is_alive()
        assert proc not in live_processors()


def test_shutdown_of_a_stuck_exporter_returns_within_its_timeout() -> None:
    """shutdown(timeout) gives up on an exporter that never returns, says False, and stops it."""
    exporter = BlockingExporter()
    proc = install(exporter, schedule_delay=0.01)
    produce(3)
    assert exporter.entered.wait(30)
    started = time.monotonic()
    assert proc.shutdown(0.5) is False
    assert time.monotonic() - started < 5
    assert exporter.shutdowns == 1  # which releases it here
    proc._worker.join(30)
    assert not proc._worker.is_alive()


def test_after_shutdown_spans_are_dropped_and_flush_is_a_no_op() -> None:
    """A shut-down processor drops (and counts) late spans; shutdown twice and flush are harmless."""
    exporter = ListExporter()
    proc = BatchSpanProcessor(exporter, schedule_delay=60.0)
    span = Span("late")
    assert proc.shutdown(5) is True
    proc.on_end(span)
    assert proc.stats()["dropped"] == 1
    assert proc.shutdown(5) is True
    assert proc.force_flush(1) is True
    assert exporter.shutdowns == 1
    assert proc not in live_processors()


def test_a_processor_configured_again_after_shutdown_logs_once_why_spans_are_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Spans reaching a shut-down processor are dropped and counted, and one warning says it was shut down."""
    caplog.set_level(logging.WARNING, logger="autotrace")
    exporter = ListExporter()
    proc = install(exporter, schedule_delay=60.0)
    assert autotrace.shutdown(5)
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, exporters=[proc]))
    produce(5)
    assert autotrace.flush(5)
    produce(5)
    assert exporter.names() == [] and proc.stats()["dropped"] == 10
    shown = [r.getMessage() for r in caplog.records if "after shutdown()" in r.getMessage()]
    assert len(shown) == 1 and "shut down" in shown[0]
    assert autotrace.tracer.errors()["BatchSpanProcessor.on_end after shutdown()"] == 10


def test_module_stats_sum_live_and_shut_down_processors() -> None:
    """autotrace.export.stats() adds up every processor of the process, including ones already shut down."""
    base = stats()
    first, second = ListExporter(), ListExporter()
    p1 = BatchSpanProcessor(first, schedule_delay=60.0)
    p2 = BatchSpanProcessor(second, schedule_delay=60.0)
    for n in range(3):
        p1.on_end(Span(f"a{n}"))
    p2.on_end(Span("b"))
    assert p1.force_flush(30) and p2.force_flush(30)
    assert stats()["exported"] - base["exported"] == 4
    assert p1.shutdown(5) and p2.shutdown(5)
    assert stats()["exported"] - base["exported"] == 4


def test_configure_wraps_plain_exporters_and_reconfiguring_keeps_a_shared_exporter_running() -> None:
    """configure(exporters=[e]) wraps e in a BatchSpanProcessor; configuring again with e does not shut e down."""
    exporter = ListExporter()
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, exporters=[exporter]))
    (proc,) = [p for p in _S.processors if isinstance(p, BatchSpanProcessor)]
    assert proc.exporter is exporter
    produce(2, "before")
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, exporters=[exporter]))
    assert exporter.shutdowns == 0  # still used by the new processor
    produce(2, "after")
    assert autotrace.flush(30)
    assert exporter.names() == ["before0", "before1", "after0", "after1"]
    autotrace.shutdown(5)
    assert exporter.shutdowns == 1


def test_settings_are_checked_and_named() -> None:
    """Bad processor settings raise ValueError naming the setting; an object without export() is a TypeError."""
    exporter = ListExporter()
    with pytest.raises(ValueError, match="max_queue_size"):
        BatchSpanProcessor(exporter, max_queue_size=0)
    with pytest.raises(ValueError, match="schedule_delay"):
        BatchSpanProcessor(exporter, schedule_delay=-1)
    with pytest.raises(ValueError, match="export_timeout"):
        BatchSpanProcessor(exporter, export_timeout=float("nan"))
    with pytest.raises(ValueError, match="must not exceed max_queue_size"):
        BatchSpanProcessor(exporter, max_queue_size=10, max_export_batch_size=11)
    with pytest.raises(TypeError, match="export"):
        BatchSpanProcessor(object())  # type: ignore[arg-type]


def test_defaults_come_from_otel_bsp_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_BSP_* (milliseconds) set the defaults; a bad value names its variable."""
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "20")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "250")
    monkeypatch.setenv("OTEL_BSP_EXPORT_TIMEOUT", "1500")
    proc = BatchSpanProcessor(ListExporter())
    try:
        assert (proc.max_queue_size, proc.max_export_batch_size) == (100, 20)
        assert (proc.schedule_delay, proc.export_timeout) == (0.25, 1.5)
    finally:
        proc.shutdown(5)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "soon")
    with pytest.raises(ValueError, match="OTEL_BSP_SCHEDULE_DELAY"):
        BatchSpanProcessor(ListExporter())
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "250")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "200")
    with pytest.raises(ValueError, match="OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        BatchSpanProcessor(ListExporter())


def test_the_export_timeout_is_passed_to_exporters_that_take_one() -> None:
    """An exporter whose export() accepts timeout= gets the processor's export_timeout (or less, when flushing)."""
    seen: list[float] = []

    class Timed:
        def export(self, spans: Sequence[Span], timeout: float | None = None) -> bool:
            seen.append(timeout or 0.0)
            return True

    install(Timed(), schedule_delay=0.01, export_timeout=7.0)
    produce(1)
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen and seen[0] == 7.0
    produce(1)
    assert autotrace.flush(2.0)
    assert 0 < seen[-1] <= 7.0


def test_configuring_twice_with_the_same_processor_keeps_it_running() -> None:
    """Passing one BatchSpanProcessor to configure() again does not shut it down (core fix in apply_config)."""
    exporter = ListExporter()
    proc = install(exporter, schedule_delay=60.0)
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, exporters=[proc]))
    produce(2)
    assert autotrace.flush(30)
    assert exporter.names() == ["s0", "s1"] and proc.stats()["dropped"] == 0
