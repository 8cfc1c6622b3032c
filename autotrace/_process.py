"""Process exit by signal: flushing the exporters when SIGTERM arrives (opt-in).

SIGTERM (``docker stop``, Kubernetes, systemd) ends a Python process without
running ``atexit`` hooks unless a handler is installed, so every span still
queued for an exporter is lost. ``flush_on_sigterm()`` installs a handler that
sends them within a bounded time and then does what the signal would have
done: calls the handler that was there before, or dies of the signal.
"""

from __future__ import annotations

import math
import signal
import threading
from typing import Any

from ._errors import internal_error
from ._state import flush

__all__ = ["flush_on_sigterm"]


class _SigtermHandler:
    """The SIGTERM handler: flush within ``timeout`` seconds, then chain to ``previous``."""

    def __init__(self, previous: Any, timeout: float) -> None:
        self.previous = previous
        self.timeout = timeout

    def __call__(self, signum: int, frame: Any) -> Any:
        _flush_bounded(self.timeout)
        previous = self.previous
        if callable(previous):
            return previous(signum, frame)
        if previous == signal.SIG_IGN:
            return None
        # SIG_DFL, or a handler set outside Python (None): die of the signal as if
        # autotrace had never been there, so the exit status says SIGTERM.
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
        return None


def _flush_bounded(timeout: float) -> None:
    """Flush from a helper thread and wait at most ``timeout`` seconds for it.

    The handler runs in the main thread between two bytecodes of whatever it
    was doing, which may hold a lock the flush needs: flushing inline could
    wait forever. From another thread it simply runs out of time.
    """
    done = threading.Thread(target=_flush, args=(timeout,), name="autotrace-sigterm-flush", daemon=True)
    try:
        done.start()
        done.join(timeout)
    except Exception as exc:  # no thread to be had: the signal goes on regardless
        internal_error("flush on SIGTERM", exc)


def _flush(timeout: float) -> None:
    try:
        flush(timeout)
    except Exception as exc:
        internal_error("flush on SIGTERM", exc)


def flush_on_sigterm(timeout: float = 5.0) -> None:
    """On SIGTERM, send what the exporters hold (at most ``timeout`` seconds), then let the signal act.

    The handler installed before (a Python callable) is called afterwards;
    with the default disposition the process then dies of SIGTERM (exit status
    -15 / 143), with SIG_IGN it goes on. Call it from the main thread, after
    installing your own SIGTERM handler if you have one; calling it again only
    changes the timeout.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}")
    if threading.current_thread() is not threading.main_thread():
        raise ValueError("flush_on_sigterm() must be called from the main thread (only it can set signal handlers)")
    current = signal.getsignal(signal.SIGTERM)
    if isinstance(current, _SigtermHandler):
        current.timeout = float(timeout)
        return
    signal.signal(signal.SIGTERM, _SigtermHandler(current, float(timeout)))
