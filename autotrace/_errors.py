"""Failures inside autotrace: counted and logged once, told apart from the host's exceptions.

Every broad ``except Exception`` inside autotrace ends in ``internal_error``
(counted by place, logged the first time) or asks ``reraise_foreign``; both
ask ``is_foreign`` before swallowing anything:
an exception a signal handler raised while autotrace's code was running (a
SIGALRM deadline's ``TimeoutError``, say) is the host's, and must reach it.
This runs only on error paths, never on the hot path.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import types
from typing import Any

__all__ = ["errors", "internal_error", "is_foreign", "reraise_foreign", "safe_str"]

logger = logging.getLogger("autotrace")

COUNTS: dict[str, int] = {}
"""Failures so far, by where they happened (read through ``errors()``)."""
_LOCK = threading.Lock()  # taken only on the error path, never on the hot path

_VALID_SIGNALS = frozenset(int(s) for s in signal.valid_signals())


def is_foreign(exc: BaseException) -> bool:
    """True when ``exc`` is not a failure of autotrace's own and must propagate.

    A BaseException that is not an Exception (KeyboardInterrupt, SystemExit,
    GeneratorExit, CancelledError) always is. So is an exception raised inside
    a signal handler: Python runs a handler as a new frame on top of whatever
    frame was executing, so that frame is in the exception's traceback. It is
    known by its code (a handler installed now, ``signal.getsignal``) or by its
    arguments (an int that is a signal number and the very frame it interrupted,
    for a handler that uninstalled itself before raising).
    """
    if not isinstance(exc, Exception):
        return True
    if threading.current_thread() is not threading.main_thread():
        return False  # Python runs signal handlers in the main thread only
    tb = exc.__traceback__
    if tb is None:
        return False
    tb = tb.tb_next  # the first entry is the frame that caught it
    if tb is None:
        return False
    codes = _handler_codes()
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code in codes or _called_as_handler(frame):
            return True
        tb = tb.tb_next
    return False


def reraise_foreign(exc: BaseException) -> None:
    """Raise ``exc`` again when it is foreign (see ``is_foreign``); return otherwise."""
    if is_foreign(exc):
        raise exc


def _handler_codes() -> set[types.CodeType]:
    """The code objects of the Python signal handlers installed now."""
    codes: set[types.CodeType] = set()
    for signum in _VALID_SIGNALS:
        try:
            handler = signal.getsignal(signum)
        except (ValueError, OSError):
            continue
        if handler is None or isinstance(handler, int):  # SIG_DFL, SIG_IGN, or not set from Python
            continue
        _add_codes(handler, codes)
    return codes


def _add_codes(handler: Any, codes: set[types.CodeType]) -> None:
    # getattr with a default catches AttributeError only: nothing broad here,
    # or an exception could be swallowed on the very path that must not.
    for _ in range(4):  # a partial of a bound method of a wrapper: a few levels, no more
        code = getattr(handler, "__code__", None)
        if isinstance(code, types.CodeType):
            codes.add(code)
        call = getattr(type(handler), "__call__", None)  # noqa: B004 - its code, not whether it is callable
        code = getattr(call, "__code__", None)
        if isinstance(code, types.CodeType):  # a callable object
            codes.add(code)
        inner = getattr(handler, "__func__", None) or getattr(handler, "func", None)
        if inner is None:
            inner = getattr(handler, "__wrapped__", None)
        if inner is None or inner is handler:
            return
        handler = inner


def _called_as_handler(frame: types.FrameType) -> bool:
    """Whether ``frame`` was called the way Python calls a signal handler: (signum, interrupted frame)."""
    code = frame.f_code
    count = code.co_argcount
    if count < 2:
        return False
    back = frame.f_back
    if back is None:
        return False
    local = frame.f_locals
    values = [local.get(name) for name in code.co_varnames[:count]]
    return any(v is back for v in values) and any(type(v) is int and v in _VALID_SIGNALS for v in values)


def safe_str(value: object) -> str:
    """``str(value)``, or a placeholder when its ``__str__`` raises."""
    try:
        text = str(value)
        if type(text) is not str:  # a __str__ returning a str subclass
            text = str.__str__(text)
        return text
    except Exception as exc:
        reraise_foreign(exc)
        try:
            return f"<unprintable {type(value).__qualname__}>"
        except Exception as error:
            reraise_foreign(error)
            return "<unprintable>"


def internal_error(where: str, exc: BaseException | None = None) -> None:
    """Count a failure inside autotrace; log it the first time it happens at ``where``.

    Every broad ``except`` in autotrace ends here, so this is where an exception
    that is not autotrace's own (one a signal handler raised, a KeyboardInterrupt:
    see ``is_foreign``) is raised again, to reach the host's code. The caller has
    put the context back before calling.
    """
    if exc is not None and is_foreign(exc):
        raise exc
    with _LOCK:  # threads failing at once: count every failure, log the first only
        count = COUNTS.get(where, 0)
        COUNTS[where] = count + 1
    if count == 0:
        # The exception's own __repr__/__str__ may raise: describe it with safe_str.
        reason = "" if exc is None else f"{type(exc).__qualname__}: {safe_str(exc)}"
        try:
            logger.warning("autotrace: %s failed; tracing goes on without it (%s)", where, reason, exc_info=exc)
        except Exception as error:  # a broken logging handler must not break the host either
            if is_foreign(error):
                raise


def errors() -> dict[str, int]:
    """Failures inside autotrace so far, by where they happened."""
    return dict(COUNTS)


def _after_fork_in_child() -> None:
    """A new lock in a forked child: a thread of the parent may have held it (an error being counted)."""
    global _LOCK
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
