"""Log correlation: put the current trace and span ids on every log record.

    import autotrace.logs
    autotrace.logs.install(fmt="%(levelname)s [%(trace_id)s %(span_id)s] %(message)s")

Every record then carries ``trace_id`` (32 hex characters), ``span_id`` (16 hex
characters) and ``trace_sampled`` (bool). Outside any span the ids are all
zeros (``"0" * 32`` and ``"0" * 16``, W3C's "no trace"), so a format using them
never fails and log lines keep a fixed width. For unsampled traces the ids are
still real: they match the ``traceparent`` sent to other services.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from ._errors import internal_error
from .context import current_span_context

__all__ = ["DEFAULT_FORMAT", "NO_SPAN_ID", "NO_TRACE_ID", "TraceContextFilter", "install", "uninstall"]

NO_TRACE_ID = "0" * 32
"""The ``trace_id`` a log record gets outside any span (the W3C invalid id)."""
NO_SPAN_ID = "0" * 16
"""The ``span_id`` a log record gets outside any span (the W3C invalid id)."""
DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(name)s [trace_id=%(trace_id)s span_id=%(span_id)s] %(message)s"
"""The format ``install()`` gives the handler it adds, with the trace and span ids."""

_lock = threading.Lock()
_previous_factory: Any = None  # the record factory install() wrapped, while installed


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it (install() at fork time)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _add_ids(record: logging.LogRecord) -> None:
    """Set trace_id, span_id and trace_sampled on a record, unless it already has them.

    A record that already carries them was made in another thread (or
    context), such as one passed on by a ``QueueHandler``: its ids are the
    right ones, the current thread's are not.
    """
    if hasattr(record, "trace_id"):
        return
    try:
        ctx = current_span_context()
    except Exception as exc:
        internal_error("logs: reading the current span", exc)
        ctx = None
    if ctx is None or not ctx.is_valid:
        record.trace_id = NO_TRACE_ID
        record.span_id = NO_SPAN_ID
        record.trace_sampled = False
    else:
        record.trace_id = ctx.trace_id_hex
        record.span_id = ctx.span_id_hex
        record.trace_sampled = ctx.sampled


class TraceContextFilter(logging.Filter):
    """A ``logging.Filter`` that adds ``trace_id``, ``span_id`` and ``trace_sampled`` to records.

    Attach it to a handler (it then sees records from every logger that
    reaches the handler) or to a logger (only records logged on that very
    logger). It never drops a record. With ``logging.config.dictConfig``:
    ``{"filters": {"trace": {"()": "autotrace.logs.TraceContextFilter"}}}``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the ids; always keep the record."""
        try:
            _add_ids(record)
        except Exception as exc:
            internal_error("logs: TraceContextFilter", exc)
        return True


def _factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record: logging.LogRecord = (_previous_factory or logging.LogRecord)(*args, **kwargs)
    try:
        _add_ids(record)
    except Exception as exc:
        internal_error("logs: record factory", exc)
    return record


def install(logger: logging.Logger | str | None = None, fmt: str | None = None) -> logging.Logger:
    """Make ``%(trace_id)s``, ``%(span_id)s`` and ``%(trace_sampled)s`` work in every log format.

    Every record, from any logger and thread, gets the ids of the span
    current where it was logged (the record factory is wrapped, once).
    ``logger`` (the root by default) gets a stderr handler using ``fmt`` (or
    ``DEFAULT_FORMAT``) when it has no handler; when it has handlers and
    ``fmt`` is given, their formatter becomes ``fmt``. Returns the logger.
    ``uninstall()`` undoes the record factory.
    """
    global _previous_factory
    target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
    if fmt is not None:
        _check_format(fmt)  # a bad fmt fails here, clearly, rather than on every record
    with _lock:
        if _previous_factory is None:
            _previous_factory = logging.getLogRecordFactory()
            logging.setLogRecordFactory(_factory)
    if not target.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(fmt or DEFAULT_FORMAT))
        target.addHandler(handler)
    elif fmt is not None:
        for existing in target.handlers:
            existing.setFormatter(logging.Formatter(fmt))
    return target


def uninstall() -> None:
    """Restore the log record factory that ``install()`` replaced (handlers stay)."""
    global _previous_factory
    with _lock:
        # If another library wrapped the factory after us, ours stays in its
        # chain (and keeps working): only undo what is still on top.
        if _previous_factory is not None and logging.getLogRecordFactory() is _factory:
            logging.setLogRecordFactory(_previous_factory)
            _previous_factory = None


def _check_format(fmt: str) -> None:
    """Raise ValueError naming the problem when ``fmt`` is not a usable %-style log format."""
    if not isinstance(fmt, str):
        raise TypeError(f"fmt must be a str; got {type(fmt).__name__}")
    probe = logging.LogRecord("autotrace", logging.INFO, __file__, 0, "probe", None, None)
    _add_ids(probe)
    try:
        logging.Formatter(fmt).format(probe)
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"fmt is not a usable log format ({exc!r}): {fmt!r}") from None
