"""Tail sampling: traces the head sample left out, recorded provisionally and kept when they fail or run slow.

With ``keep_errors`` or ``keep_slower_than`` configured, a new trace that the
head sample does not pick is still recorded, into a buffer of its own (a
``_Provisional``, never in the store's ring), as a child of the trace's local
root would be. Its spans are real spans; nothing outside sees them (store,
``/traces``, exporters) until the local root ends. Then the trace is kept whole
(its buffer goes into the store's ring and every span to the processors, once)
when a span in it ended with status ERROR or an ``exception`` event, or the
root lasted longer than ``keep_slower_than``; otherwise it is discarded.

How the hot path reaches this without a branch of its own: every span of a
provisional trace points at the buffer (``Span._trace``), as spans of a sampled
trace point at theirs, and the buffer's ``__len__`` answers "full", so the
inline filing of ``span()`` and ``@traced`` (``len(buf) <= fast_limit``) always
falls through to ``_state.finish``, which hands the span here. The buffer's
list length (``list.__len__``) is its real size. After the decision the buffer
is emptied and stays as a husk that says what was decided: a span of the trace
that ends later (a task outliving its root) is filed in the kept trace or
dropped and counted, and ``get_span_context()`` still reports the head decision
(sampled flag 0) for every span of the trace.

The common case decides without coming here: a ``@traced`` root (decorators.py,
the plain-function wrapper) that ends fast and fine while its trace is
``touched`` by nothing else (no span of it ended, no context handed out) is
discarded in its wrapper, as ``decide`` would: state DISCARDED, counted, its
duration into the metrics as a sampled root's (no ``_state.finish``, no
``__len__``, no lock). A span of the trace sets ``touched`` first thing as it
ends and then reads the state; the root sets the state and then reads
``touched`` again: one of the two sees the other (the span is then dropped,
counted, or let go with the trace by ``let_go``). Every other root goes
through ``_state.finish`` to ``decide``.

Memory: spans held in open provisional traces are counted; past
``max_provisional_spans`` the oldest open provisional traces are discarded, down
to 7/8 of it (their spans let go at once), counted and logged once. One trace holds at most
``max_spans_per_trace`` of them (more are dropped, counted).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from ._current import CURRENT
from ._model import StatusCode
from .attributes import freeze

if TYPE_CHECKING:
    from .spans import Span
    from .store import TraceStore

__all__ = ["TailSampling", "stats"]

_logger = logging.getLogger("autotrace")

KEPT_ATTRIBUTE = "autotrace.sampling.kept"
DEFAULT_MAX_PROVISIONAL_SPANS = 100_000  # ~100 concurrent requests of ~1,000 spans

# States of a provisional trace: open, then decided (or evicted at the cap while open).
OPEN, KEPT, DISCARDED, EVICTED = 0, 1, 2, 3
_FULL = sys.maxsize  # what len() of a provisional buffer answers: never filed inline
_ERROR = StatusCode.ERROR
_list_len = list.__len__


class _Counts:
    """Process-wide counts of tail sampling decisions (read through ``stats()``).

    The decisions are counted with ``itertools.count`` (one atomic C call, no
    lock: a lock taken per root would cost more than the rest of the decision).
    """

    __slots__ = (
        "discarded",
        "dropped_spans",
        "evicted",
        "interrupted",
        "kept_error",
        "kept_slow",
        "open_spans",
        "opened",
        "warned",
    )

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Zero every count (in place: ``@traced`` keeps this object; see decide_alone)."""
        self.kept_error = itertools.count()
        self.kept_slow = itertools.count()
        self.discarded = itertools.count()
        self.evicted = itertools.count()  # discarded while open, to stay within max_provisional_spans
        self.dropped_spans = itertools.count()  # spans of a trace decided already, or past a trace's limit
        self.interrupted = itertools.count()  # decisions a signal handler's exception cut short: trace let go
        self.opened = itertools.count(1)  # provisional traces started (the held count is recounted every RECOUNT)
        self.open_spans = 0  # spans held now in open provisional traces (each root counts one; see _recount)
        self.warned = False


def _value(counter: itertools.count[int]) -> int:
    # itertools.count shows its next value in its repr; reading it must not advance it.
    return int(repr(counter)[6:-1])


COUNTS = _Counts()
_OPEN: dict[int, _Provisional] = {}  # open provisional traces by id(), oldest first (an int hashes fastest)
_LOCK = threading.Lock()  # eviction, and a span of a trace being kept (never taken for a discarded root)
RECOUNT = 1024  # provisional traces started between two exact counts of the spans held
# Open provisional traces whose context was handed out (get_span_context: use_span(ctx),
# span(parent=ctx) in another thread, inject), by trace id: a span started from that
# context joins the trace, as it would join a sampled one. At most SHARED_MAX, oldest out.
_SHARED: dict[int, _Provisional] = {}
SHARED_MAX = 4096


def _after_fork_in_child() -> None:
    """In a forked child: a new lock, and the parent's open provisional traces let go but the forking thread's.

    A thread of the parent may have held the lock (a decision, an eviction). The
    traces other threads of the parent had open can never end here (those threads
    do not exist in the child): held, they would take room under the cap and show
    in ``open_traces`` for good. They are the parent's to decide, and not counted here.
    """
    global _LOCK
    _LOCK = threading.Lock()
    mine = getattr(CURRENT.get(), "_trace", None)  # the trace the forking thread is in goes on
    for buf in list(_OPEN.values()):
        if buf is not mine:
            del _OPEN[id(buf)]
            buf.state = EVICTED
            del buf[1:]
    for tid, buf in list(_SHARED.items()):
        if buf is not mine:
            del _SHARED[tid]
            buf.shared = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def stats() -> dict[str, int]:
    """Tail sampling counters: traces kept by reason, discarded, evicted at the cap; what is held now."""
    c = COUNTS
    return {
        "kept_error": _value(c.kept_error),
        "kept_slow": _value(c.kept_slow),
        "discarded": _value(c.discarded),
        "evicted": _value(c.evicted),
        "dropped_spans": _value(c.dropped_spans),
        "interrupted": _value(c.interrupted),
        "open_traces": len(_OPEN),
        "open_spans": _recount(),
    }


def reset() -> None:
    """Zero the counters and forget every open provisional trace (tests): their roots then decide nothing."""
    with _LOCK:
        for buf in list(_OPEN.values()):
            buf.state = EVICTED
            del buf[1:]
        _OPEN.clear()
        _SHARED.clear()
        COUNTS.clear()


def _recount() -> int:
    """The spans held in open provisional traces, counted exactly (the running count drifts between threads)."""
    with _LOCK:
        held = sum(_list_len(buf) for buf in list(_OPEN.values()))
        COUNTS.open_spans = held
        return held


class _Provisional(list):  # type: ignore[type-arg]
    """The buffer of one provisional trace: ``[trace_id, span, ...]`` as a store buffer, plus its state."""

    __slots__ = ("error", "kept", "listed", "parent", "sampling", "shared", "state", "touched")

    error: bool  # a span of the trace ended failed (set as it ended, filed or dropped past the limit)
    kept: list[Any]  # the store buffer of a kept trace (set only then)
    listed: bool  # in _OPEN: it holds finished spans, counted against max_provisional_spans
    parent: int | None  # the local root's parent span id: None, or a remote caller's
    shared: bool  # in _SHARED: its context was handed out (see share)
    sampling: TailSampling
    state: int
    # Anything but its root happened to it: a span of the trace ended (filed or dropped), or its
    # context was handed out. Until then its root may decide alone (see decide_alone).
    touched: bool

    def __len__(self) -> int:
        # "Full": span() and @traced then file through _state.finish, which hands the span here.
        return _FULL


def share(buf: _Provisional) -> None:
    """Let spans started from the context of this open provisional trace join it (see ``joining``)."""
    if buf.shared or buf.state != OPEN:
        return
    buf.touched = True
    buf.shared = True
    _SHARED[int(buf[0])] = buf
    if len(_SHARED) > SHARED_MAX:
        try:  # the oldest out (its trace goes on; a span started from its context then records nothing)
            oldest = _SHARED.pop(next(iter(_SHARED)))
        except (StopIteration, RuntimeError, KeyError):  # changed meanwhile by another thread
            return
        oldest.shared = False


def joining(trace_id: int) -> _Provisional | None:
    """The open provisional trace a span started from a context of ``trace_id`` joins, if any."""
    buf = _SHARED.get(trace_id)
    return buf if buf is not None and buf.state == OPEN else None


def _unshare(buf: _Provisional) -> None:
    """Its trace is decided (or evicted): spans started from its context record nothing more."""
    buf.shared = False
    if _SHARED.get(int(buf[0])) is buf:
        _SHARED.pop(int(buf[0]), None)


def let_go(buf: _Provisional) -> None:
    """A root that decided alone (see the module's docstring) finds its trace touched just then: nothing left held."""
    _OPEN.pop(id(buf), None)  # listed by a span of the trace ending in another thread meanwhile
    if buf.shared:
        _unshare(buf)
    del buf[1:]


def _failed(s: Span) -> bool:
    """Whether a span ended with status ERROR or carries an exception event."""
    if s._status.code is _ERROR:
        return True
    extra = s._extra
    if extra is not None and extra.events:
        return any(e.name == "exception" for e in extra.events)
    return False


class TailSampling:
    """The tail sampling rule in force: what keeps a trace, and the head rule it catches the leftovers of."""

    __slots__ = ("bound", "fast_ns", "keep_errors", "max_spans", "per_trace", "slow_ns")

    def __init__(
        self, keep_errors: bool, keep_slower_than: float | None, max_spans: int, per_trace: int = 10_000
    ) -> None:
        self.keep_errors = keep_errors
        self.slow_ns = None if keep_slower_than is None else int(keep_slower_than * 1e9)
        # The longest a root may last and not be slow (one int compare at the root's end).
        self.fast_ns = sys.maxsize if self.slow_ns is None else self.slow_ns
        self.max_spans = max_spans
        self.per_trace = per_trace
        # The head rule, when it is a ratio (provider._update_bound): a root is
        # sampled when its trace id's low 64 bits are below this.
        self.bound = 1 << 64

    def should_sample(self, trace_id: int, parent: Any, name: str) -> bool:
        """The head decision (what the trace's traceparent says)."""
        return (trace_id & 0xFFFFFFFFFFFFFFFF) < self.bound

    def __repr__(self) -> str:
        rate = self.bound / float(1 << 64)
        return f"TailSampling(head rate {rate:.4g}, keep_errors={self.keep_errors}, slow_ns={self.slow_ns})"

    def open(self, trace_id: int, parent: int | None = None) -> _Provisional:
        """The buffer of a new provisional trace; ``parent`` is a remote caller's span id, if any."""
        buf = _Provisional()  # then append: ~40 ns less than _Provisional((trace_id,))
        buf.append(trace_id)
        buf.sampling = self
        buf.state = OPEN
        buf.parent = parent
        buf.error = False
        buf.shared = False
        buf.touched = False
        # Listed in _OPEN (and counted) once it holds a span: a root that ends alone costs no more.
        buf.listed = False
        return buf

    def root(self, span: Span, parent: int | None = None) -> Span:
        """Make ``span`` (just built, not yet current) the local root of a new provisional trace."""
        span._trace = self.open(span._trace_id, parent)
        return span

    def _trim(self) -> None:
        """Count the spans held exactly; past the cap, discard the oldest open traces (logged once)."""
        held = _recount()
        if held <= self.max_spans:
            return
        c = COUNTS
        # Down to 7/8 of the cap, not just below it: the exact count above walks every open
        # trace, so it then runs once per max_spans/8 spans filed at the cap, not once per span
        # (with 10,000 open traces of one span each, that made filing a span ~100x dearer).
        target = self.max_spans - self.max_spans // 8
        with _LOCK:
            while held > target and _OPEN:
                try:
                    oldest = next(iter(_OPEN.values()))
                except (StopIteration, RuntimeError):  # emptied or changed meanwhile by another thread
                    break
                if _OPEN.pop(id(oldest), None) is None:  # its root ended meanwhile: decided there
                    continue
                held -= _list_len(oldest)  # its spans, and one for its open root
                oldest.state = EVICTED
                if oldest.shared:
                    _unshare(oldest)
                del oldest[1:]
                next(c.evicted)
            c.open_spans = held
        if not c.warned:
            c.warned = True
            _logger.warning(
                "autotrace: open provisional traces (tail sampling) reached max_provisional_spans=%d spans; "
                "the oldest are discarded and counted in stats()['tail_sampling']['evicted']",
                self.max_spans,
            )

    # -- a span of a provisional trace ends (from _state.finish) ----------------------------

    def end(self, span: Span, buf: _Provisional, store: TraceStore) -> list[Span]:
        """File a finished span of a provisional trace; the spans that the processors must now receive."""
        if span._parent_id == buf.parent:  # the local root: decide
            return self.decide(span, buf, store)
        if buf.state == OPEN:
            buf.touched = True  # first: a root deciding alone meanwhile then finds it (see decide_alone)
            if _list_len(buf) > self.per_trace:
                next(COUNTS.dropped_spans)
                if _failed(span):
                    buf.error = True
                return []
            if span._status.code is _ERROR or (span._extra is not None and _failed(span)):
                buf.error = True  # noted as it ends: the decision at the root reads one flag
            list.append(buf, span)  # atomic: no lock (see _keep for a decision meanwhile)
            c = COUNTS
            held = c.open_spans = c.open_spans + 1
            if not buf.listed:  # its first finished span: the trace now holds memory
                # In _OPEN before it says so: a root deciding meanwhile in another thread reads
                # "listed" as "in _OPEN unless evicted", and would take it for evicted.
                _OPEN[id(buf)] = buf
                buf.listed = True
                held = c.open_spans = c.open_spans + 1  # its root, held by the running code meanwhile
                if not next(c.opened) % RECOUNT:
                    held = self.max_spans + 1  # recount now and then: the running count drifts between threads
            if buf.state == OPEN:
                if held > self.max_spans:
                    self._trim()
                return []
            # Decided between the two reads of the state: the keeper may not have taken it.
            with _LOCK:
                # Listed just above, after the decision looked: not left behind (evicted later as if open).
                _OPEN.pop(id(buf), None)
                try:
                    buf.remove(span)
                except ValueError:  # taken with the rest of the kept trace
                    return []
        if buf.state == KEPT:
            # A span ending after its trace was kept (a task outliving the root): filed with it.
            kept = buf.kept
            span._trace = None
            store._put(kept, span)
            return [span]
        next(COUNTS.dropped_spans)  # its trace was discarded already
        return []

    def decide(self, root: Span, buf: _Provisional, store: TraceStore) -> list[Span]:
        """The local root ended: keep the trace (into ``store``, returned for the processors) or let it go."""
        try:
            return self._decide(root, buf, store)
        except BaseException:
            # A signal handler's exception (KeyboardInterrupt, a deadline's TimeoutError) cut the
            # decision short. It goes on, but the trace is not left in between: held by nothing,
            # neither filed nor counted.
            _settle(root, buf, store)
            raise

    def _decide(self, root: Span, buf: _Provisional, store: TraceStore) -> list[Span]:
        if buf.shared:  # decided now: a span started from its context no longer joins it
            _unshare(buf)
        if buf.state != OPEN or (buf.listed and _OPEN.pop(id(buf), None) is None):
            return []  # evicted at the cap (counted then)
        n = _list_len(buf)
        if buf.listed:
            COUNTS.open_spans -= n
        reason = None
        if self.keep_errors and (
            buf.error or root._status.code is _ERROR or (root._extra is not None and _failed(root))
        ):
            reason = "error"
        slow = self.slow_ns
        # Not for a remote caller's trace: it decided not to sample; only a failure overrides that.
        if reason is None and slow is not None and buf.parent is None and (root._end or 0) - root._start > slow:
            reason = "slow"
        if reason is None:
            buf.state = DISCARDED
            if buf.listed:  # listed by a span of the trace ending in another thread just now: not left behind
                _OPEN.pop(id(buf), None)
                del buf[1:]
            next(COUNTS.discarded)
            return []
        return self._keep(root, buf, store, reason)

    def _keep(self, root: Span, buf: _Provisional, store: TraceStore, reason: str) -> list[Span]:
        """File a kept trace in ``store`` as one buffer, as a sampled trace's; the spans for the processors."""
        _mark(root, reason)
        kept: list[Any] = [buf[0]]
        with _LOCK:  # see end(): a span appended meanwhile is taken here or finds itself left and is filed late
            _OPEN.pop(id(buf), None)  # listed by a span ending in another thread just now: not left behind
            buf.kept = kept
            buf.state = KEPT
            next(COUNTS.kept_error if reason == "error" else COUNTS.kept_slow)  # counted once it is kept
            n = _list_len(buf)
            spans: list[Span] = buf[1:n]
            del buf[1:n]
        spans.append(root)
        try:  # counted even when a signal handler raises just after the append
            store._ring.append(kept)
        finally:
            store._pushes()
        filed = False
        try:
            for s in spans:
                s._trace = None  # no buffer <-> span cycle once filed (see Span.__exit__)
                store._put(kept, s)
            filed = True
        finally:
            if not filed:  # cut short by a signal handler's exception: the rest is filed before it goes on
                _file_missing(spans, kept, store)
        return spans


def _file_missing(spans: list[Span], kept: list[Any], store: TraceStore) -> None:
    """File in ``kept`` each of ``spans`` it does not hold yet (after a filing loop cut short)."""
    for s in spans:
        if not any(x is s for x in kept):
            s._trace = None
            store._put(kept, s)


def _settle(root: Span, buf: _Provisional, store: TraceStore) -> None:
    """After a decision cut short: an undecided trace is let go and counted; a kept one is filed whole."""
    if buf.state == OPEN:
        buf.state = DISCARDED
        _OPEN.pop(id(buf), None)
        if buf.shared:
            _unshare(buf)
        del buf[1:]
        next(COUNTS.interrupted)
    elif buf.state == KEPT:
        with _LOCK:
            left = list.__getitem__(buf, slice(1, None))  # spans still in the buffer: not taken yet
            del buf[1:]
        left.append(root)
        kept = buf.kept
        if not _in_ring(kept, store):  # cut short before the trace's list went into the store
            try:
                store._ring.append(kept)
            finally:
                store._pushes()
        _file_missing(left, kept, store)


def _in_ring(kept: list[Any], store: TraceStore) -> bool:
    """Whether the store holds the trace list ``kept`` (True when it cannot tell: never filed twice)."""
    for _ in range(100):
        try:
            return any(x is kept for x in store._ring)
        except RuntimeError:  # the ring changed in another thread while it was read: look again
            continue
    return True


def _mark(root: Span, reason: str) -> None:
    """Write why the trace was kept on its (ended) root, where a backend can see it."""
    old = root._attrs
    attrs = {key: old[key] for key in old}  # a dict, a shared dict or a packed FrozenAttrs alike
    attrs[KEPT_ATTRIBUTE] = reason
    root._attrs = freeze(attrs)
