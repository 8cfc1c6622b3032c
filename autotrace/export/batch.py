"""The batching span processor: a bounded queue drained by a daemon thread.

``on_end`` is one length check and one deque append (both atomic C calls), so
the instrumented code never waits for a lock held by the network. A worker
thread sends a batch when ``max_export_batch_size`` spans wait or
``schedule_delay`` seconds pass, whichever comes first. A full queue drops the
newest span and counts it. Exporter failures are counted and logged once.

At interpreter exit every live processor is shut down within ``EXIT_TIMEOUT``
seconds in total; in a forked child every processor starts over with an empty
queue and a new worker, so a parent's queued spans are never sent twice.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .. import _errors, _state
from .._errors import internal_error, reraise_foreign
from ._base import Exporter, as_exporter, counted_stats
from .env import batch_settings

if TYPE_CHECKING:
    from ..spans import Span

__all__ = ["EXIT_TIMEOUT", "BatchSpanProcessor", "SpanExporter", "stats"]

EXIT_TIMEOUT = 5.0
"""Seconds the atexit hook allows, in total, to send what is still queued."""

_COUNTERS = ("exported", "dropped", "failed", "retried")


class SpanExporter(Protocol):
    """Sends one batch of finished spans somewhere; returns False when the batch was lost.

    The least an exporter must have. Subclass ``Exporter`` (autotrace.export)
    for the rest: ``shutdown``, ``force_flush``, ``stats``, ``after_fork``, a
    ``timeout`` keyword on ``export``; any other object is wrapped in one.
    """

    def export(self, spans: Sequence[Span]) -> Any:
        """Send ``spans``; False (or raising) means they were not delivered."""


class _Flush:
    """One force_flush() call waiting for the worker."""

    __slots__ = ("deadline", "done")

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.done = threading.Event()


class BatchSpanProcessor:
    """Queues finished spans and sends them in batches from a background thread.

    Arguments left as None come from ``OTEL_BSP_MAX_QUEUE_SIZE``,
    ``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` and
    ``OTEL_BSP_EXPORT_TIMEOUT`` (milliseconds), else 2048, 5 s, 512 and 30 s.
    """

    def __init__(
        self,
        exporter: SpanExporter | Exporter,
        *,
        max_queue_size: int | None = None,
        schedule_delay: float | None = None,
        max_export_batch_size: int | None = None,
        export_timeout: float | None = None,
    ) -> None:
        # The exporter as an Exporter: every method there, so nothing is probed per batch.
        self._exporter = as_exporter(exporter)
        # exporters_from_env() gives its exporters the OTEL_BSP_* values it read from its own mapping.
        preset = self._exporter.batch_settings
        settings = dict(preset) if preset is not None else batch_settings(os.environ)
        given = {
            "max_queue_size": max_queue_size,
            "schedule_delay": schedule_delay,
            "max_export_batch_size": max_export_batch_size,
            "export_timeout": export_timeout,
        }
        for name, value in given.items():
            if value is None:
                continue
            if name in ("max_queue_size", "max_export_batch_size"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{name} must be a positive integer; got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds; got {value!r}")
            settings[name] = value
        if settings["max_export_batch_size"] > settings["max_queue_size"]:
            raise ValueError(
                f"max_export_batch_size ({settings['max_export_batch_size']}) must not exceed "
                f"max_queue_size ({settings['max_queue_size']})"
            )
        self.exporter = exporter  # as given (shared by processors of several configure() calls)
        self.max_queue_size: int = int(settings["max_queue_size"])
        self.schedule_delay: float = float(settings["schedule_delay"])
        self.max_export_batch_size: int = int(settings["max_export_batch_size"])
        self.export_timeout: float = float(settings["export_timeout"])
        self._closed = False
        self._start()
        _register(self)

    def _start(self) -> None:
        """Fresh queue, counters and worker (at construction and in a forked child)."""
        self._queue: deque[Span] = deque()
        self._wake = threading.Event()
        self._woken = False  # on_end has set _wake since the worker last cleared it
        self._lock = threading.Lock()  # guards _waiters and _stopping, never taken by on_end
        self._waiters: list[_Flush] = []
        self._stopping = False
        self.exported = 0
        self.dropped = 0
        self.failed = 0
        self._worker = threading.Thread(target=self._run, name="autotrace-export", daemon=True)
        self._worker.start()

    # -- the hot path -----------------------------------------------------------------

    def on_end(self, span: Span) -> None:
        """Queue a finished span: O(1), no lock, no I/O; a full queue drops it and counts it."""
        queue = self._queue
        if len(queue) >= self.max_queue_size or self._closed:
            # With the GIL, `+=` on an attribute is not interrupted midway (no eval-breaker
            # check inside it), so the count stays exact without a lock on this path.
            self.dropped += 1
            if self.dropped == 1 and not self._closed:  # the first drop only: say it once
                _errors.logger.warning(
                    "autotrace: the export queue is full (max_queue_size=%d); spans are dropped and counted "
                    "in stats()['dropped']",
                    self.max_queue_size,
                )
            if self._closed:  # e.g. passed to configure() again after shutdown(): say why spans vanish
                internal_error(
                    "BatchSpanProcessor.on_end after shutdown()",
                    RuntimeError("this processor was shut down and drops every span; make a new one"),
                )
            return
        queue.append(span)
        # A plain flag, not Event.is_set() (a Python-level call): a burst that outruns
        # the worker checks it once per span until the worker takes the batch.
        if len(queue) >= self.max_export_batch_size and not self._woken:
            self._woken = True
            self._wake.set()

    # -- the worker -------------------------------------------------------------------

    def _run(self) -> None:
        queue = self._queue
        wake = self._wake
        next_due = time.monotonic() + self.schedule_delay
        while True:
            try:
                wait = next_due - time.monotonic()
                if wait > 0 and len(queue) < self.max_export_batch_size and not self._waiters and not self._stopping:
                    wake.wait(wait)
                wake.clear()
                self._woken = False
                with self._lock:
                    waiters, self._waiters = self._waiters, []
                    stopping = self._stopping
                try:
                    if waiters or stopping or time.monotonic() >= next_due:
                        deadlines = [w.deadline for w in waiters if w.deadline is not None]
                        self._drain(len(queue), min(deadlines) if deadlines else None)
                        next_due = time.monotonic() + self.schedule_delay
                    else:
                        while len(queue) >= self.max_export_batch_size:
                            self._drain(self.max_export_batch_size, None)
                finally:
                    for waiter in waiters:  # even if draining failed: nobody waits forever
                        waiter.done.set()
                if stopping:
                    return
            except Exception as exc:  # keep the worker alive whatever happens
                internal_error("batch span processor worker", exc)
                time.sleep(0.1)

    def _drain(self, count: int, deadline: float | None) -> None:
        """Send the ``count`` oldest queued spans, in batches."""
        queue = self._queue
        size = self.max_export_batch_size
        while count > 0 and queue:
            batch: list[Span] = []
            take = min(size, count)
            while len(batch) < take:
                try:
                    batch.append(queue.popleft())
                except IndexError:
                    break
            count -= take
            if batch:
                self._export(batch, deadline)

    def _export(self, batch: list[Span], deadline: float | None) -> None:
        timeout = self.export_timeout
        if deadline is not None:
            left = deadline - time.monotonic()
            if left > 0:  # a flush whose deadline passed already returned False: use the full timeout
                timeout = min(timeout, left)
        exporter = self._exporter
        before = _lost(exporter)
        try:
            result: Any = exporter.export(batch, timeout=timeout)
        except Exception as exc:
            internal_error(f"exporter {type(self.exporter).__name__}.export", exc)
            self.failed += len(batch)
            return
        # False, or OpenTelemetry's SpanExportResult.FAILURE, means (part of) the batch was lost;
        # an exporter that counts its own failed/rejected spans tells how many.
        failed = 0
        if result is False or getattr(result, "name", None) == "FAILURE":
            failed = len(batch)
        if before is not None:
            after = _lost(exporter)
            if after is not None and after > before:
                failed = min(len(batch), after - before)
        self.failed += failed
        self.exported += len(batch) - failed

    # -- flush and shutdown -----------------------------------------------------------

    def force_flush(self, timeout: float | None = None) -> bool:
        """Send everything queued so far; True when all of it was delivered within ``timeout`` seconds."""
        if self._closed:
            return not self._queue
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        failed = self.failed
        # Sent means delivered: spans that failed while this flush waited make it fail too.
        return self._flush(deadline) and self.failed == failed

    def _flush(self, deadline: float | None) -> bool:
        if not self._worker.is_alive():  # no worker (it could not start): send from here
            self._drain(len(self._queue), deadline)
            return not self._queue
        waiter = _Flush(deadline)
        with self._lock:
            self._waiters.append(waiter)
        self._wake.set()
        return waiter.done.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def shutdown(self, timeout: float | None = None) -> bool:
        """Send what is queued, stop the worker and shut the exporter down; True when all
        of it finished within ``timeout`` seconds. Spans ended afterwards are dropped."""
        if self._closed:
            return True
        self._closed = True
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._lock:
            self._stopping = True
        ok = self._flush(deadline)
        self._worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        ok = ok and not self._worker.is_alive()
        _unregister(self)
        # Reconfiguring with the same exporter object wraps it in a new processor:
        # leave the exporter running for that one.
        if not _in_use(self.exporter):
            _retire_exporter(self._exporter)
            try:
                self._exporter.shutdown()
            except Exception as exc:
                internal_error(f"exporter {type(self.exporter).__name__}.shutdown", exc)
        return ok

    # -- counters ---------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters: spans queued now, exported, dropped (queue full), failed, and retried requests."""
        return {
            "queued": len(self._queue),
            "exported": self.exported,
            "dropped": self.dropped,
            "failed": self.failed,
            "retried": _retried(self._exporter),
        }

    def after_fork(self) -> None:
        """In a forked child: forget the parent's queue and counters, start a new worker."""
        self._exporter.after_fork()
        self._start()

    def __repr__(self) -> str:
        return (
            f"BatchSpanProcessor({self.exporter!r}, max_queue_size={self.max_queue_size}, "
            f"schedule_delay={self.schedule_delay}, max_export_batch_size={self.max_export_batch_size})"
        )


def _lost(exporter: Exporter) -> int | None:
    """Spans the exporter itself counted as failed or rejected so far (None: its counters cannot be read)."""
    counts = counted_stats(exporter)
    if counts is None:
        return None
    try:
        return int(counts.get("failed", 0)) + int(counts.get("rejected", 0))
    except Exception as error:
        reraise_foreign(error)
        return None


def _retried(exporter: Exporter) -> int:
    """Requests the exporter sent again so far (0 when it does not count them)."""
    counts = counted_stats(exporter)
    try:
        return 0 if counts is None else int(counts.get("retried", 0))
    except Exception as error:
        reraise_foreign(error)
        return 0


# -- the registry of live processors, the module counters and the process hooks -----------

_LIVE: list[BatchSpanProcessor] = []
_LIVE_LOCK = threading.Lock()
_RETIRED = dict.fromkeys(_COUNTERS, 0)  # counts of processors already shut down
_HOOKED = False


def _register(proc: BatchSpanProcessor) -> None:
    global _HOOKED
    with _LIVE_LOCK:
        _LIVE.append(proc)
        if not _HOOKED:
            _HOOKED = True
            atexit.register(_shutdown_at_exit)
            _hook_multiprocessing()


def _unregister(proc: BatchSpanProcessor) -> None:
    with _LIVE_LOCK:
        if proc in _LIVE:
            _LIVE.remove(proc)
            _RETIRED["exported"] += proc.exported
            _RETIRED["dropped"] += proc.dropped
            _RETIRED["failed"] += proc.failed


def _retire_exporter(exporter: Exporter) -> None:
    with _LIVE_LOCK:
        _RETIRED["retried"] += _retried(exporter)


def _in_use(exporter: Any) -> bool:
    with _LIVE_LOCK:
        return any(p.exporter is exporter for p in _LIVE)


def live_processors() -> list[BatchSpanProcessor]:
    """The processors not shut down yet, oldest first."""
    with _LIVE_LOCK:
        return list(_LIVE)


def stats() -> dict[str, int]:
    """Counters summed over every batch processor of this process: queued, exported, dropped, failed, retried."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
        total = {"queued": 0, **_RETIRED}
    exporters: dict[int, Exporter] = {}
    for proc in procs:
        total["queued"] += len(proc._queue)
        total["exported"] += proc.exported
        total["dropped"] += proc.dropped
        total["failed"] += proc.failed
        exporters[id(proc.exporter)] = proc._exporter
    # Retries are counted by exporters, which several processors may share.
    total["retried"] += sum(_retried(e) for e in exporters.values())
    return total


def _shutdown_at_exit(timeout: float = EXIT_TIMEOUT) -> None:
    """Flush and stop every exporter, sharing one bounded timeout (atexit)."""
    deadline = time.monotonic() + timeout
    procs: list[Any] = live_processors()
    for proc in _state._S.processors:
        if proc not in procs and not isinstance(proc, _state.CaptureProcessor):
            procs.append(proc)
    for proc in procs:
        try:
            proc.shutdown(max(0.0, deadline - time.monotonic()))
        except Exception as exc:
            internal_error(f"{type(proc).__name__}.shutdown at exit", exc)


def _after_fork_in_child() -> None:
    global _LIVE_LOCK
    _LIVE_LOCK = threading.Lock()  # another thread may have held it at fork time
    for key in _COUNTERS:
        _RETIRED[key] = 0
    for proc in list(_LIVE):
        try:
            proc.after_fork()
        except Exception as exc:
            internal_error("restarting an exporter after fork", exc)


def _hook_multiprocessing() -> None:
    """multiprocessing's forked workers leave through os._exit, skipping atexit:
    register our shutdown with its own exit finalizers in each worker instead."""
    try:
        from multiprocessing import util
    except ImportError:  # pragma: no cover - some embedded builds lack it
        return

    def in_worker(_: object) -> None:
        util.Finalize(None, _shutdown_at_exit, exitpriority=100)

    util.register_after_fork(_HOOK_OWNER, in_worker)


class _HookOwner:
    """A long-lived object multiprocessing.util.register_after_fork can key on (weakly)."""


_HOOK_OWNER = _HookOwner()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
