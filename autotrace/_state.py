"""The global state the hot path reads, and handing a finished span on.

Everything the hot path reads sits in one slotted object, ``_S``, read by
attribute (one load each); ``finish()`` files a finished sampled span in the
store and hands it to the processors. It sits below ``spans`` because filing a
span needs only the attribute freezer, the store and the processors, none of
which needs the Span class at run time: ``Span.end()`` imports what it calls,
and no module rewrites another's globals.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ._current import CURRENT, current_span_context
from ._errors import COUNTS, internal_error, is_foreign
from ._metrics import M as _M
from ._metrics import observe_span as _observe_span
from ._tail import _Provisional
from .attributes import pack
from .store import TraceStore

if TYPE_CHECKING:
    from ._model import SpanContext
    from ._tail import TailSampling
    from .config import TraceConfig
    from .sampling import Sampler
    from .spans import Span

__all__ = [
    "CaptureProcessor",
    "SpanProcessor",
    "add_processor",
    "finish",
    "flush",
    "get_config",
    "get_trace_store",
    "remove_processor",
]

_cv_get = CURRENT.get


class SpanProcessor(Protocol):
    """Receives every finished sampled span (exporters, capture_spans)."""

    def on_end(self, span: Span) -> None:
        """Called once per finished span; must not block."""

    def force_flush(self, timeout: float | None = None) -> bool:
        """Send what is queued; True when done within the timeout."""
        ...

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush and stop; True when done within the timeout."""
        ...


class CaptureProcessor:
    """A processor that configure() and shutdown() leave in place: what capture_spans() collects with."""

    def on_end(self, span: Span) -> None:
        """Called once per finished span; must not block."""

    def force_flush(self, timeout: float | None = None) -> bool:
        """Nothing is queued: True."""
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Nothing to stop: True."""
        return True


class _State:
    """All mutable global state, in one place (replaced wholesale by configure())."""

    __slots__ = (
        "_processors",
        "_store",
        "bound",
        "config",
        "custom",
        "enabled",
        "errors",
        "fast_limit",
        "force",
        "lock",
        "pushes",
        "ring",
        "sampler",
        "span_limit",
        "tail",
        "worker_flush",
    )

    def __init__(self) -> None:
        self.bound = 0  # roots are sampled when trace_id & (2**64-1) < bound
        self.custom: Sampler | None = None  # a sampler with no root_bound, asked per root
        self.sampler: Sampler | None = None
        self.tail: TailSampling | None = None  # tail sampling (keep_errors, keep_slower_than), when on
        self.enabled = True
        self.force = 0  # >0 while capture_spans() is active: sample everything
        self._processors: tuple[Any, ...] = ()
        self.store = TraceStore()
        self.config: TraceConfig | None = None
        self.errors = COUNTS  # the failure counts of _errors, the same dict (read by tests as _S.errors)
        self.lock = threading.RLock()
        # Whether this process is a multiprocessing pool worker (None: not known yet); see _finish.
        self.worker_flush: bool | None = None

    # The hot path reads plain slots copied from the store and the processors
    # (one attribute load each); these setters keep the copies in step.

    @property
    def store(self) -> TraceStore:
        """The global trace store."""
        return self._store

    @store.setter
    def store(self, store: TraceStore) -> None:
        old = getattr(self, "_store", None)
        if old is not None and old is not store:
            old._listener = None
        self._store = store
        store._listener = self._update_fast_limit
        self.ring = store._ring  # a new trace's buffer goes in here (store.py) ...
        self.pushes = store._counter  # ... and counted here (next() on it: cheaper than a bound __next__)
        self.span_limit = store.max_spans_per_trace
        self._update_fast_limit()

    @property
    def processors(self) -> tuple[Any, ...]:
        """Receivers of every finished sampled span."""
        return self._processors

    @processors.setter
    def processors(self, processors: tuple[Any, ...]) -> None:
        self._processors = tuple(processors)
        self._update_fast_limit()

    def _update_fast_limit(self) -> None:
        # A finished span may be appended to its trace's buffer inline while the
        # buffer is shorter than this; -1 (never: through _finish) while
        # processors want spans too or the store's lock is held (see store.py).
        # Under a lock of its own: a reader releasing the store lock and a thread
        # adding a processor both land here; whichever runs last must see both
        # latest values, or spans could skip the processors until the next read.
        with _FAST_LIMIT_LOCK:
            self.fast_limit = -1 if self._processors or self._store._busy else self.span_limit


_FAST_LIMIT_LOCK = threading.Lock()  # never taken on the hot path
_S = _State()


def _after_fork_in_child() -> None:
    """New locks in a forked child: a thread of the parent may have held one (configure(), a processor change)."""
    global _FAST_LIMIT_LOCK
    _FAST_LIMIT_LOCK = threading.Lock()
    _S.lock = threading.RLock()
    _S.worker_flush = None  # a pool worker is told apart again in this process (see finish)
    # The store's own hook (store.py, registered first: imported above) has just
    # freed its lock: the hot path may append inline again.
    _S._update_fast_limit()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- finishing ------------------------------------------------------------------------


def finish(span: Span) -> None:
    """Hand a finished sampled span to the store and processors; never raises."""
    try:
        if _M.on:  # every span ending here is counted in the metrics (the inline paths count their own)
            _observe_span(span)
        data = span._attr_data
        if type(data) is dict:  # attributes of its own: pack them (see attributes.pack)
            pack(span)
        elif data.__class__ is not tuple:  # (a tuple: packed already, its values in the slots)
            span._attr0 = None  # its latest child, linked while it was open (see Span.__slots__): let go
        # The span's trace buffer was found when the trace's local root started
        # (see store.py): filing the span is one atomic list.append, no lock.
        buf = span._trace
        if buf is None:  # a hand-built span: filed by its trace id
            _S._store.add(span)
        elif buf.__class__ is _Provisional:  # a trace the head sample left out (tail sampling, _tail.py)
            tail = buf.sampling
            # The local root (decided here) or another span of the trace.
            filed = (
                tail.decide(span, buf, _S._store) if span._parent_id == buf.parent else tail.end(span, buf, _S._store)
            )
            if filed and _S._processors:
                _process_kept(filed, _S._processors)
            return
        else:
            span._trace = None  # no span <-> buffer reference cycle (see Span.__exit__)
            _S._store._put(buf, span)  # the slot, not the property: this runs per span
        procs = _S._processors  # the slot, not the property: this runs per span
        if procs:
            _process(span, procs)
    except Exception as exc:  # the store itself broke: drop the span, keep the host alive
        internal_error("trace store", exc)


def finish_provisional(span: Span, buf: _Provisional) -> None:
    """``finish()`` for a span of a provisional trace whose metrics the caller recorded (``@traced``); never raises."""
    try:
        data = span._attr_data
        if type(data) is dict:  # attributes of its own: pack them (see attributes.pack)
            pack(span)
        elif data.__class__ is not tuple:  # (as in finish)
            span._attr0 = None
        tail = buf.sampling
        filed = tail.decide(span, buf, _S._store) if span._parent_id == buf.parent else tail.end(span, buf, _S._store)
        if filed and _S._processors:
            _process_kept(filed, _S._processors)
    except Exception as exc:  # the store itself broke: drop the span, keep the host alive
        internal_error("trace store", exc)


def _process(span: Span, procs: tuple[Any, ...]) -> None:
    """Hand a filed span to the processors (a signal handler's exception goes on once all have it)."""
    foreign = None
    for proc in procs:
        try:
            proc.on_end(span)
        except BaseException as exc:  # a KeyboardInterrupt too: the other processors still get the span
            if foreign is None and is_foreign(exc):
                foreign = exc  # raised once every processor has the span
            else:
                internal_error(f"span processor {type(proc).__name__}.on_end", exc)
    if foreign is not None:
        raise foreign
    # In a pool worker, the end of a task's outermost local span: nothing
    # current, or only a remote parent (propagation.attach()).
    if _S.worker_flush is not False and _cv_get().__class__ is not span.__class__:  # no Span current here
        _flush_in_pool_worker()


def _process_kept(spans: list[Span], procs: tuple[Any, ...]) -> None:
    """Hand the spans of a trace just kept to the processors: each gets every span, whatever one of them raises.

    A signal handler's exception (or a KeyboardInterrupt) raised while one span
    is handed over goes on once every span has been, as when the spans of a
    sampled trace end one by one: the trace is not cut short in the exporters.
    """
    foreign: BaseException | None = None
    for s in spans:
        try:
            _process(s, procs)
        except BaseException as exc:  # foreign only (_process keeps its own failures): raised below
            if foreign is None:
                foreign = exc
    if foreign is not None:
        raise foreign


WORKER_FLUSH_TIMEOUT = 5.0
"""Seconds a multiprocessing pool worker allows, at the end of each task, to send its spans."""


def _flush_in_pool_worker() -> None:
    """In a pool worker, flush the exporters when a task's outermost span ends.

    ``Pool.terminate()`` (what ``with Pool() as p:`` does on leaving) and the
    pool's own shutdown end workers with SIGTERM: no atexit hook or
    multiprocessing finalizer runs, so spans still queued would be lost. A
    local root ending (no local span current any more in this thread) is the
    end of the task's traced work: sending then costs one export per task, in
    workers only.
    """
    flag = _S.worker_flush
    if flag is None:
        flag = _pool_worker()
        if flag is None:
            return
        _S.worker_flush = flag
    if flag:
        flush(WORKER_FLUSH_TIMEOUT)


def _pool_worker() -> bool | None:
    """Whether this process is a daemonic multiprocessing child (pool workers are); None: not known yet."""
    mp = sys.modules.get("multiprocessing")
    if mp is None:  # not imported: not a multiprocessing child (a fork resets the answer)
        return False
    proc = mp.current_process()
    if proc.name == "MainProcess":
        return False
    if mp.parent_process() is None:  # a spawned child still importing its main module: ask again later
        return None
    return bool(proc.daemon)


def ask(sampler: Sampler, trace_id: int, parent: SpanContext | None, name: str) -> bool:
    """The sampler's decision; False (and counted) when it raises."""
    try:
        return bool(sampler.should_sample(trace_id, parent, name))
    except Exception as exc:
        internal_error(f"sampler {type(sampler).__name__}", exc)
        return False


def hand_built_sampled(s: Span) -> bool:
    """Whether a span built by hand (``Span(...)``) is kept: the rule a traced call in its trace would meet."""
    if not _S.enabled:
        return False
    if _S.force:
        return True
    if s._parent_id is not None:
        # A child of the current span (InferenceSpanBuilder inside a request, say):
        # parent-based, as start() decides for any child.
        ctx = current_span_context()
        if ctx is not None and ctx.trace_id == s._trace_id and ctx.span_id == s._parent_id:
            return ctx.sampled
    sampler = _S.sampler
    return sampler is None or ask(sampler, s._trace_id, None, s._name)


def add_processor(proc: Any) -> None:
    """Start sending finished spans to ``proc`` as well."""
    with _S.lock:
        _S.processors = (*_S.processors, proc)


def remove_processor(proc: Any) -> None:
    """Stop sending finished spans to ``proc``."""
    with _S.lock:
        _S.processors = tuple(p for p in _S.processors if p is not proc)


def get_trace_store() -> TraceStore:
    """The global trace store."""
    return _S.store


def get_config() -> TraceConfig | None:
    """The configuration in force (None before any configure())."""
    return _S.config


def each_within(procs: Iterable[Any], method: str, timeout: float | None) -> bool:
    """Call ``method`` on each processor within one deadline of ``timeout`` seconds; True when every one succeeded.

    Each processor gets what the ones before it left over; past the deadline each
    is still called, with 0 s. A processor that raises is logged and counts as a failure.
    """
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
    ok = True
    for proc in procs:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            ok = bool(getattr(proc, method)(left)) and ok
        except Exception as exc:
            internal_error(f"{type(proc).__name__}.{method}", exc)
            ok = False
    return ok


def flush(timeout: float | None = 5.0) -> bool:
    """Send whatever exporters have queued; True when all of it was delivered within ``timeout`` seconds."""
    return each_within(_S.processors, "force_flush", timeout)
