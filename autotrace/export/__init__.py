"""Exporters that run beside the in-memory store, batched on a background thread.

    import autotrace
    from autotrace.export import OTLPHttpExporter

    autotrace.configure(exporters=[OTLPHttpExporter("http://localhost:4318/v1/traces")])

``configure(exporters=[...])`` wraps each exporter in a ``BatchSpanProcessor``:
finished sampled spans go into a bounded queue, and a daemon thread sends them
in batches, so the instrumented code never blocks on the network or sees an
exporter error. ``OTEL_TRACES_EXPORTER=otlp,console,file`` does the same from
the environment. ``stats()`` tells how many spans were exported, dropped
(queue full), failed and how many requests were retried.
"""

from __future__ import annotations

from ._base import Exporter
from .batch import EXIT_TIMEOUT, BatchSpanProcessor, SpanExporter, live_processors, stats
from .console import ConsoleExporter, format_spans
from .env import DEFAULT_EXPORT_FILE, batch_settings, exporters_from_env
from .files import FileExporter, decode_spans, load_jsonl_into, read_jsonl
from .otlp_http import DEFAULT_ENDPOINT, ExportError, OTLPHttpExporter, parse_retry_after

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_EXPORT_FILE",
    "EXIT_TIMEOUT",
    "BatchSpanProcessor",
    "ConsoleExporter",
    "ExportError",
    "Exporter",
    "FileExporter",
    "OTLPHttpExporter",
    "SpanExporter",
    "batch_settings",
    "decode_spans",
    "exporters_from_env",
    "format_spans",
    "live_processors",
    "load_jsonl_into",
    "parse_retry_after",
    "read_jsonl",
    "stats",
]
