"""Exporters that run beside the in-memory store: filled in by the export issue."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class BatchSpanProcessor:
    """Placeholder until the export issue lands: exports each span synchronously."""

    def __init__(self, exporter: Any) -> None:
        self.exporter = exporter

    def on_end(self, span: Any) -> None:
        self.exporter.export([span])

    def force_flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        return True


def exporters_from_env(names: str, env: Mapping[str, str]) -> Iterable[Any]:
    """Exporters named by OTEL_TRACES_EXPORTER (none yet)."""
    return ()
