"""Span and NonRecordingSpan: recording one timed operation (the value types are in _model).

A `Span` keeps its ids as integers and its attributes as the dict it was given
until somebody writes to it; hex strings and copies are made only when asked
for (see `trace_id`, `span_id`, `set_attribute`), which keeps the hot path free
of formatting and allocation.
"""

from __future__ import annotations

import contextvars
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _inflight, _secrets, _stacktrace
from . import attributes as _attributes
from ._current import CURRENT
from ._errors import internal_error as _internal_error
from ._errors import reraise_foreign
from ._inflight import ROOTS_PRUNE_AT as _ROOTS_PRUNE_AT
from ._inflight import prune as _prune_roots
from ._limits import LIMITS
from ._metrics import FOLD_AT as _FOLD_AT
from ._metrics import M as _M
from ._metrics import failed as _failed
from ._metrics import observe_span as _observe_span

# The value types live in _model; their old import path (autotrace.spans) keeps working.
from ._model import _UNSET_STATUS as _UNSET_STATUS
from ._model import DETACHED as DETACHED
from ._model import INVALID_SPAN_CONTEXT as INVALID_SPAN_CONTEXT
from ._model import Link, SpanContext, SpanEvent, SpanKind, Status, StatusCode, unsampled_context
from ._model import _Detached as _Detached
from ._model import _TraceId as _TraceId
from ._model import continued_trace_id as continued_trace_id
from ._model import new_span_id as new_span_id
from ._model import new_trace_id as new_trace_id
from ._model import parse_id as _parse_id
from ._model import trace_state_of as trace_state_of
from ._state import _S, hand_built_sampled
from ._state import finish as _finish
from ._tail import KEPT, _Provisional, joining, share
from .attributes import FrozenAttrs
from .attributes import pack as _pack

__all__ = [
    "INVALID_SPAN_CONTEXT",
    "Link",
    "NonRecordingSpan",
    "Span",
    "SpanContext",
    "SpanEvent",
    "SpanKind",
    "Status",
    "StatusCode",
]

_time_ns = time.time_ns
_MASK64 = (1 << 64) - 1
_pc = time.perf_counter_ns
_BY_NAME_GET = _M.by_name.get
_cv_set = CURRENT.set
_cv_reset = CURRENT.reset
_Token = contextvars.Token
# /inflight's list of open roots, and its methods bound once. (Not imported by
# name: Python 3.11 looks up `imported_name.method` as a plain attribute, a bound
# method object made on every call, ~1/10 of a `with span()` block.)
_ROOTS = _inflight.ROOTS
_ROOTS_APPEND = _ROOTS.append
_ROOTS_POP = _ROOTS.pop


# `@span("x")` over a function is a common first guess (OpenTelemetry's
# start_as_current_span is both): say what to write instead of "not callable".
_NOT_A_DECORATOR = (
    "span() is a context manager, not a decorator: write `with span(name):` around a block, "
    "or use @traced(name) to trace every call of a function"
)


def _not_a_decorator(self: Any, *args: Any, **kwargs: Any) -> Any:
    raise TypeError(_NOT_A_DECORATOR)


def _nanos(value: Any, where: str) -> int:
    """A time in unix nanoseconds from user code; now (and logged once) for one that is not a number."""
    try:
        if isinstance(value, bool):
            raise TypeError("a bool is not a time")
        return _in_range(int(value))
    except (TypeError, ValueError, OverflowError) as exc:
        _internal_error(where, exc)
        return _time_ns()


def _in_range(nanos: int) -> int:
    """A time held to OTLP's fixed64 (0 .. 2**64-1): one outside would make collectors refuse the whole request."""
    return nanos if 0 <= nanos <= _MASK64 else (0 if nanos < 0 else _MASK64)


def _as_link(link: Link | SpanContext | Span | NonRecordingSpan) -> Link:
    if isinstance(link, Link):
        return link._replace(context=_link_context(link.context))
    if isinstance(link, SpanContext):
        return Link(_link_context(link))
    if isinstance(link, (Span, NonRecordingSpan)):
        return Link(link.get_span_context())
    raise TypeError(f"a link must be a Link, SpanContext or Span; got {type(link).__name__}")


def _link_context(ctx: Any) -> SpanContext:
    """A linked context as OTLP can carry it; TypeError for one that cannot be (a bad id or trace state).

    SpanContext is a plain tuple: kept unchecked, an id past its width or a
    trace state that is not text would make every export holding the span fail.
    """
    if not isinstance(ctx, SpanContext):
        raise TypeError(f"a Link's context must be a SpanContext; got {type(ctx).__name__}")
    tid, sid, state = ctx.trace_id, ctx.span_id, ctx.trace_state
    if not (isinstance(tid, int) and not isinstance(tid, bool) and 0 <= tid < 1 << 128):
        raise TypeError(f"a linked trace_id must be an int of 128 bits; got {tid!r:.60}")
    if not (isinstance(sid, int) and not isinstance(sid, bool) and 0 <= sid <= _MASK64):
        raise TypeError(f"a linked span_id must be an int of 64 bits; got {sid!r:.60}")
    if not isinstance(state, str):
        raise TypeError(f"a linked trace_state must be a str; got {type(state).__name__}")
    return SpanContext(int(tid), int(sid), bool(ctx.sampled), bool(ctx.is_remote), str.__str__(state), bool(ctx.random))


def _exception_attributes(exc: BaseException, escaped: bool | None) -> dict[str, Any]:
    # The message is bounded and the stack text made once per exception object
    # however many spans it leaves (see _stacktrace).
    type_name = _stacktrace.type_name(exc)
    message = _stacktrace.message(exc)
    attrs: dict[str, Any] = {
        "exception.type": type_name,
        "exception.message": message,
        "exception.stacktrace": _stacktrace.stacktrace(exc, type_name, message),
    }
    if escaped is not None:
        attrs["exception.escaped"] = escaped
    return attrs


def _is_cancellation(exc: BaseException) -> bool:
    """An asyncio cancellation (asyncio is not imported for this: without it there is none)."""
    aio = sys.modules.get("asyncio")
    return aio is not None and isinstance(exc, aio.CancelledError)


def _status_description(exc: BaseException, message: str | None = None) -> str:
    if message is None:
        message = _secrets.redact_text(_stacktrace.message(exc))
    return f"{type(exc).__qualname__}: {message}"


class _Extra:
    """The parts of a span most spans never use (kept out of Span's own slots)."""

    __slots__ = ("dropped", "events", "links", "origin", "remote_parent", "status")

    def __init__(self) -> None:
        self.status: Status = _UNSET_STATUS  # set by set_status() and failures: most spans never are
        self.dropped: list[int] | None = None
        self.events: list[SpanEvent] | None = None
        self.links: list[Link] | None = None
        self.remote_parent = False  # the parent came from another process (OTLP span flags)
        # The resource and scope of a span received from elsewhere (an otlp.Origin); None: this process's.
        self.origin: Any = None


class _Ended:
    """Where a child starting below a parent that has ended writes its link (see Span.__slots__): nowhere."""

    __slots__ = ()

    @property
    def _attr0(self) -> None:
        return None

    @_attr0.setter
    def _attr0(self, child: Any) -> None:
        pass


# A child links itself in one statement, `(parent if parent._t1 is None else ENDED)._attr0 = child`:
# one line, so no tracer's line event (a debugger, coverage) can run between the check and the
# store, and the parent's end in another thread cannot pack an attribute value in `_attr0` there
# for the child to overwrite. (Two lines, `if ...:` then the store, let a trace function switch
# threads in between.)
ENDED = _Ended()


class Span:
    """One timed operation in a trace, with attributes, events, links and a status.

    Made by ``span()`` and ``@traced``; can also be built by hand and stored with
    ``autotrace.record_span(Span("name", attributes={...}))``. Ids are integers
    inside and hex strings outside. Writes after ``end()`` are ignored, as in
    OpenTelemetry.
    """

    # Slots keep a span small (the store holds many) and attribute access fast.
    # `_attr_data` may be a dict shared with the decorator that made the span, or
    # the one shared empty dict of span() (a SharedAttrs); it is copied on the
    # first write. `_trace` is the store buffer of the span's trace (store.py):
    # a finished span appends itself there.
    # The rarely used parts (events, links, dropped counts, a remote parent, a
    # status other than UNSET) live in one `_extra` object, None for most spans:
    # five slots fewer on every span.
    # A trace state travels on `_trace_id` itself (see _TraceId).
    # A span's own attribute dict is packed when it ends (attributes.pack): up
    # to three values go in `_attr0`..`_attr2` and `_attr_data` keeps the keys
    # tuple (shared by every span that set the same keys); more go in a
    # FrozenAttrs. A 3-item dict is 184 bytes, a FrozenAttrs of 3 values 80;
    # three slots are 24, set only when used. `_attrs` reads any of these as a mapping.
    # While the span is open, `_attr0` holds its latest started child (set by the
    # child as it starts, while the span is open, see ENDED): /inflight follows these
    # links from a root down to the innermost open span (_inflight.py). The span's
    # end lets it go (packing writes over it, or None): a parent in the store must not
    # keep alive a child dropped past max_spans_per_trace, nor make a reference cycle
    # (child -> its token -> parent) with a child left entered.
    # The span id, start and end are `_sid`, `_t0` and `_t1` (read them as
    # `_span_id`, `_start`, `_end`). The same pack folds the three 64-bit ints
    # (36 bytes each) into one, in `_t1` (52 bytes), and sets `_sid` and `_t0`
    # to None: packed <=> `_t0 is None`. `_t1 is None` still says "open".
    __slots__ = (
        "_attr0",
        "_attr1",
        "_attr2",
        "_attr_data",
        "_extra",
        "_kind",
        "_name",
        "_parent_id",
        "_sid",
        "_t0",
        "_t1",
        "_token",
        "_trace",
        "_trace_id",
    )

    # A dict (own), a SharedAttrs (shared until written), a FrozenAttrs or a keys tuple (packed, ended).
    _attr_data: Any
    _attr0: Any
    _attr1: Any
    _attr2: Any
    _extra: _Extra | None
    _kind: SpanKind
    _name: str
    _parent_id: int | None
    _sid: int | None  # the span id; None once packed into _t1
    _t0: int | None  # the start; None once packed into _t1
    _t1: int | None  # the end (None while open), or span id, start and end packed
    _token: Any
    _trace: list[Any] | None
    _trace_id: int

    def __init__(
        self,
        name: str,
        *,
        attributes: Mapping[str, Any] | None = None,
        kind: SpanKind | str = SpanKind.INTERNAL,
        trace_id: int | str | None = None,
        span_id: int | str | None = None,
        parent_span_id: int | str | None = None,
        start_time_unix_nano: int | None = None,
        end_time_unix_nano: int | None = None,
        links: Sequence[Link | SpanContext] | None = None,
    ) -> None:
        self._name = _attributes.clean_name(name)
        self._kind = SpanKind.coerce(kind)
        self._trace_id = _parse_id(trace_id, 128, "trace_id") if trace_id is not None else new_trace_id()
        self._sid = _parse_id(span_id, 64, "span_id") if span_id is not None else new_span_id()
        self._parent_id = _parse_id(parent_span_id, 64, "parent_span_id") if parent_span_id is not None else None
        self._t0 = _in_range(int(start_time_unix_nano)) if start_time_unix_nano is not None else _time_ns()
        self._t1 = None
        self._attr_data = {}
        self._extra = None
        self._token = DETACHED  # stored by record_span(), not by end()
        self._trace = None  # the store files it by trace id when it is recorded
        if attributes:
            self.set_attributes(attributes)
        if links:
            for link in links:
                self.add_link(link)
        if end_time_unix_nano is not None:
            self._t1 = max(_in_range(int(end_time_unix_nano)), self._t0)

    # -- the folded fields (see __slots__), readable and writable by name -------------

    @property
    def _attrs(self) -> Any:
        """The attributes as a mapping: a dict, a SharedAttrs or a FrozenAttrs (made here for packed ones)."""
        data = self._attr_data
        if data.__class__ is tuple:  # packed in place (attributes.pack): the keys; the values in slots
            n = len(data)
            if n == 3:
                return FrozenAttrs((data, self._attr0, self._attr1, self._attr2))
            if n == 2:
                return FrozenAttrs((data, self._attr0, self._attr1))
            if n == 1:
                return FrozenAttrs((data, self._attr0))
            return FrozenAttrs((data,))
        return data

    @_attrs.setter
    def _attrs(self, value: Any) -> None:
        self._attr_data = value

    @property
    def _span_id(self) -> int:
        sid = self._sid
        if sid is not None:
            return sid
        packed: int = self._t1  # type: ignore[assignment]  # packed: never None
        return packed >> 128

    @_span_id.setter
    def _span_id(self, value: int) -> None:
        self._unpack()
        self._sid = value

    @property
    def _start(self) -> int:
        start = self._t0
        if start is not None:
            return start
        packed: int = self._t1  # type: ignore[assignment]  # packed: never None
        return (packed >> 64) & _MASK64

    @_start.setter
    def _start(self, value: int) -> None:
        self._unpack()
        self._t0 = value

    @property
    def _end(self) -> int | None:
        end = self._t1
        if end is None or end <= _MASK64:
            return end
        # Above 64 bits: packed, unless an end given by hand was that large (then _t0 is set).
        return end & _MASK64 if self._t0 is None else end

    @_end.setter
    def _end(self, value: int | None) -> None:
        self._unpack()
        self._t1 = value

    def _unpack(self) -> None:
        """Undo the packing of span id, start and end (before one of them is written)."""
        try:
            if self._t0 is not None:
                return
        except AttributeError:  # a span being built slot by slot: nothing packed yet
            return
        packed: int = self._t1  # type: ignore[assignment]  # packed: never None
        self._sid = packed >> 128
        self._t0 = (packed >> 64) & _MASK64
        self._t1 = packed & _MASK64

    @property
    def _status(self) -> Status:
        extra = self._extra
        return _UNSET_STATUS if extra is None else extra.status

    @_status.setter
    def _status(self, value: Status) -> None:
        if value is _UNSET_STATUS:
            try:
                if self._extra is None:
                    return  # what a span without an extra part reads already
            except AttributeError:  # a span being built slot by slot, _extra not stored yet
                self._extra = None
                return
        self._extra_for_write().status = value

    @property
    def _events(self) -> list[SpanEvent] | None:
        extra = self._extra
        return None if extra is None else extra.events

    @_events.setter
    def _events(self, value: list[SpanEvent] | None) -> None:
        self._extra_for_write().events = value

    @property
    def _links(self) -> list[Link] | None:
        extra = self._extra
        return None if extra is None else extra.links

    @_links.setter
    def _links(self, value: list[Link] | None) -> None:
        self._extra_for_write().links = value

    @property
    def _dropped(self) -> list[int] | None:
        extra = self._extra
        return None if extra is None else extra.dropped

    @_dropped.setter
    def _dropped(self, value: list[int] | None) -> None:
        self._extra_for_write().dropped = value

    @property
    def _trace_state(self) -> str:
        return trace_state_of(self._trace_id)[0]

    @_trace_state.setter
    def _trace_state(self, value: str) -> None:
        self._trace_id = continued_trace_id(self._trace_id, value, trace_state_of(self._trace_id)[1])

    @property
    def _remote_parent(self) -> bool:
        extra = self._extra
        return False if extra is None else extra.remote_parent

    @_remote_parent.setter
    def _remote_parent(self, value: bool) -> None:
        if value or self._extra is not None:
            self._extra_for_write().remote_parent = value

    def _extra_for_write(self) -> _Extra:
        extra = self._extra
        if extra is None:
            extra = self._extra = _Extra()
        return extra

    # -- identity -----------------------------------------------------------------

    @property
    def name(self) -> str:
        """The span's name (at most ``max_name_length`` characters)."""
        name = self._name
        limit = LIMITS.max_name_length
        return name if len(name) <= limit else name[:limit]

    @property
    def trace_id(self) -> str:
        """The trace id: 32 lower-case hex characters."""
        return self._trace_id.to_bytes(16, "big").hex()

    @property
    def span_id(self) -> str:
        """The span id: 16 lower-case hex characters."""
        return self._span_id.to_bytes(8, "big").hex()

    @property
    def parent_span_id(self) -> str | None:
        """The parent's span id in hex, or None for a root span."""
        p = self._parent_id
        return None if p is None else p.to_bytes(8, "big").hex()

    @property
    def kind(self) -> SpanKind:
        """The SpanKind."""
        return self._kind

    @property
    def is_recording(self) -> bool:
        """True until the span ends; writes are kept only while recording."""
        return self._t1 is None

    @property
    def is_sampled(self) -> bool:
        """The head sampling decision: False only in a trace recorded provisionally by tail sampling."""
        return self._trace.__class__ is not _Provisional

    def get_span_context(self) -> SpanContext:
        """The ids and flags to propagate to children and other services."""
        tid = self._trace_id
        # A trace recorded provisionally (tail sampling) propagates its head decision: not sampled.
        sampled = self._trace.__class__ is not _Provisional
        if not sampled:  # a span started from this context (another thread, say) joins the trace
            share(self._trace)  # type: ignore[arg-type]
        if tid.__class__ is int:
            return SpanContext(tid, self._span_id, sampled, False, "", True)
        state, random = trace_state_of(tid)
        return SpanContext(int(tid), self._span_id, sampled, False, state, random)

    # -- time ---------------------------------------------------------------------

    @property
    def start_time_unix_nano(self) -> int:
        """Start time, nanoseconds since the epoch."""
        return self._start

    @property
    def end_time_unix_nano(self) -> int | None:
        """End time, nanoseconds since the epoch, or None while the span is open."""
        return self._end

    @property
    def duration_ns(self) -> int | None:
        """End minus start in nanoseconds (never negative), or None while open."""
        end = self._end
        return None if end is None else max(0, end - self._start)

    # -- content ------------------------------------------------------------------

    @property
    def attributes(self) -> Mapping[str, Any]:
        """The span's attributes (read-only view; write with set_attribute)."""
        return _attributes.ReadOnlyDict(self._attrs)

    @property
    def events(self) -> tuple[SpanEvent, ...]:
        """The span's events, oldest first."""
        return tuple(self._events) if self._events else ()

    @property
    def links(self) -> tuple[Link, ...]:
        """The span's links."""
        return tuple(self._links) if self._links else ()

    @property
    def status(self) -> Status:
        """The span's Status (code and, for ERROR, description)."""
        return self._status

    @property
    def dropped_attributes_count(self) -> int:
        """Attributes refused because the span was at its attribute limit."""
        return self._dropped[0] if self._dropped else 0

    @property
    def dropped_events_count(self) -> int:
        """Events refused because the span was at its event limit."""
        return self._dropped[1] if self._dropped else 0

    @property
    def dropped_links_count(self) -> int:
        """Links refused because the span was at its link limit."""
        return self._dropped[2] if self._dropped else 0

    def _drop(self, index: int) -> None:
        if self._dropped is None:
            self._dropped = [0, 0, 0]
        self._dropped[index] += 1

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute; values are coerced to OpenTelemetry types, never raised on."""
        if self._t1 is not None:
            return
        attrs = self._attr_data
        if type(attrs) is not dict:  # shared with its decorator (or packed by a racing end): copy on first write
            attrs = self._attr_data = dict(attrs if attrs.__class__ is not tuple else self._attrs)
        if not _attributes.put(attrs, key, value, LIMITS):
            self._drop(0)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set several attributes at once."""
        try:
            items = list(attributes.items())
        except Exception as exc:
            reraise_foreign(exc)
            if isinstance(exc, AttributeError) and not hasattr(type(attributes), "items"):
                # A list of pairs, a set...: name the mistake once (counted) rather than drop them silently.
                exc = TypeError(f"attributes must be a mapping such as a dict; got {type(attributes).__name__}")
            _internal_error("set_attributes", exc)
            return
        for key, value in items:
            self.set_attribute(key, value)

    def add_event(
        self,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Add a timestamped event (time in unix nanoseconds; now by default)."""
        if self._t1 is not None:
            return
        events = self._events
        if events is None:
            events = self._events = []
        if len(events) >= LIMITS.max_events:
            self._drop(1)
            return
        attrs, dropped = _attributes.clean(attributes, LIMITS)
        when = _time_ns() if timestamp is None else _nanos(timestamp, "add_event(timestamp=)")
        events.append(SpanEvent(_attributes.clean_name(name), attrs, when, dropped))

    def add_link(
        self, link: Link | SpanContext | Span | NonRecordingSpan, attributes: Mapping[str, Any] | None = None
    ) -> None:
        """Link this span to another span context."""
        if self._t1 is not None:
            return
        try:
            lk = _as_link(link)
        except TypeError as exc:  # counted as a link refused, as over the limit
            _internal_error("add_link", exc)
            self._drop(2)
            return
        if attributes:
            lk = lk._replace(attributes=attributes)
        attrs, dropped = _attributes.clean(lk.attributes, LIMITS)
        lk = Link(lk.context, attrs, dropped)
        links = self._links
        if links is None:
            links = self._links = []
        if len(links) >= LIMITS.max_links:
            self._drop(2)
            return
        links.append(lk)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool | None = None,
    ) -> None:
        """Add an ``exception`` event with type, message and stacktrace."""
        if self._t1 is not None:
            return
        attrs = _exception_attributes(exception, escaped)
        _secrets.redact_exception_attributes(attrs)  # messages often hold a URL with a key, or a connection string
        if attributes:
            attrs.update(attributes)
        self.add_event("exception", attrs, timestamp)

    def set_status(self, status: Status | StatusCode | str, description: str | None = None) -> None:
        """Set the status; a description is kept only with ERROR, and OK is final."""
        if self._t1 is not None:
            return
        given: Any = status
        if isinstance(given, Status):
            # A plain tuple: its code is checked as a bare one is (Status("x") would fail every export).
            given, description = given.code, given.description
        if isinstance(given, str):
            try:
                code = StatusCode[given.upper()]
            except KeyError:
                return
        else:
            try:
                code = StatusCode(given)
            except (ValueError, TypeError):
                return
        if self._status.code == StatusCode.OK:
            return  # OpenTelemetry: OK is final
        if code == StatusCode.UNSET:
            return
        if code != StatusCode.ERROR:
            description = None
        elif description is not None:
            description = _attributes.safe_str(description)[: _stacktrace.MAX_MESSAGE]
        self._status = Status(code, description)

    def _fail(self, exc: BaseException, escaped: bool = True) -> None:
        """Record an exception leaving the span and mark it ERROR; a cancellation is no error."""
        if _is_cancellation(exc):
            # As OpenTelemetry does: a cancelled operation did not fail, its status stays UNSET.
            text = _stacktrace.message(exc) if exc.args else ""
            self.add_event("cancelled", {"exception.message": text} if text else None)
            return
        message = None
        if self._t1 is None:
            # _secrets is imported with this module, not lazily here: importlib swallows an OSError
            # (a signal handler's TimeoutError) raised while it looks for a module on disk.
            attrs = _exception_attributes(exc, escaped)
            _secrets.redact_exception_attributes(attrs)  # messages often hold a URL with a key
            message = attrs["exception.message"]  # str(exc) once for the event and the status
            self.add_event("exception", attrs)
        if self._status.code != StatusCode.OK:
            self._status = Status(StatusCode.ERROR, _status_description(exc, message))

    def update_name(self, name: str) -> None:
        """Rename the span."""
        if self._t1 is None:
            self._name = _attributes.clean_name(name)

    def end(self, end_time: int | None = None) -> None:
        """End the span (idempotent) and hand it to the store and exporters."""
        if self._t1 is not None:
            return
        end = _time_ns() if end_time is None else _nanos(end_time, "end(end_time=)")
        start: int = self._t0  # type: ignore[assignment]  # open: not packed
        self._t1 = end if end >= start else start
        if not isinstance(self._token, _Detached):
            _finish(self)

    # -- context manager (span() returns a Span) -------------------------------------

    if not TYPE_CHECKING:  # hidden from type checkers, which report `@span(...)` already
        __call__ = _not_a_decorator

    def __enter__(self) -> Span:
        # The common case inline (a span fresh from span()), the rest in _enter:
        # a method call saved on each side of a `with` block is ~10% of its cost.
        # (A try block costs nothing until something is raised.)
        # A local root (no parent, or one from another process): listed by
        # /inflight while open (ended ones are pruned there).
        if self._parent_id is None or (self._extra is not None and self._extra.remote_parent):
            _ROOTS_APPEND(self)
            if len(_ROOTS) > _ROOTS_PRUNE_AT:
                _prune_roots()
        if self._token is None:
            try:
                self._token = _cv_set(self)
            except BaseException:  # a signal handler raised between the set and the store
                _undo_enter(self)
                raise
        else:
            _enter(self)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        token = self._token
        if _ROOTS and (self._parent_id is None or (self._extra is not None and self._extra.remote_parent)):
            # Most often the root leaving is the last one listed: take it out now
            # (pop, then put back what another thread appended since), so an ended
            # root is not kept alive until the next prune.
            try:
                last = _ROOTS_POP()
                if last is not self:
                    _ROOTS_APPEND(last)
            except IndexError:  # emptied meanwhile by a prune in another thread
                pass
        if exc is None and token.__class__ is _Token:
            try:
                self._token = None
                _cv_reset(token)
            except BaseException as error:
                # Left in another context than it was entered in (ValueError), or
                # a signal handler raised here: the general path restores the
                # context and ends the span; the handler's exception goes on.
                self._token = token
                _exit(self, None)
                reraise_foreign(error)
                return
            if self._t1 is None:
                end = _time_ns()
                start: int = self._t0  # type: ignore[assignment]  # open: not packed
                if end < start:  # (a wall clock set back)
                    end = start
                self._t1 = end
                # tracer._finish inline for the common case (a call saved):
                # room in the trace's buffer and no processors to tell.
                if type(self._attr_data) is dict:  # its own attributes: pack them
                    _pack(self)
                else:  # its latest child, linked while it was open (see __slots__): let go with it
                    self._attr0 = None
                buf = self._trace
                if buf is not None and len(buf) <= _S.fast_limit:
                    # Drop the span's link to the buffer that now holds it:
                    # span -> buffer -> span would be a reference cycle, and
                    # every evicted trace would wait for the cyclic collector.
                    self._trace = None
                    buf.append(self)
                    if _M.on:  # the metrics (_finish records them on the other branch), inline
                        h = _BY_NAME_GET(self._name)
                        if h is not None:
                            h = h[self._kind]  # (SpanKind values are 1..5)
                        if h is None or self._extra is not None:  # (a status, events...: the general path)
                            _observe_span(self)
                        else:
                            h.append(end - start)
                            if len(h) > _FOLD_AT:
                                h.fold()
                else:
                    _finish(self)
        else:
            _exit(self, exc)

    async def __aenter__(self) -> Span:
        _enter(self)
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        _exit(self, exc)

    def __repr__(self) -> str:
        return (
            f"Span(name={self._name!r}, trace_id={self.trace_id}, span_id={self.span_id}, "
            f"parent_span_id={self.parent_span_id}, kind={self._kind.name}, "
            f"status={self._status.code.name})"
        )

    def to_dict(self) -> dict[str, Any]:
        """The span as one OTLP/JSON ``Span`` object."""
        from .otlp import encode_span

        return encode_span(self)


class NonRecordingSpan:
    """A span that records nothing but carries ids, so propagation still works.

    Returned for unsampled traces and by ``current_span()`` outside any span.
    Every write is accepted and ignored.
    """

    __slots__ = ("_context", "_token")

    def __init__(self, context: SpanContext = INVALID_SPAN_CONTEXT) -> None:
        self._context = context
        self._token: Any = None

    name = ""
    kind = SpanKind.INTERNAL
    parent_span_id = None
    start_time_unix_nano = 0
    end_time_unix_nano = None
    duration_ns = None
    attributes: Mapping[str, Any] = _attributes.ReadOnlyDict({})
    events: tuple[SpanEvent, ...] = ()
    links: tuple[Link, ...] = ()
    status = _UNSET_STATUS
    is_recording = False
    dropped_attributes_count = dropped_events_count = dropped_links_count = 0

    @property
    def is_sampled(self) -> bool:
        """The sampled flag this span propagates."""
        return self._context.sampled

    @property
    def trace_id(self) -> str:
        """The trace id in hex (all zeros when there is no trace)."""
        return self._context.trace_id_hex

    @property
    def span_id(self) -> str:
        """The span id in hex (all zeros when there is no trace)."""
        return self._context.span_id_hex

    @property
    def _trace_id(self) -> int:
        return self._context.trace_id

    @property
    def _span_id(self) -> int:
        return self._context.span_id

    def get_span_context(self) -> SpanContext:
        """The ids and flags to propagate."""
        return self._context

    def set_attribute(self, key: str, value: Any) -> None:
        """Ignored."""

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Ignored."""

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None) -> None:
        """Ignored."""

    def add_link(
        self, link: Link | SpanContext | Span | NonRecordingSpan, attributes: Mapping[str, Any] | None = None
    ) -> None:
        """Ignored."""

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool | None = None,
    ) -> None:
        """Ignored."""

    def set_status(self, status: Status | StatusCode | str, description: str | None = None) -> None:
        """Ignored."""

    def update_name(self, name: str) -> None:
        """Ignored."""

    def end(self, end_time: int | None = None) -> None:
        """Ignored."""

    if not TYPE_CHECKING:  # hidden from type checkers, which report `@span(...)` already
        __call__ = _not_a_decorator

    def __enter__(self) -> NonRecordingSpan:
        if self._token is None:
            try:
                self._token = _cv_set(self)
            except BaseException:  # as in Span.__enter__
                _undo_enter(self)
                raise
        else:
            _enter(self)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        token = self._token
        if token.__class__ is _Token:
            try:
                self._token = None
                _cv_reset(token)
                return
            except BaseException as error:  # as in Span.__exit__
                self._token = token
                _exit(self, exc)
                reraise_foreign(error)
                return
        _exit(self, exc)

    async def __aenter__(self) -> NonRecordingSpan:
        _enter(self)
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        _exit(self, exc)

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        c = self._context
        return f"NonRecordingSpan(trace_id={c.trace_id_hex}, span_id={c.span_id_hex}, sampled={c.sampled})"


class _TimedSpan(NonRecordingSpan):
    """A non-recording span of ``span()``, timed for the metrics (set ``_series``), a root listed by /inflight."""

    __slots__ = ("_root", "_series", "_t0")

    def __init__(self, context: SpanContext = INVALID_SPAN_CONTEXT) -> None:
        self._context = context
        self._token = None
        self._series: Any = None  # set by span(): its metrics series (None: not timed)
        self._root: str | None = (
            None  # a local root's name (listed by /inflight while open; the series may be "_other")
        )
        self._t0 = 0

    # Timed as a sampled span is (metrics over every span, sampled or not); a
    # root is listed by /inflight while open. NonRecordingSpan's enter and exit,
    # inline (a method call each way is a tenth of an unsampled block).

    def __enter__(self) -> NonRecordingSpan:
        if self._series is not None:
            self._t0 = _pc()
            if self._root is not None:
                _ROOTS_APPEND(self)
                if len(_ROOTS) > _ROOTS_PRUNE_AT:
                    _prune_roots()
        if self._token is None:
            try:
                self._token = _cv_set(self)
            except BaseException:  # as in Span.__enter__
                _undo_enter(self)
                raise
        else:
            _enter(self)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        token = self._token
        if token.__class__ is _Token:
            try:
                self._token = None
                _cv_reset(token)
            except BaseException as error:  # as in Span.__exit__
                self._token = token
                _exit(self, exc)
                self._series = None
                reraise_foreign(error)
                return
        else:
            _exit(self, exc)
        # After the context is back (a signal handler raising here leaves nothing current behind).
        h = self._series
        if h is not None:
            self._series = None  # once per span, if it is left twice (and no longer open for /inflight)
            if self._root is not None:  # taken out of /inflight's list now, as Span.__exit__ does: no prune needed
                try:
                    last = _ROOTS_POP()
                    if last is not self:
                        _ROOTS_APPEND(last)
                except IndexError:  # emptied meanwhile by a prune in another thread
                    pass
            if _M.on:
                d = _pc() - self._t0
                h.append(d if exc is None else _failed(d, exc))
                if len(h) > _FOLD_AT:
                    h.fold()

    async def __aenter__(self) -> NonRecordingSpan:
        self.__enter__()
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)


class _UnsampledRoot(_TimedSpan):
    """The span of a new unsampled trace from ``span()``: only the trace id's low 64 bits.

    Its ids are derived from that seed (``context.unsampled_context``) only when
    somebody asks for them, so an unsampled ``with span()`` costs no more than
    an object and a ContextVar set and reset.
    """

    __slots__ = ("_seed",)

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._token = None
        self._series = None
        self._root = None
        self._t0 = 0

    @property
    def _context(self) -> SpanContext:  # type: ignore[override]  # shadows the base slot: computed, never stored
        return unsampled_context(self._seed)


def _enter(s: Span | NonRecordingSpan) -> None:
    """Make ``s`` current; the token to undo it is kept on the span."""
    before = CURRENT.get()
    try:
        prev = s._token
        held = prev.token if prev.__class__ is _Detached else prev
        if held.__class__ is _Token and before is s:
            return  # entered again while current (`with s: with s:`): the first token restores the context
        token = _cv_set(s)
        s._token = _Detached(token) if isinstance(prev, _Detached) else token
    except BaseException as exc:
        if before is not s and CURRENT.get() is s:  # set, but the token never stored: undo it here
            _cv_set(before)
        _internal_error("span enter", exc)  # raises it again unless it is autotrace's own failure


def _undo_enter(s: Span | NonRecordingSpan) -> None:
    """Undo a fast-path enter that a signal handler's exception cut short (never raises).

    The exception came after ContextVar.set, before its token was kept: the
    value before is gone with the token, so the context goes back to the span's
    parent as a context (its ids), or to nothing for a root.
    """
    if CURRENT.get() is not s:
        return
    token = s._token
    if token.__class__ is _Token:
        s._token = None
        _cv_reset(token)
        return
    if s.__class__ is Span:
        parent = s._parent_id  # type: ignore[union-attr]
        _cv_set(None if parent is None else NonRecordingSpan(SpanContext(s._trace_id, parent, True)))
    elif s.__class__ is _UnsampledRoot:
        _cv_set(None)
    # Any other non-recording span carries its parent's ids already: leaving it current changes nothing.


def _exit(s: Span | NonRecordingSpan, exc: BaseException | None) -> None:
    """Undo ``_enter``, record an escaping exception and end the span; never raises."""
    try:
        token = s._token
        detached = isinstance(token, _Detached)
        if detached:
            token = token.token  # type: ignore[union-attr]
        s._token = DETACHED if detached else None
        if token is not None:
            try:
                _cv_reset(token)
            except ValueError:  # left in another context than it was entered in
                if CURRENT.get() is s:  # yet current here (a generator resumed elsewhere): undo it all the same
                    old = token.old_value
                    _cv_set(None if old is contextvars.Token.MISSING else old)
            except RuntimeError:  # used already: reset just before a signal handler raised (Span.__exit__)
                pass
        if s.__class__ is Span:
            try:
                if exc is not None:
                    s._fail(exc)  # type: ignore[union-attr]
            finally:  # ended and stored even when a signal handler raises while the exception is recorded
                if detached:
                    record_hand_built(s)  # type: ignore[arg-type]
                else:
                    s.end()
    except Exception as error:
        _internal_error("span exit", error)  # raises it again unless it is autotrace's own failure


def record_hand_built(s: Span) -> bool:
    """File a span built by hand (``Span(...)``) if its trace is sampled; True when filed.

    Ended now if still open. The rule is the one a traced call in its trace would meet.
    Left out by the head sample with tail sampling on, it goes with its trace,
    recorded provisionally: a root alone is kept (True) if it failed or ran slow; a
    child is kept or discarded with its trace, and False is returned (not stored now).
    """
    filed = hand_built_sampled(s)
    buf = None
    if not filed:
        buf = _provisional_trace_of(s)
        if buf is None:
            return False
        s._trace = buf  # filed in its trace's provisional buffer when it ends (_tail.py)
    s._token = None
    if s._t1 is None:
        end = _time_ns()
        start: int = s._t0  # type: ignore[assignment]  # open: not packed
        s._t1 = end if end >= start else start
    _finish(s)
    return filed or (buf is not None and s._parent_id is None and buf.state == KEPT)


def _provisional_trace_of(s: Span) -> _Provisional | None:
    """The provisional trace (tail sampling) a hand-built span belongs to: a new one for a root, else its parent's."""
    if not _S.enabled:
        return None
    if s._parent_id is None:  # a trace of its own: decided as it is filed
        tail = _S.tail
        return None if tail is None else tail.open(s._trace_id)
    cur = CURRENT.get()
    if (
        cur.__class__ is Span
        and cur._trace.__class__ is _Provisional
        and cur._trace_id == s._trace_id
        and cur._span_id == s._parent_id
    ):
        return cur._trace  # type: ignore[no-any-return]
    return joining(s._trace_id)  # a parent given by its context (see _tail.share)
