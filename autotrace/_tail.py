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

Memory: spans held in open provisional traces are counted; past
``max_provisional_spans`` the oldest open provisional trace is discarded (its
spans let go at once), counted and logged once. One trace holds at most
``max_spans_per_trace`` of them (more are dropped, counted).
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

from ._model import StatusCode
from .attributes import freeze

if TYPE_CHECKING:
    from .spans import Span
    from .store import TraceStore

__all__ = ["TailSampling", "stats"]

_logger = logging.getLogger("autotrace")

KEPT_ATTRIBUTE = "autotrace.sampling.kept"
DEFAULT_MAX_PROVISIONAL_SPANS = 100_000  # ~100 concurrent requests of ~1,000 spans

# States of a provisional trace.
OPEN, KEPT, DISCARDED, EVICTED = 0, 1, 2, 3
_FULL = sys.maxsize  # what len() of a provisional buffer answers: never filed inline
_ERROR = StatusCode.ERROR
_list_len = list.__len__


class _Counts:
    """Process-wide counts of tail sampling decisions (read through ``stats()``)."""

    __slots__ = ("discarded", "dropped_spans", "evicted", "kept_error", "kept_slow", "open_spans", "warned")

    def __init__(self) -> None:
        self.kept_error = 0
        self.kept_slow = 0
        self.discarded = 0
        self.evicted = 0  # discarded while open, to stay within max_provisional_spans
        self.dropped_spans = 0  # spans of a discarded trace that ended after the decision, or past a trace's limit
        self.open_spans = 0  # spans held now in open provisional traces (each root counts one)
        self.warned = False


COUNTS = _Counts()
_OPEN: dict[_Provisional, None] = {}  # open provisional traces, oldest first
_LOCK = threading.Lock()  # the counts, _OPEN, and a kept buffer changing hands


def stats() -> dict[str, int]:
    """Tail sampling counters: traces kept by reason, discarded, evicted at the cap; what is held now."""
    c = COUNTS
    return {
        "tail_kept_error_traces": c.kept_error,
        "tail_kept_slow_traces": c.kept_slow,
        "tail_discarded_traces": c.discarded,
        "tail_evicted_traces": c.evicted,
        "tail_dropped_spans": c.dropped_spans,
        "tail_open_traces": len(_OPEN),
        "tail_open_spans": c.open_spans,
    }


def reset() -> None:
    """Zero the counters (tests); open provisional traces stay open."""
    with _LOCK:
        c = COUNTS
        c.kept_error = c.kept_slow = c.discarded = c.evicted = c.dropped_spans = 0


class _Provisional(list):  # type: ignore[type-arg]
    """The buffer of one provisional trace: ``[trace_id, span, ...]`` as a store buffer, plus its state."""

    __slots__ = ("error", "kept", "remote", "root", "sampling", "state")
    __hash__ = object.__hash__  # a key of _OPEN, by identity
    __eq__ = object.__eq__  # type: ignore[assignment]

    error: bool
    kept: list[Any] | None
    remote: bool
    root: Any
    sampling: TailSampling
    state: int

    def __len__(self) -> int:
        # "Full": span() and @traced then file through _state.finish, which hands the span here.
        return _FULL


def is_provisional(buf: object) -> bool:
    """Whether a span's ``_trace`` is a provisional trace's buffer (its trace was not head-sampled)."""
    return buf.__class__ is _Provisional


def _failed(s: Span) -> bool:
    """Whether a span ended with status ERROR or carries an exception event."""
    if s._status.code is _ERROR:
        return True
    extra = s._extra
    if extra is not None and extra.events:
        return any(e.name == "exception" for e in extra.events)
    return False


class TailSampling:
    """The tail sampling rule in force: what keeps a trace, and the head decision it overrides."""

    __slots__ = ("bound", "keep_errors", "max_spans", "per_trace", "sampler", "slow_ns")

    def __init__(
        self, keep_errors: bool, keep_slower_than: float | None, max_spans: int, per_trace: int = 10_000
    ) -> None:
        self.keep_errors = keep_errors
        self.slow_ns = None if keep_slower_than is None else int(keep_slower_than * 1e9)
        self.max_spans = max_spans
        self.per_trace = per_trace
        self.bound = 1 << 64  # the head rule: a root is sampled when its low 64 bits are below this ...
        self.sampler: Any = None  # ... and this sampler (a custom one) says so

    def should_sample(self, trace_id: int, parent: Any, name: str) -> bool:
        """The head decision (what the trace's traceparent says)."""
        if (trace_id & 0xFFFFFFFFFFFFFFFF) >= self.bound:
            return False
        sampler = self.sampler
        return sampler is None or bool(sampler.should_sample(trace_id, parent, name))

    def __repr__(self) -> str:
        rate = self.bound / float(1 << 64)
        return f"TailSampling(head rate {rate:.4g}, keep_errors={self.keep_errors}, slow_ns={self.slow_ns})"

    def root(self, span: Span, remote: bool) -> Span:
        """Make ``span`` (just built, not started elsewhere) the local root of a new provisional trace."""
        buf = _Provisional((span._trace_id,))
        buf.sampling = self
        buf.root = span
        buf.state = OPEN
        buf.error = False
        buf.remote = remote
        buf.kept = None
        span._trace = buf
        with _LOCK:
            _OPEN[buf] = None
            c = COUNTS
            c.open_spans += 1
            if c.open_spans > self.max_spans:
                self._evict()
        return span

    def _evict(self) -> None:
        """Discard the oldest open provisional traces until the spans held are within the cap (under _LOCK)."""
        c = COUNTS
        while c.open_spans > self.max_spans and _OPEN:
            oldest = next(iter(_OPEN))
            del _OPEN[oldest]
            c.open_spans -= _list_len(oldest)  # its spans, and one for its open root
            oldest.state = EVICTED
            del oldest[1:]
            c.evicted += 1
            if not c.warned:
                c.warned = True
                _logger.warning(
                    "autotrace: open provisional traces (tail sampling) reached max_provisional_spans=%d spans; "
                    "the oldest are discarded and counted in stats()['tail_evicted_traces']",
                    self.max_spans,
                )

    # -- a span of a provisional trace ends (from _state.finish) ----------------------------

    def end(self, span: Span, buf: _Provisional, store: TraceStore) -> list[Span]:
        """File a finished span of a provisional trace; the spans that the processors must now receive."""
        if span is buf.root:
            return self._decide(span, buf, store)
        state = buf.state
        if state == OPEN:
            with _LOCK:
                if buf.state == OPEN:
                    if _list_len(buf) > self.per_trace:
                        COUNTS.dropped_spans += 1
                        if self.keep_errors and _failed(span):
                            buf.error = True
                        return []
                    list.append(buf, span)
                    COUNTS.open_spans += 1
                    if COUNTS.open_spans > self.max_spans:
                        self._evict()
                    return []
                state = buf.state
        if state == KEPT:
            # A span ending after its trace was kept (a task outliving the root): filed with it.
            kept = buf.kept
            assert kept is not None
            span._trace = None
            store._put(kept, span)
            return [span]
        with _LOCK:
            COUNTS.dropped_spans += 1  # its trace was discarded already
        return []

    def _decide(self, root: Span, buf: _Provisional, store: TraceStore) -> list[Span]:
        """The local root ended: keep the trace (into ``store``, returned for the processors) or let it go."""
        with _LOCK:
            if buf.state != OPEN:  # evicted at the cap (counted then)
                buf.root = None
                return []
            del _OPEN[buf]
            c = COUNTS
            c.open_spans -= _list_len(buf)
            reason = None
            if self.keep_errors and (buf.error or _failed(root) or any(_failed(s) for s in buf[1:])):
                reason = "error"
            elif self.slow_ns is not None and not buf.remote and (root._end or 0) - root._start > self.slow_ns:
                reason = "slow"
            buf.root = None  # no root <-> buffer cycle
            if reason is None:
                buf.state = DISCARDED
                del buf[1:]
                c.discarded += 1
                return []
            spans: list[Span] = buf[1:]
            del buf[1:]
            _mark(root, reason)
            spans.append(root)
            # One store buffer, as a sampled trace's: later spans of the trace join it.
            kept: list[Any] = [buf[0]]
            try:  # counted even when a signal handler raises just after the append
                store._ring.append(kept)
            finally:
                store._pushes()
            buf.kept = kept
            buf.state = KEPT
            if reason == "error":
                c.kept_error += 1
            else:
                c.kept_slow += 1
        for s in spans:
            s._trace = None  # no buffer <-> span cycle once filed (see Span.__exit__)
            store._put(kept, s)
        return spans


def _mark(root: Span, reason: str) -> None:
    """Write why the trace was kept on its (ended) root, where a backend can see it."""
    old = root._attrs
    attrs = {key: old[key] for key in old}  # a dict, a shared dict or a packed FrozenAttrs alike
    attrs[KEPT_ATTRIBUTE] = reason
    root._attrs = freeze(attrs)
