"""The exporter base class, and the adapter that gives any exporter object its full shape.

An exporter sends batches of finished spans somewhere. Subclass ``Exporter``
and override ``export``; ``shutdown``, ``force_flush``, ``stats`` and
``after_fork`` have defaults. An object that only has ``export(spans)`` (an
OpenTelemetry SDK exporter, a test double) is wrapped once, when a processor
is made for it, so the processor calls one interface and never probes.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import reraise_foreign

if TYPE_CHECKING:
    from ..spans import Span

__all__ = ["Exporter", "as_exporter"]


class Exporter:
    """Base class for span exporters: override ``export``; the other methods have defaults."""

    batch_settings: Mapping[str, Any] | None = None
    """BatchSpanProcessor settings read with the exporter (``OTEL_BSP_*`` of its own mapping); None: os.environ."""

    def export(self, spans: Sequence[Span], timeout: float | None = None) -> bool:
        """Send ``spans`` within ``timeout`` seconds; False (or raising) means they were not delivered."""
        raise NotImplementedError

    def shutdown(self, timeout: float | None = None) -> None:
        """Release what the exporter holds (connections, files); later exports may fail."""

    def force_flush(self, timeout: float | None = None) -> bool:
        """Send anything the exporter itself buffers; True when done (nothing is buffered by default)."""
        return True

    def stats(self) -> dict[str, int]:
        """Counters the exporter keeps (``failed``, ``rejected``, ``retried``...); none by default."""
        return {}

    def after_fork(self) -> None:
        """In a forked child: new locks, no parent connections, counters from zero."""


class _Adapted(Exporter):
    """An exporter object that is no Exporter, given the base class's shape (probed once, here)."""

    def __init__(self, wrapped: Any) -> None:
        if not callable(getattr(wrapped, "export", None)):
            raise TypeError(f"an exporter needs an export(spans) method; got {type(wrapped).__name__}")
        self.wrapped = wrapped
        if isinstance(wrapped, Exporter):  # a subclass whose export() takes no timeout
            self.batch_settings = wrapped.batch_settings
        self._takes_timeout = _accepts_timeout(wrapped.export)
        self._shutdown = _method(wrapped, "shutdown")
        self._stats = _method(wrapped, "stats")
        self._after_fork = _method(wrapped, "after_fork") or _method(wrapped, "_after_fork")

    def export(self, spans: Sequence[Span], timeout: float | None = None) -> bool:
        """The wrapped export; its result read as OpenTelemetry's (False or SpanExportResult.FAILURE: lost)."""
        if self._takes_timeout:
            result = self.wrapped.export(spans, timeout=timeout)
        else:
            result = self.wrapped.export(spans)
        return not (result is False or getattr(result, "name", None) == "FAILURE")

    def shutdown(self, timeout: float | None = None) -> None:
        """The wrapped shutdown(), if it has one."""
        if self._shutdown is not None:
            self._shutdown()

    def stats(self) -> dict[str, int]:
        """The wrapped stats(), if it has one."""
        return {} if self._stats is None else dict(self._stats())

    def after_fork(self) -> None:
        """The wrapped after_fork(), if it has one."""
        if self._after_fork is not None:
            self._after_fork()


def as_exporter(exporter: Any) -> Exporter:
    """``exporter`` itself when it is a whole Exporter, else wrapped so that it has every Exporter method."""
    if isinstance(exporter, Exporter) and _accepts_timeout(exporter.export):
        return exporter
    return _Adapted(exporter)


def _method(obj: Any, name: str) -> Any:
    found = getattr(obj, name, None)
    return found if callable(found) else None


def _accepts_timeout(method: Any) -> bool:
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    return "timeout" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def counted_stats(exporter: Exporter) -> dict[str, int] | None:
    """The exporter's counters, or None when reading them fails (a broken stats() must not stop export)."""
    try:
        return exporter.stats()
    except Exception as error:
        reraise_foreign(error)
        return None
