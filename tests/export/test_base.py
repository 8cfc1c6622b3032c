"""The Exporter base class: defaults for every method but export, and any exporter object adapted once."""

from __future__ import annotations

from collections.abc import Sequence

import autotrace
from autotrace import span
from autotrace.export import BatchSpanProcessor, ConsoleExporter, Exporter, FileExporter, OTLPHttpExporter
from autotrace.export._base import as_exporter
from autotrace.spans import Span
from autotrace.testing import capture_spans


class Minimal(Exporter):
    """Overrides export only."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def export(self, spans: Sequence[Span], timeout: float | None = None) -> bool:
        self.names.extend(s.name for s in spans)
        return True


class NoTimeout(Exporter):
    """A subclass whose export takes no timeout keyword."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def export(self, spans: Sequence[Span]) -> bool:  # type: ignore[override]
        self.names.extend(s.name for s in spans)
        return True


class Duck:
    """No base class, export only: an OpenTelemetry-style exporter."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def export(self, spans: Sequence[Span]) -> None:
        self.names.extend(s.name for s in spans)


def test_the_base_class_has_a_default_for_every_method_but_export() -> None:
    """shutdown, force_flush, stats and after_fork work on a subclass that only overrides export."""
    exporter = Minimal()
    exporter.after_fork()
    assert exporter.force_flush() is True
    assert exporter.stats() == {}
    exporter.shutdown()
    assert exporter.batch_settings is None


def test_every_autotrace_exporter_is_an_exporter() -> None:
    """The console, file and OTLP/HTTP exporters subclass Exporter, so no processor probes them."""
    assert issubclass(ConsoleExporter, Exporter)
    assert issubclass(FileExporter, Exporter)
    assert issubclass(OTLPHttpExporter, Exporter)
    console = ConsoleExporter()
    assert as_exporter(console) is console


def test_minimal_subclass_duck_and_no_timeout_exporters_all_deliver_through_configure() -> None:
    """A minimal subclass, one whose export takes no timeout, and a duck-typed object each get every span once."""
    exporters: list[Minimal | NoTimeout | Duck] = [Minimal(), NoTimeout(), Duck()]
    autotrace.configure(sample_rate=1.0, exporters=exporters)
    for i in range(5):
        with span(f"s{i}"):
            pass
    assert autotrace.flush(5.0)
    for exporter in exporters:
        assert exporter.names == [f"s{i}" for i in range(5)], type(exporter).__name__


def test_batch_settings_travel_on_the_exporter_as_a_declared_field() -> None:
    """exporters_from_env sets Exporter.batch_settings, and the processor reads it instead of os.environ."""
    (exporter,) = autotrace.export.exporters_from_env(
        "console", {"OTEL_BSP_MAX_QUEUE_SIZE": "7", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "3"}
    )
    assert isinstance(exporter, Exporter) and exporter.batch_settings is not None
    proc = BatchSpanProcessor(exporter)
    try:
        assert (proc.max_queue_size, proc.max_export_batch_size) == (7, 3)
    finally:
        proc.shutdown(2.0)


def test_capture_spans_survives_configure_and_shutdown() -> None:
    """capture_spans()'s collector is a CaptureProcessor: configure() and shutdown() inside the block keep it."""
    with capture_spans() as spans:
        with span("before"):
            pass
        autotrace.configure(sample_rate=0.0)
        autotrace.shutdown(1.0)
        with span("after"):
            pass
    assert spans.names() == ["before", "after"]
