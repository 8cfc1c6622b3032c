"""The hot path: starting spans (``start``, ``span()``) and recording hand-built ones.

Everything here runs on every traced call, so it is written for speed: state
lives in one slotted object read by attribute (``_state._S``), ids stay
integers, the sampling decision for a new trace is one comparison of the trace
id's low 64 bits with a precomputed bound, and a finished span is handed over
with one deque append. Lifecycle (configure, flush, shutdown) is in
``provider``; the names it and ``_state`` own are re-exported here, their old home.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from . import _current, _resource, _state
from . import attributes as _attributes
from ._errors import errors as errors
from ._errors import internal_error as internal_error
from ._errors import logger as logger
from ._metrics import M as _M
from ._metrics import series as _series
from ._model import Link, SpanContext, SpanKind, _Detached, continued_trace_id
from ._state import _S, ask
from ._state import WORKER_FLUSH_TIMEOUT as WORKER_FLUSH_TIMEOUT
from ._state import SpanProcessor as SpanProcessor
from ._state import add_processor as add_processor
from ._state import flush as flush
from ._state import get_config as get_config
from ._state import get_trace_store as get_trace_store
from ._state import hand_built_sampled as _hand_built_sampled
from ._state import remove_processor as remove_processor
from ._tail import TailSampling, joining
from .attributes import SharedAttrs
from .context import CURRENT
from .provider import apply_config as apply_config
from .provider import force_sampling as force_sampling
from .provider import shutdown as shutdown
from .spans import ENDED, NonRecordingSpan, Span, _TimedSpan, _UnsampledRoot, record_hand_built

_BY_NAME_GET = _M.by_name.get

__all__ = ["SpanProcessor", "record_span", "span"]

# Names whose home moved (the `X as X` imports above too), kept here for code that reads them here.
current_span_context = _current.current_span_context
resource_attributes = _resource.current
_finish = _state.finish

_getrandbits = random.getrandbits
_time_ns = time.time_ns
_new = object.__new__
_cv_get = CURRENT.get
_MASK64 = (1 << 64) - 1
# The attribute dict of every span() span until its first write (a SharedAttrs):
# never written to, because Span.set_attribute copies a dict it does not own.
_NO_ATTRS: dict[str, Any] = SharedAttrs()
_PROVISIONAL: list[Any] = []  # the placeholder buffer of a provisional root, replaced by TailSampling.root


def _new_span(
    name: str,
    kind: SpanKind,
    attrs: dict[str, Any],
    trace_id: int,
    parent_id: int | None,
    trace: list[Any] | None = None,
) -> Span:
    """A started sampled span; ``trace`` is its trace's store buffer (looked up by id if None).

    The one canonical way a sampled span is made. ``span()`` and the sync
    ``@traced`` wrapper (decorators.py) inline these slot stores for speed;
    tests/test_span_paths.py checks every path sets every slot.
    """
    # object.__new__ plus slot stores is cheaper than a keyword __init__ call.
    # Every slot must be stored: an unset slot raises on read.
    s = _new(Span)
    s._name = name
    s._kind = kind
    s._trace_id = trace_id
    s._sid = _getrandbits(64) or 1
    s._parent_id = parent_id
    # Shared with the caller until written: marked by its type (SharedAttrs), copied on first write.
    s._attr_data = attrs if type(attrs) is not dict else SharedAttrs(attrs)
    s._extra = None
    s._token = None
    s._t1 = None
    s._trace = _S.store._open(trace_id) if trace is None else trace
    s._t0 = _time_ns()
    return s


def start(
    name: str,
    kind: SpanKind,
    attrs: dict[str, Any],
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
        if custom is not None:
            # Tail sampling with a ratio head rule sends every root here (provider._update_bound).
            sampled = lo < custom.bound if custom.__class__ is TailSampling else ask(custom, trace_id, None, name)
            if not sampled:
                tail = _S.tail
                if tail is None:
                    return lo
                # Recorded provisionally: kept at its end if it fails or runs slow (_tail.py).
                return tail.root(_new_span(name, kind, attrs, trace_id, None, _PROVISIONAL))
        return _new_span(name, kind, attrs, trace_id, None, _S._store._new_trace(trace_id))
    if parent.__class__ is Span:
        p: Span = parent  # type: ignore[assignment]
        trace = p._trace
        if trace is None:  # ended (its buffer is let go then), or built by hand
            if p._token.__class__ is _Detached and not _hand_built_sampled(p):
                # Its trace is not sampled: record_span() will drop it, so its children go too.
                return _unsampled_child(p.get_span_context())
            trace = _S.store._open(p._trace_id, everywhere=True)
        # p._trace_id as it is: it carries the trace's W3C state, if any (spans._TraceId).
        s = _new_span(name, kind, attrs, p._trace_id, p._span_id, trace)
        (p if p._t1 is None else ENDED)._attr0 = s  # its open parent's latest child: /inflight's chain
        return s
    if parent.__class__ is int or parent.__class__ is _UnsampledRoot:
        # A child in an unsampled trace started here runs without a span of its
        # own: it sends the local root's id, which is ours (W3C asks no more).
        # An id per span needs a ContextVar set per call: measured, such a call
        # then costs 1.7x to 1.9x, and it is the common case (most traces are
        # not sampled).
        return None
    ctx = parent if isinstance(parent, SpanContext) else parent.get_span_context()  # type: ignore[union-attr]
    if not ctx.is_valid:
        return start(name, kind, attrs, None)
    if not _parent_sampled(ctx, name):
        if not ctx.is_remote and _S.enabled:
            buf = joining(ctx.trace_id)
            if buf is not None:  # the context of an open provisional trace (tail sampling): joins it
                return _new_span(name, kind, attrs, buf[0], ctx.span_id, buf)
        tail = _S.tail
        if tail is not None and tail.keep_errors and ctx.is_remote and _S.enabled:
            # The caller decided not to sample; the local part is kept only if it fails (_tail.py).
            tid = continued_trace_id(ctx.trace_id, ctx.trace_state, ctx.random)
            s = tail.root(_new_span(name, kind, attrs, tid, ctx.span_id, _PROVISIONAL), ctx.span_id)
            s._remote_parent = True
            return s
        return _unsampled_child(ctx)
    # The trace's W3C state (tracestate, random flag) rides on the trace id
    # object, down to every span below this one (spans._TraceId).
    tid = continued_trace_id(ctx.trace_id, ctx.trace_state, ctx.random)
    s = _new_span(name, kind, attrs, tid, ctx.span_id)
    if ctx.is_remote:
        s._remote_parent = True  # OTLP span flags say so
    return s


def _unsampled_child(ctx: SpanContext) -> NonRecordingSpan:
    """A non-recording span below ``ctx`` (unsampled) with a span id of its own, as OpenTelemetry makes.

    W3C: a service taking part in a trace sends its own span id as parent-id,
    sampled or not; trace state and random flag are the trace's and go on.
    """
    return NonRecordingSpan(SpanContext(ctx.trace_id, _getrandbits(64) or 1, False, False, ctx.trace_state, ctx.random))


def _parent_sampled(ctx: SpanContext, name: str) -> bool:
    if not _S.enabled:
        return False
    if _S.force:
        return True
    if not ctx.is_remote:
        return ctx.sampled
    sampler = _S.sampler
    return ctx.sampled if sampler is None else ask(sampler, ctx.trace_id, ctx, name)


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
            pid = cur._sid or cur._span_id  # (the property when it is being packed by its end in another thread)
            buf = cur._trace
        elif cur is None and not _S.custom:
            tid = _getrandbits(128) or 1  # the low 64 bits decide sampling, as in start()
            lo = tid & _MASK64
            if lo >= _S.bound:
                # Built as _UnsampledRoot(lo) is, inline: a Python __init__ call
                # is ~1/10 of an unsampled block. Every slot is stored.
                r = _new(_UnsampledRoot)
                r._seed = lo
                r._token = None
                r._t0 = 0
                if _M.on:  # timed, and listed by /inflight while open
                    kinds = _BY_NAME_GET(name)  # the series by name, then kind (as Span.__exit__ reads it)
                    h = None if kinds is None else kinds[kind]
                    r._series = _series(name, kind) if h is None else h
                    r._root = name
                else:
                    r._series = None
                    r._root = None
                return r
            pid = None
            # The new trace's store buffer, opened inline as TraceStore._new_trace does
            # (room for one span: see store.py).
            buf = [tid, None]
            buf.pop()
            try:  # counted even when a signal handler raises just after the append
                _S.ring.append(buf)
            finally:
                next(_S.pushes)
        else:
            result = start(name, kind, _NO_ATTRS, cur)
            if result.__class__ is not Span:
                nr = _non_recording(cur, result)
                if _M.on:  # timed: a child in an unsampled trace, a root, or below a remote unsampled parent
                    if nr.__class__ is NonRecordingSpan:
                        nr = _TimedSpan(nr._context)
                    if isinstance(nr, _TimedSpan):
                        nr._series = _series(name, kind)
                        # A root: a new trace, or a remote parent's child (a request from elsewhere).
                        # (None: a child in an unsampled trace started here, never remote.)
                        nr._root = name if result.__class__ is int or (result is not None and _is_remote(cur)) else None
                return nr
            return _with_extras(result, attributes, links)  # type: ignore[arg-type]
        s = _new(Span)
        s._name = name
        s._kind = kind
        s._trace_id = tid
        s._sid = _getrandbits(64) or 1
        s._parent_id = pid
        s._attr_data = _NO_ATTRS
        s._extra = None
        s._token = None
        s._t1 = None
        s._trace = buf
        s._t0 = _time_ns()
        # A child links itself as its open parent's latest child: /inflight's chain (_inflight.py),
        # in one statement (see spans.ENDED).
        if pid is not None:
            (cur if cur._t1 is None else ENDED)._attr0 = s  # type: ignore[union-attr]
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


def _is_remote(parent: Any) -> bool:
    """Whether ``parent`` is a context from another process (its child is a local root)."""
    if isinstance(parent, SpanContext):
        return parent.is_remote
    get = getattr(parent, "get_span_context", None)
    return bool(get is not None and get().is_remote)


def _non_recording(cur: Any, result: Any) -> NonRecordingSpan:
    """The non-recording span of span() for an unsampled start() result."""
    if result.__class__ is int:  # a new unsampled trace: its seed
        return _UnsampledRoot(result)
    if result is not None:  # start() made it, with a span id of its own
        return result  # type: ignore[no-any-return]
    # In an unsampled trace started here: the ids of the span above, in an
    # object of its own (each `with` keeps its own token).
    return _UnsampledRoot(cur if cur.__class__ is int else cur._seed)


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
        return record_hand_built(s)
    except TypeError:
        raise
    except Exception as exc:
        internal_error("record_span", exc)
        return False
