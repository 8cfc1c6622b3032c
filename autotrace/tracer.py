"""The hot path: starting and ending spans, sampling, and the global state.

Everything here runs on every traced call, so it is written for speed: state
lives in one slotted object read by attribute, ids stay integers, the sampling
decision for a new trace is one comparison of the trace id's low 64 bits with
a precomputed bound, and a finished span is handed over with one deque append.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from . import attributes as _attributes
from . import spans as _spans
from ._errors import is_foreign
from ._limits import LIMITS
from .attributes import SharedAttrs, freeze
from .context import CURRENT, current_span_context
from .spans import (
    _UNSET_STATUS,
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    _Detached,
    _UnsampledRoot,
    continued_trace_id,
)
from .store import TraceStore

if TYPE_CHECKING:
    from .config import TraceConfig
    from .sampling import Sampler

__all__ = ["SpanProcessor", "record_span", "span"]

logger = logging.getLogger("autotrace")

_getrandbits = random.getrandbits
_time_ns = time.time_ns
_new = object.__new__
_cv_get = CURRENT.get
_cv_set = CURRENT.set
_cv_reset = CURRENT.reset
_TWO64 = 1 << 64
_MASK64 = _TWO64 - 1
# The attribute dict of every span() span until its first write (`_owns` False):
# never written to, because Span.set_attribute copies a dict it does not own.
_NO_ATTRS: dict[str, Any] = SharedAttrs()


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
        "resource",
        "ring",
        "sampler",
        "span_limit",
        "worker_flush",
    )

    def __init__(self) -> None:
        self.bound = 0  # roots are sampled when trace_id & (2**64-1) < bound
        self.custom: Sampler | None = None  # a sampler with no root_bound, asked per root
        self.sampler: Sampler | None = None
        self.enabled = True
        self.force = 0  # >0 while capture_spans() is active: sample everything
        self._processors: tuple[Any, ...] = ()
        self.store = TraceStore()
        self.resource: dict[str, Any] = {}
        self.config: TraceConfig | None = None
        self.errors: dict[str, int] = {}
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


_ERRORS_LOCK = threading.Lock()  # taken only on the error path, never on the hot path


def _after_fork_in_child() -> None:
    """New locks in a forked child: a thread of the parent may have held one (configure(), an error)."""
    global _ERRORS_LOCK, _FAST_LIMIT_LOCK
    _ERRORS_LOCK = threading.Lock()
    _FAST_LIMIT_LOCK = threading.Lock()
    _S.lock = threading.RLock()
    _S.worker_flush = None  # a pool worker is told apart again in this process (see _finish)
    # The resource names the process: a forked worker's spans must carry its own pid, not its parent's.
    resource = _S.resource
    if resource and resource.get("process.pid") == os.getppid():
        _S.resource = {**resource, "process.pid": os.getpid()}
    # The store's own hook (store.py, registered first) has just freed its lock:
    # the hot path may append inline again.
    _S._update_fast_limit()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def internal_error(where: str, exc: BaseException | None = None) -> None:
    """Count a failure inside autotrace; log it the first time it happens at ``where``.

    Every broad ``except`` in autotrace ends here, so this is where an exception
    that is not autotrace's own (one a signal handler raised, a KeyboardInterrupt:
    see ``_errors.is_foreign``) is raised again, to reach the host's code. The
    caller has put the context back before calling.
    """
    if exc is not None and is_foreign(exc):
        raise exc
    with _ERRORS_LOCK:  # threads failing at once: count every failure, log the first only
        errors = _S.errors
        count = errors.get(where, 0)
        errors[where] = count + 1
    if count == 0:
        # The exception's own __repr__/__str__ may raise: describe it with safe_str.
        reason = "" if exc is None else f"{type(exc).__qualname__}: {_attributes.safe_str(exc)}"
        try:
            logger.warning("autotrace: %s failed; tracing goes on without it (%s)", where, reason, exc_info=exc)
        except Exception as error:  # a broken logging handler must not break the host either
            if is_foreign(error):
                raise


# -- finishing ------------------------------------------------------------------------


def _finish(span: Span) -> None:
    """Hand a finished sampled span to the store and processors; never raises."""
    try:
        if type(span._attrs) is dict:  # attributes of its own: pack them (see FrozenAttrs)
            span._attrs = freeze(span._attrs)
        # The span's trace buffer was found when the trace's local root started
        # (see store.py): filing the span is one atomic list.append, no lock.
        buf = span._trace
        if buf is None:  # a hand-built span: filed by its trace id
            _S._store.add(span)
        else:
            span._trace = None  # no span <-> buffer reference cycle (see Span.__exit__)
            _S._store._put(buf, span)  # the slot, not the property: this runs per span
        procs = _S._processors  # the slot, not the property: this runs per span
        if procs:
            foreign = None
            for proc in procs:
                try:
                    proc.on_end(span)
                except Exception as exc:
                    if foreign is None and is_foreign(exc):
                        foreign = exc  # raised once every processor has the span
                    else:
                        internal_error(f"span processor {type(proc).__name__}.on_end", exc)
            if foreign is not None:
                raise foreign
            # In a pool worker, the end of a task's outermost local span: nothing
            # current, or only a remote parent (propagation.attach()).
            if _S.worker_flush is not False and _cv_get().__class__ is not Span:
                _flush_in_pool_worker()
    except Exception as exc:  # the store itself broke: drop the span, keep the host alive
        internal_error("trace store", exc)


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


_spans._finish = _finish  # Span.end() hands finished spans here
_spans._S = _S  # Span.__exit__ files a span itself when nothing else is to be done


def _new_span(
    name: str,
    kind: SpanKind,
    attrs: dict[str, Any],
    owns: bool,
    trace_id: int,
    parent_id: int | None,
    trace: list[Any] | None = None,
) -> Span:
    """A started sampled span; ``trace`` is its trace's store buffer (looked up by id if None)."""
    # object.__new__ plus slot stores is cheaper than a keyword __init__ call.
    # Every slot must be stored: an unset slot raises on read.
    s = _new(Span)
    s._name = name
    s._kind = kind
    s._trace_id = trace_id
    s._span_id = _getrandbits(64) or 1
    s._parent_id = parent_id
    # A dict the span does not own is marked by its type (SharedAttrs): copied on first write.
    s._attrs = attrs if owns or type(attrs) is not dict else SharedAttrs(attrs)
    s._extra = None
    s._status = _UNSET_STATUS
    s._token = None
    s._end = None
    s._trace = _S.store._open(trace_id) if trace is None else trace
    s._start = _time_ns()
    return s


def start(
    name: str,
    kind: SpanKind,
    attrs: dict[str, Any],
    owns: bool,
    parent: Span | NonRecordingSpan | SpanContext | int | None,
) -> Span | NonRecordingSpan | int | None:
    """Start a span under ``parent``: a Span when sampled, an int seed for a new
    unsampled trace, a NonRecordingSpan with a span id of its own below an
    unsampled context from elsewhere, or None when the parent is in an
    unsampled trace started here (the caller then runs without a span of its
    own, keeping the parent's context and ids)."""
    if parent is None:
        # One 128-bit draw: its low 64 bits decide sampling (OpenTelemetry's
        # ratio rule) and are all an unsampled trace keeps.
        trace_id = _getrandbits(128) or 1
        lo = trace_id & _MASK64
        if lo >= _S.bound:
            return lo
        custom = _S.custom
        if custom is not None and not _ask(custom, trace_id, None, name):
            return lo
        buf = [trace_id]  # the new trace's store buffer (store.py), opened inline
        try:  # counted even when a signal handler raises just after the append
            _S.ring.append(buf)
        finally:
            next(_S.pushes)
        return _new_span(name, kind, attrs, owns, trace_id, None, buf)
    if parent.__class__ is Span:
        p: Span = parent  # type: ignore[assignment]
        trace = p._trace
        if trace is None:  # ended (its buffer is let go then), or built by hand
            if p._token.__class__ is _Detached and not _hand_built_sampled(p):
                # Its trace is not sampled: record_span() will drop it, so its children go too.
                return _unsampled_child(p.get_span_context())
            trace = _S.store._open(p._trace_id, everywhere=True)
        # p._trace_id as it is: it carries the trace's W3C state, if any (spans._TraceId).
        return _new_span(name, kind, attrs, owns, p._trace_id, p._span_id, trace)
    if parent.__class__ is int or parent.__class__ is _UnsampledRoot:
        # A child in an unsampled trace started here runs without a span of its
        # own: it sends the local root's id, which is ours (W3C asks no more).
        # An id per span needs a ContextVar set per call: measured, such a call
        # then costs 1.7x to 1.9x, and it is the common case (most traces are
        # not sampled).
        return None
    ctx = parent if isinstance(parent, SpanContext) else parent.get_span_context()  # type: ignore[union-attr]
    if not ctx.is_valid:
        return start(name, kind, attrs, owns, None)
    if not _parent_sampled(ctx, name):
        return _unsampled_child(ctx)
    # The trace's W3C state (tracestate, random flag) rides on the trace id
    # object, down to every span below this one (spans._TraceId).
    tid = continued_trace_id(ctx.trace_id, ctx.trace_state, ctx.random)
    s = _new_span(name, kind, attrs, owns, tid, ctx.span_id)
    if ctx.is_remote:
        s._remote_parent = True  # OTLP span flags say so
    return s


def _unsampled_child(ctx: SpanContext) -> NonRecordingSpan:
    """A non-recording span below ``ctx`` (unsampled) with a span id of its own, as OpenTelemetry makes.

    W3C: a service taking part in a trace sends its own span id as parent-id,
    sampled or not; trace state and random flag are the trace's and go on.
    """
    return NonRecordingSpan(SpanContext(ctx.trace_id, _getrandbits(64) or 1, False, False, ctx.trace_state, ctx.random))


def _ask(sampler: Sampler, trace_id: int, parent: SpanContext | None, name: str) -> bool:
    try:
        return bool(sampler.should_sample(trace_id, parent, name))
    except Exception as exc:
        internal_error(f"sampler {type(sampler).__name__}", exc)
        return False


def _parent_sampled(ctx: SpanContext, name: str) -> bool:
    if not _S.enabled:
        return False
    if _S.force:
        return True
    if not ctx.is_remote:
        return ctx.sampled
    sampler = _S.sampler
    return ctx.sampled if sampler is None else _ask(sampler, ctx.trace_id, ctx, name)


# -- span() ---------------------------------------------------------------------------


def span(
    name: str,
    *,
    kind: SpanKind | str = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    parent: Span | NonRecordingSpan | SpanContext | None = None,
    links: Sequence[Link | SpanContext] | None = None,
) -> Span | NonRecordingSpan:
    """A span to use as ``with span(...) as s`` or ``async with span(...) as s``.

    It is a child of the current span, or of ``parent`` when given (a span or a
    context from ``autotrace.propagation.extract``). Entering makes it current;
    leaving ends it, recording an exception that escapes. Unsampled traces get
    a non-recording span that still carries ids.
    """
    try:
        if kind.__class__ is not SpanKind:
            kind = _kind(kind)
        # A str name's length is not checked here (~25 ns of a ~900 ns block):
        # a long one is cut when it is read (Span.name) and encoded (otlp).
        if name.__class__ is not str:
            name = _attributes.clean_name(name)
        cur = _cv_get() if parent is None else parent
        # The two common cases inline (a child of a sampled span, a new root),
        # the rest through start(). The span is built here, as _new_span does
        # (a call saved is ~5% of a `with span()` block). It starts with the
        # shared empty dict (copied on its first write): no dict per span.
        if cur.__class__ is Span and cur._trace is not None:
            tid = cur._trace_id
            pid = cur._span_id
            buf = cur._trace
        elif cur is None and not _S.custom:
            tid = _getrandbits(128) or 1  # the low 64 bits decide sampling, as in start()
            lo = tid & _MASK64
            if lo >= _S.bound:
                return _UnsampledRoot(lo)
            pid = None
            buf = [tid]  # the new trace's store buffer (store.py), opened inline
            try:  # counted even when a signal handler raises just after the append
                _S.ring.append(buf)
            finally:
                next(_S.pushes)
        else:
            result = start(name, kind, _NO_ATTRS, False, cur)
            if result.__class__ is not Span:
                return _non_recording(cur, result)
            return _with_extras(result, attributes, links)  # type: ignore[arg-type]
        s = _new(Span)
        s._name = name
        s._kind = kind
        s._trace_id = tid
        s._span_id = _getrandbits(64) or 1
        s._parent_id = pid
        s._attrs = _NO_ATTRS
        s._extra = None
        s._status = _UNSET_STATUS
        s._token = None
        s._end = None
        s._trace = buf
        s._start = _time_ns()
        if attributes or links:
            return _with_extras(s, attributes, links)
        return s
    except Exception as exc:
        internal_error("span()", exc)
        return NonRecordingSpan()


def _kind(kind: Any) -> SpanKind:
    """``kind`` as a SpanKind; INTERNAL (logged once) for a value that names none, so the trace stays whole."""
    try:
        return SpanKind.coerce(kind)
    except ValueError as exc:
        internal_error("span(kind=)", exc)
        return SpanKind.INTERNAL


def _with_extras(s: Span, attributes: Mapping[str, Any] | None, links: Sequence[Link | SpanContext] | None) -> Span:
    if attributes:
        s.set_attributes(attributes)
    if links:
        for link in links:
            s.add_link(link)
    return s


def _non_recording(cur: Any, result: Any) -> NonRecordingSpan:
    """The non-recording span of span() for an unsampled start() result."""
    if result.__class__ is int:  # a new unsampled trace: its seed
        return _UnsampledRoot(result)
    if result is not None:  # start() made it, with a span id of its own
        return result  # type: ignore[no-any-return]
    # In an unsampled trace started here: the ids of the span above, in an
    # object of its own (each `with` keeps its own token).
    return _UnsampledRoot(cur if cur.__class__ is int else cur._seed)


def _hand_built_sampled(s: Span) -> bool:
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
    return sampler is None or _ask(sampler, s._trace_id, None, s._name)


def record_span(s: Span) -> bool:
    """Store a hand-built span if its trace is sampled; True when it was stored.

    An open span is ended now. The decision is the same one a traced call in
    that trace would get (ratio rule on the trace id, or forced by capture_spans).
    """
    try:
        if not isinstance(s, Span):
            raise TypeError(f"record_span takes a Span; got {type(s).__name__}")
        if not isinstance(s._token, _Detached):
            s.end()  # made by span()/@traced: already sampled, stored once when it ends
            return True
        if not _hand_built_sampled(s):
            return False
        s._token = None
        if s._end is None:
            end = _time_ns()
            s._end = end if end >= s._start else s._start
        _finish(s)
        return True
    except TypeError:
        raise
    except Exception as exc:
        internal_error("record_span", exc)
        return False


# -- configuration -----------------------------------------------------------------------


def apply_config(config: TraceConfig) -> TraceStore:
    """Install ``config``: sampler, limits, resource, store and exporters."""
    global _rate_said
    with _S.lock:
        old_store = _S.store
        old_processors = [p for p in _S.processors if not getattr(p, "_autotrace_capture", False)]
        captures = [p for p in _S.processors if getattr(p, "_autotrace_capture", False)]
        store = TraceStore(config.max_traces, max_spans_per_trace=config.max_spans_per_trace)
        processors = [_processor_for(e) for e in config.exporters]
        LIMITS.max_attributes = config.max_attributes
        LIMITS.max_events = config.max_events
        LIMITS.max_links = config.max_links
        LIMITS.max_attribute_length = config.max_attribute_length
        LIMITS.max_spans_per_trace = config.max_spans_per_trace
        _rate_said = False  # the new rule is logged at the next root span
        LIMITS.max_name_length = config.max_name_length
        LIMITS.max_sequence_length = config.max_sequence_length
        _S.config = config
        _S.resource = config.resource()
        _S.enabled = config.enabled
        _S.sampler = config.make_sampler()
        _S.store = store
        # Nothing already recorded is lost by reconfiguring: once installed, the
        # new store takes over the old one's trace buffers (traces still open
        # keep filling them), and again at each read for any late arrival.
        store._adopt(old_store)
        _S.processors = tuple(processors + captures)
        _update_bound()
    for proc in old_processors:
        if proc in processors:  # passed to configure() again: still in use
            continue
        try:
            proc.shutdown(5.0)
        except Exception as exc:
            internal_error("shutting down an old exporter", exc)
    return store


def _processor_for(exporter: Any) -> Any:
    if hasattr(exporter, "on_end"):
        return exporter
    from .export import BatchSpanProcessor

    return BatchSpanProcessor(exporter)


def _update_bound() -> None:
    sampler = _S.sampler
    bound = getattr(sampler, "root_bound", None)
    _S.custom = None
    if not _S.enabled:
        _S.bound = 0
    elif _S.force:
        _S.bound = _TWO64
    elif bound is None:
        _S.bound = _TWO64  # every root goes on to ask the custom sampler
        _S.custom = sampler
    else:
        _S.bound = bound
    if _S.enabled and not _S.force and not _rate_said and sampler is not None:
        # The first root span takes the custom-sampler path (no cost on the hot path
        # afterwards): it logs the sampling rule once, then puts the fast path back.
        _S.bound = _TWO64
        _S.custom = _FirstRoot(_S.custom or sampler)


_rate_said = False  # the first root span since configure() has logged the sampling rule


class _FirstRoot:
    """The sampler for the first root span after configure(): says at DEBUG what is sampled, then steps aside."""

    __slots__ = ("sampler",)

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def should_sample(self, trace_id: int, parent: SpanContext | None, name: str) -> bool:
        """The wrapped sampler's decision; the first call logs it with the rule in force."""
        global _rate_said
        sampled = _ask(self.sampler, trace_id, parent, name)
        with _S.lock:
            if _S.custom is not self:  # another thread was first, or configure() ran meanwhile
                return sampled
            _rate_said = True
            _update_bound()
        bound = getattr(self.sampler, "root_bound", None)
        if bound is None:
            rule = f"new traces are sampled by {_attributes.safe_str(self.sampler)}"
        else:
            rate = bound / _TWO64
            rule = f"recording {rate * 100:.4g}% of new traces (sample rate {rate:.4g})"
        try:
            logger.debug(
                "autotrace: %s; AUTOTRACE_SAMPLE_RATE or configure(sample_rate=...) sets it; the first root span %r "
                "was %s",
                rule,
                name,
                "sampled" if sampled else "not sampled",
            )
        except Exception as error:  # a broken logging handler must not break the host
            if is_foreign(error):
                raise
        return sampled


def add_processor(proc: Any) -> None:
    """Start sending finished spans to ``proc`` as well."""
    with _S.lock:
        _S.processors = (*_S.processors, proc)


def remove_processor(proc: Any) -> None:
    """Stop sending finished spans to ``proc``."""
    with _S.lock:
        _S.processors = tuple(p for p in _S.processors if p is not proc)


def force_sampling(delta: int) -> None:
    """Raise or lower the count of active capture_spans() blocks."""
    with _S.lock:
        _S.force = max(0, _S.force + delta)
        _update_bound()


def get_trace_store() -> TraceStore:
    """The global trace store."""
    return _S.store


def get_config() -> TraceConfig | None:
    """The configuration in force (None before any configure())."""
    return _S.config


def resource_attributes() -> dict[str, Any]:
    """The resource attributes in force."""
    if not _S.resource:
        from .config import TraceConfig

        _S.resource = TraceConfig().resource()
    return _S.resource


def errors() -> dict[str, int]:
    """Failures inside autotrace so far, by where they happened."""
    return dict(_S.errors)


def _time_left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (0 once it passed); None for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def flush(timeout: float | None = 5.0) -> bool:
    """Send whatever exporters have queued; True when all of it was delivered within ``timeout`` seconds."""
    # One deadline for all: each processor gets what the ones before it left over.
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
    ok = True
    for proc in _S.processors:
        try:
            ok = bool(proc.force_flush(_time_left(deadline))) and ok
        except Exception as exc:
            internal_error(f"{type(proc).__name__}.force_flush", exc)
            ok = False
    return ok


def shutdown(timeout: float | None = 5.0) -> bool:
    """Flush and stop every exporter; spans still go to the in-memory store afterwards."""
    with _S.lock:
        procs = [p for p in _S.processors if not getattr(p, "_autotrace_capture", False)]
        _S.processors = tuple(p for p in _S.processors if getattr(p, "_autotrace_capture", False))
    # One deadline for all; past it, each processor is still told to stop (with 0 s to do so).
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
    ok = True
    for proc in procs:
        try:
            ok = bool(proc.shutdown(_time_left(deadline))) and ok
        except Exception as exc:
            internal_error(f"{type(proc).__name__}.shutdown", exc)
            ok = False
    return ok
