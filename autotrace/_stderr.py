"""Warnings of the ``autotrace`` logger on stderr when the application set up no logging.

A library conventionally gives its logger only a ``NullHandler``; that also
silences Python's ``logging.lastResort``, so a dead collector or dropped spans
would go unnoticed. This handler takes lastResort's place: it writes WARNING and
above as one line on stderr, but only while neither the ``autotrace`` loggers
nor the root logger have a handler of the application's, and at most
``MAX_LINES`` times per process. autotrace itself logs each kind of failure once.
"""

from __future__ import annotations

import logging
import sys

from ._errors import is_foreign

__all__ = ["MAX_LINES", "StderrFallback"]

MAX_LINES = 100
"""Lines written per process before the handler falls silent (after saying so)."""


class StderrFallback(logging.Handler):
    """Writes autotrace's warnings to stderr when nothing else would show them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.written = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.written > MAX_LINES or _handled_elsewhere(record.name, self):
            return
        stream = sys.stderr
        if stream is None:  # pythonw: nowhere to write
            return
        try:
            self.written += 1
            if self.written > MAX_LINES:
                line = f"autotrace: more than {MAX_LINES} warnings; configure logging to see the rest"
            else:
                # One line per warning: a traceback would turn one failure into a screenful.
                line = " ".join(record.getMessage().splitlines())
            stream.write(line + "\n")
            stream.flush()
        except Exception as error:
            if is_foreign(error):  # a signal handler's exception is the application's, not a logging failure
                raise
            self.handleError(record)


def _handled_elsewhere(name: str, me: logging.Handler) -> bool:
    """True when a logger on the record's path, or the root, has a handler of the application's."""
    node: logging.Logger | None = logging.getLogger(name)
    while node is not None:
        if any(h is not me and not isinstance(h, logging.NullHandler) for h in node.handlers):
            return True
        node = node.parent if node.propagate else None
    return any(not isinstance(h, logging.NullHandler) for h in logging.getLogger().handlers)
