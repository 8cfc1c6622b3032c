"""The in-memory trace store: whole traces, FIFO eviction, and no lock for a recording thread.

How spans reach it (this runs once per recorded span, so each step is one C call):

- A trace's spans collect in one list, its *buffer*: ``[trace_id, span, span, ...]``.
  The buffer is made when the trace's local root span starts and goes straight
  into the store's ring; every span of the trace points at it (``Span._trace``).
  A finishing span appends itself: ``list.append`` is atomic under the GIL, so
  recording threads never take a lock or wait for a reader, and grouping spans
  into traces costs nothing per span. A child that ends after its root (a
  background task) still lands in its trace's buffer.
- The ring is a ``deque(maxlen=max_traces)`` of buffers, oldest first: FIFO
  eviction drops one whole buffer, i.e. one whole trace, inside ``append``.
  A new trace costs a list, an append and one tick of ``_counter`` (which is how
  evictions are counted without doing anything when they happen).
- Readers take ``_lock`` among themselves only. ``take()`` and ``clear()`` move
  the buffers they empty to ``_limbo``; a span that arrives later in such a
  buffer (a trace still open during ``clear()``) brings it back into the ring
  at the next read, as a new entry of its trace, so it is not lost however
  long the trace stays open. A buffer leaves limbo only when nothing else
  refers to it (its reference count): no open span holds it, so no span can
  ever be appended to it again. Recording threads never look into limbo.
- A trace at ``max_spans_per_trace`` keeps its spine: a span arriving at a full
  buffer is admitted if stored spans hang from it (it is their parent), in
  place of the oldest stored leaf; any other span is dropped, counted. Spans
  end children first, so the stored spans stay one tree with its root.
- ``_index`` (trace id -> buffer) serves only the slow paths: a span continuing
  a trace from elsewhere (``add()``, a remote parent) joins the buffer it
  finds there. Buffers opened by the hot path are not indexed, to keep a new
  trace cheap; readers merge the rare two buffers of one trace id into one trace.

The first element of a buffer is its trace id (not a span): one slot that lets
an empty buffer (a trace whose spans are all still open) say whose it is.
A buffer is made as ``[trace_id, None]`` and popped back to ``[trace_id]``:
a list keeps the room it had, so the first span's append fits in it. Made as
``[trace_id]``, the append would grow it to room for 8 (48 bytes more), and
most traces of a simple service hold one span.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._tail import stats as _tail_stats

if TYPE_CHECKING:
    from .spans import Span

__all__ = ["TraceStore"]

_logger = logging.getLogger("autotrace")

# While the store's lock is held (a reader stuck), at most PENDING_LIMIT spans
# are taken in; later ones are dropped, counted and logged once.
FIND_WINDOW = 64  # newest buffers _find() looks through (slow path only)
PENDING_LIMIT = 100_000


class _ReaderLock:
    """The store's lock (an RLock, taken by readers only) that also marks the store busy.

    While it is held, the tracer sends finished spans through the store's slow
    path (``_admit``), which counts them and drops those past PENDING_LIMIT.
    The hot path pays nothing for this: it already checks one limit per span,
    and the listener just sets that limit so that the check fails.
    """

    __slots__ = ("_depth", "_lock", "_store")

    def __init__(self, store: TraceStore) -> None:
        self._lock = threading.RLock()
        self._store = store
        self._depth = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock (as ``threading.RLock.acquire``)."""
        if not self._lock.acquire(blocking, timeout):
            return False
        self._depth += 1
        if self._depth == 1:
            self._store._set_busy(True)
        return True

    def release(self) -> None:
        """Release the lock."""
        self._depth -= 1
        if self._depth == 0:
            self._store._set_busy(False)
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class _FullTrace(int):
    """The trace id of a full buffer (its first slot), carrying what keeps its spine.

    It equals and hashes as the trace id, so readers see no difference.
    ``children`` counts the stored spans under each span id; ``size`` is the
    buffer's length when it was last counted (another length: recount).
    """

    children: dict[int, int]
    size: int


_STORES: weakref.WeakSet[TraceStore] = weakref.WeakSet()  # reset in a forked child (see _after_fork)


class TraceStore:
    """Holds at most ``max_traces`` whole traces; the trace that arrived first leaves first."""

    def __init__(self, max_traces: int = 1000, *, max_spans_per_trace: int = 10_000) -> None:
        if isinstance(max_traces, bool) or not isinstance(max_traces, int) or max_traces < 1:
            raise ValueError(f"max_traces must be a positive integer; got {max_traces!r}")
        if isinstance(max_spans_per_trace, bool) or not isinstance(max_spans_per_trace, int) or max_spans_per_trace < 1:
            raise ValueError(f"max_spans_per_trace must be a positive integer; got {max_spans_per_trace!r}")
        self.max_traces = max_traces
        self.max_spans_per_trace = max_spans_per_trace
        self._busy = False  # True while _lock is held (see _ReaderLock)
        self._busy_count = 0
        self._listener: Any = None  # called when _busy changes (the tracer's, for the global store)
        self._lock = _ReaderLock(self)
        self._full_lock = threading.Lock()  # spans admitted to full buffers, and readers emptying buffers
        self._ring: deque[list[Any]] = deque(maxlen=max_traces)
        self._counter = itertools.count(1)
        self._pushes = self._counter.__next__  # call after every ring.append
        self._removed = 0  # buffers taken out of the ring on purpose (take, clear)
        self._evicted_offset = 0
        # Buffers emptied by take()/clear() whose traces may still be open;
        # touched by readers only (under _lock), see _revive.
        self._limbo: list[list[Any]] = []
        self._index: dict[int, tuple[list[Any], int]] = {}
        self._previous: TraceStore | None = None  # the store this one replaced (see _adopt)
        self.dropped_spans = 0
        self._warned: set[str] = set()  # reasons for dropping already logged
        _STORES.add(self)

    # -- writing (no lock: any recording thread may call these) ---------------------

    def _new_trace(self, trace_id: int) -> list[Any]:
        """Open the buffer of a new trace (span() and the sync @traced wrapper inline these three steps)."""
        buf: list[Any] = [trace_id, None]
        buf.pop()  # room for one span (see "The first element of a buffer" above)
        try:  # counted even when a signal handler raises just after the append
            self._ring.append(buf)
        finally:
            self._pushes()
        return buf

    def _open(self, trace_id: int, *, everywhere: bool = False) -> list[Any]:
        """The buffer of ``trace_id`` if this store still holds one, else a new indexed one.

        ``everywhere`` looks through the whole ring, not only its newest
        FIND_WINDOW buffers: for a child whose local parent has ended, whose
        trace is surely here unless evicted. Left in a buffer of its own, it
        would outlive the rest of its trace and be shown alone.
        """
        hit = self._index.get(trace_id)
        if hit is not None:
            buf, seq = hit
            # Fewer than max_traces pushes since it went in: it is still in the
            # ring (or in limbo, which a read brings back). Older: look.
            if self._count() - seq < self.max_traces or buf in self._ring:
                return buf
        found = self._find(trace_id, None if everywhere else FIND_WINDOW)
        if found is not None:
            # A buffer the hot path opened (not indexed): a child that starts after
            # its parent ended joins it, so the trace stays one entry and is evicted whole.
            self._index[trace_id] = (found, self._count())
            return found
        buf = [trace_id, None]
        buf.pop()  # room for one span
        try:  # counted even when a signal handler raises just after the append
            self._ring.append(buf)
        finally:
            seq = self._pushes()
        index = self._index
        index[trace_id] = (buf, seq)
        # Pruned a quarter past max_traces: evicted buffers do not stay alive here for long.
        if len(index) > self.max_traces + max(16, self.max_traces // 4):
            self._prune_index()
        return buf

    def _find(self, trace_id: int, window: int | None) -> list[Any] | None:
        """A buffer of ``trace_id`` among the newest ``window`` (None: all) of the ring, or None.

        A new remote trace (every request behind the WSGI middleware) looks
        only through the newest FIND_WINDOW buffers: it must not pay for a scan
        of the whole ring, and a trace continued from elsewhere is recent if
        it is here at all. Readers merge the rare older split anyway. Limbo
        is not looked at: a reader lets go of a buffer there once nothing
        refers to it, which a recording thread finding it would contradict;
        a trace that was taken continues in a new buffer, a new entry.
        """
        try:
            for buf in itertools.islice(reversed(self._ring), window):
                if buf[0] == trace_id:
                    found: list[Any] = buf
                    return found
        except RuntimeError:  # the deque changed under us (a recording thread): give up
            pass
        return None

    def _prune_index(self) -> None:
        live = {id(b) for b in list(self._ring)}
        self._index = {tid: hit for tid, hit in list(self._index.items()) if id(hit[0]) in live}

    def _count(self) -> int:
        # itertools.count shows its next value in its repr; reading it must not advance it.
        return int(repr(self._counter)[6:-1]) - 1

    def _set_busy(self, busy: bool) -> None:
        self._busy_count = 0
        self._busy = busy
        listener = self._listener
        if listener is not None:
            listener()

    def _admit(self) -> bool:
        """False (and counted as dropped) for a span past PENDING_LIMIT while the lock is held."""
        if self._busy:
            self._busy_count += 1
            if self._busy_count > PENDING_LIMIT:
                self._dropped("the store's lock was held (a reader stuck?) past its limit of spans taken in meanwhile")
                return False
        return True

    def _dropped(self, why: str) -> None:
        """Count a span refused; the first one for each reason is logged (the count is in stats())."""
        self.dropped_spans += 1
        if why not in self._warned:
            self._warned.add(why)
            _logger.warning("autotrace: %s; spans past it are dropped and counted in stats()['dropped_spans']", why)

    def _put(self, buf: list[Any], span: Span) -> None:
        if len(buf) > self.max_spans_per_trace:
            self._put_full(buf, span)
        elif not self._busy or self._admit():  # _admit only matters while the lock is held
            buf.append(span)

    def _put_full(self, buf: list[Any], span: Span) -> None:
        """File a span in a full buffer: an ancestor of stored spans replaces a stored leaf, a leaf is dropped."""
        why = f"a trace reached max_spans_per_trace={self.max_spans_per_trace} (its leaves are dropped, its spine kept)"
        with self._full_lock:
            if len(buf) <= self.max_spans_per_trace:  # a reader emptied it meanwhile
                buf.append(span)
                return
            head = buf[0]
            if head.__class__ is not _FullTrace or head.size != len(buf):
                # First time full, or spans came in meanwhile through the hot path: count.
                head = _FullTrace(head)
                children: dict[int, int] = {}
                for s in itertools.islice(buf, 1, None):
                    pid = s._parent_id
                    if pid is not None:
                        children[pid] = children.get(pid, 0) + 1
                head.children = children
                buf[0] = head
            children = head.children
            if span._span_id not in children:  # nothing stored hangs from it: a leaf
                head.size = len(buf)
                self._dropped(why)
                return
            # Spans end children first: the oldest stored spans are the deepest,
            # so the first leaf is usually near the front.
            for i in range(1, len(buf)):
                leaf = buf[i]
                if leaf._span_id not in children:
                    break
            else:  # no leaf (cannot happen in a tree): keep what is stored
                head.size = len(buf)
                self._dropped(why)
                return
            del buf[i]
            pid = leaf._parent_id
            if pid is not None:
                left = children.get(pid, 0) - 1
                if left > 0:
                    children[pid] = left
                else:
                    children.pop(pid, None)
            buf.append(span)
            pid = span._parent_id
            if pid is not None:
                children[pid] = children.get(pid, 0) + 1
            head.size = len(buf)
            self._dropped(why)

    def add(self, span: Span) -> None:
        """Store a finished span in its trace (a new trace if its id is new here)."""
        self._put(self._open(span._trace_id), span)

    def add_many(self, spans: Iterable[Span]) -> None:
        """Store several finished spans (a received batch, a loaded file): one look-up per trace, not per span."""
        by_trace: dict[int, list[Span]] = {}
        for span in spans:
            group = by_trace.get(span._trace_id)
            if group is None:
                by_trace[span._trace_id] = [span]
            else:
                group.append(span)
        for trace_id, group in by_trace.items():
            buf = self._open(trace_id)
            for span in group:
                self._put(buf, span)

    def _adopt(self, other: TraceStore) -> None:
        """Take over another store's traces (newest win) so that traces still open keep filling them.

        Called once the new store is installed. The old ring is emptied with
        popleft, and emptied again at every read of this store: a recording
        thread that still held the old ring when the switch happened appends
        its new trace there, and it comes over too.
        """
        # Under the readers' locks: limbo lists belong to their store's readers.
        # The old store's is not waited for (a reader stuck there must not
        # hold up configure()); its own reads absorb its predecessor anyway.
        if other._lock.acquire(blocking=False):
            try:
                other._absorb_previous()
            finally:
                other._lock.release()
        with self._lock:
            self._previous = other
            self._absorb_previous()
            self._evicted_offset = self._count() - len(self._ring)

    def _absorb_previous(self) -> None:
        """Take in what reached the stores this one replaced, however many ``configure()`` calls back.

        A reader still inside ``take()`` of an older store during two ``configure()`` calls
        leaves buffers in that store's ring or limbo after its successor was replaced too:
        the whole chain is drained, not only the last link. A replaced store leaves the
        chain once it is empty and nothing else refers to it or its ring (no reader and
        no recording thread can fill it any more), so the chain stays short.
        """
        link = self
        other = link._previous
        while other is not None:
            self._drain(other)
            if (
                other._ring
                or other._limbo
                or sys.getrefcount(other) > _CHAIN_REFS[0]
                or sys.getrefcount(other._ring) > _CHAIN_REFS[1]
            ):
                link = other
            else:
                link._previous = other._previous
            other = link._previous

    def _drain(self, other: TraceStore) -> None:
        """Move a replaced store's buffers (and, when its readers are idle, its limbo) into this store."""
        ring = other._ring
        # Its buffers come here: its index would keep them (and limbo's) referenced, never let go.
        other._index = {}
        while True:
            try:
                buf = ring.popleft()  # empty buffers too: traces still open
            except IndexError:
                break
            # Not indexed: _open() finds adopted buffers by scanning the ring, and
            # an index entry would keep an evicted buffer (and its spans) alive.
            self._ring.append(buf)
            self._pushes()
        # The old store's limbo belongs to its readers (someone may still hold
        # that store): moved under its lock, or at a later read if it is busy.
        if other._limbo and other._lock.acquire(blocking=False):
            try:
                self._limbo += other._limbo  # emptied by clear()/take(); _revive brings back what arrives
                other._limbo = []
            finally:
                other._lock.release()

    def _chain_refs(self) -> tuple[int, int]:
        """The reference counts ``_absorb_previous`` reads for a replaced store that only the chain holds."""
        other = self._previous
        assert other is not None
        return sys.getrefcount(other), sys.getrefcount(other._ring)

    @property
    def evicted_traces(self) -> int:
        """Traces pushed out by newer ones since the store was made."""
        return self._count() - len(self._ring) - self._removed - self._evicted_offset

    @evicted_traces.setter
    def evicted_traces(self, value: int) -> None:
        self._evicted_offset += self.evicted_traces - value

    # -- reading (readers hold the lock) ------------------------------------------

    def _revive(self) -> None:
        """Put emptied buffers that received spans back in the ring; let go of those nobody can fill."""
        old = self._limbo
        if not old:
            return
        self._limbo = keep = []
        # A probe that only `old` holds: its reference count, read the same way
        # as the buffers', is what "held by nothing else" reads as.
        old.insert(0, [0])
        base = 0
        for buf in old:
            # The count first, then the length: once nothing else holds a
            # buffer, no span can be appended to it any more.
            refs = sys.getrefcount(buf)
            if not base:
                base = refs
            elif len(buf) > 1:  # spans that came after take()/clear(): a new entry of their trace
                self._ring.append(buf)
                self._pushes()
            elif refs > base:  # an open span (or the index) still holds it
                keep.append(buf)

    def _groups(self) -> dict[int, list[list[Any]]]:
        """Non-empty buffers by trace id, oldest trace first."""
        self._absorb_previous()
        self._revive()
        groups: dict[int, list[list[Any]]] = {}
        for buf in list(self._ring):  # a C-level copy: safe while recording threads append
            if len(buf) > 1:
                bufs = groups.get(buf[0])
                if bufs is None:
                    groups[buf[0]] = [buf]
                else:  # two buffers of one trace id: shown as one trace
                    bufs.append(buf)
        return groups

    @staticmethod
    def _select(groups: dict[int, list[list[Any]]], limit: int | None) -> list[list[list[Any]]]:
        items = list(groups.values())
        if limit is not None:
            if limit <= 0:
                return []
            items = items[-limit:]
        return items

    def _remove(self, selected: list[list[list[Any]]]) -> list[list[Span]]:
        """Take the buffers out of the ring, empty them into lists, park them in limbo."""
        ring = self._ring
        wanted = {id(buf) for bufs in selected for buf in bufs}
        if len(wanted) > 16:
            # Many to remove: one sweep from the old end (deque.remove per buffer
            # would be quadratic). Buffers not wanted go back in, in their order.
            keep = []
            for _ in range(len(ring)):
                try:
                    buf = ring.popleft()
                except IndexError:
                    break
                if id(buf) in wanted:
                    self._removed += 1
                else:
                    keep.append(buf)
            # Back at the old end, in their order: a trace a recording thread
            # opened meanwhile is at the new end and must stay the newest.
            ring.extendleft(reversed(keep))
        else:
            for bufs in selected:
                for buf in bufs:
                    try:
                        ring.remove(buf)  # C-level; a buffer compares equal only to one of its own trace
                    except ValueError:  # evicted meanwhile: its spans are still ours to return
                        continue
                    self._removed += 1
        out = []
        index = self._index
        for bufs in selected:
            spans: list[Span] = []
            for buf in bufs:
                # Copy, then delete exactly what was copied: a span appended
                # meanwhile stays in the buffer and comes back from limbo.
                # Under _full_lock: _put_full does not move spans meanwhile.
                with self._full_lock:
                    n = len(buf)
                    spans += buf[1:n]
                    del buf[1:n]
                    trace_id = buf[0] = int(buf[0])  # a full buffer's counts no longer hold
                hit = index.get(trace_id)
                if hit is not None and hit[0] is buf:  # new spans of the trace: a new buffer in the ring
                    index.pop(trace_id, None)
                self._limbo.append(buf)
            if len(bufs) > 1:
                spans.sort(key=_end_time)
            out.append(spans)
        return out

    @staticmethod
    def _spans(bufs: list[list[Any]]) -> list[Span]:
        if len(bufs) == 1:
            return bufs[0][1:]
        # One trace in two buffers (e.g. a server span continuing, in this
        # process, a trace started here): merged in the order the spans ended.
        return sorted((s for buf in bufs for s in buf[1:]), key=_end_time)

    def traces(self, limit: int | None = None) -> list[list[Span]]:
        """The ``limit`` most recent traces (all by default), oldest first; each a list of spans."""
        with self._lock:
            return [self._spans(bufs) for bufs in self._select(self._groups(), limit)]

    def take(self, limit: int | None = None) -> list[list[Span]]:
        """Remove and return the ``limit`` most recent traces in one atomic step."""
        with self._lock:
            return self._remove(self._select(self._groups(), limit))

    def get_trace(self, trace_id: int | str) -> list[Span] | None:
        """One trace's spans by id (int or hex), or None."""
        if isinstance(trace_id, str):
            try:
                trace_id = int(trace_id, 16)
            except ValueError:
                return None
        with self._lock:
            bufs = self._groups().get(trace_id)
            return None if bufs is None else self._spans(bufs)

    def clear(self) -> int:
        """Remove every trace; returns how many there were."""
        with self._lock:
            groups = self._groups()
            self._remove(list(groups.values()))
            return len(groups)

    def trace_count(self) -> int:
        """How many traces the store holds."""
        with self._lock:
            return len(self._groups())

    __len__ = trace_count

    def span_count(self) -> int:
        """How many spans the store holds across all traces."""
        with self._lock:
            return sum(len(buf) - 1 for bufs in self._groups().values() for buf in bufs)

    def export(self, limit: int | None = None, *, clear: bool = False) -> dict[str, Any]:
        """The ``limit`` most recent traces as an OTLP/JSON ExportTraceServiceRequest."""
        from .otlp import encode_traces

        # Copying and encoding make ~20 small dicts and lists per span, none of
        # them garbage: the cyclic collector would run hundreds of times over a
        # large export, walk every stored span each time it reaches the older
        # generations, and find nothing. That was over half of the export time.
        enabled = gc.isenabled()
        gc.disable()
        try:
            traces = self.take(limit) if clear else self.traces(limit)
            return encode_traces(traces)
        finally:
            if enabled:
                gc.enable()

    def stats(self) -> dict[str, Any]:
        """Counters: traces, spans, evicted traces, dropped spans, and tail sampling's (a dict)."""
        with self._lock:
            groups = self._groups()
            return {
                "traces": len(groups),
                "spans": sum(len(buf) - 1 for bufs in groups.values() for buf in bufs),
                "max_traces": self.max_traces,
                "evicted_traces": self.evicted_traces,
                "dropped_spans": self.dropped_spans,
                "tail_sampling": _tail_stats(),  # its decisions, process-wide (see _tail.stats)
            }

    def __repr__(self) -> str:
        return f"TraceStore(max_traces={self.max_traces}, traces={sum(len(b) > 1 for b in list(self._ring))})"


def _end_time(span: Span) -> int:
    end = span._end
    return end if end is not None else span._start


def _after_fork() -> None:
    """In a forked child: new locks and no busy flag in every store.

    A thread of the parent may have held a store's lock when another forked
    (a ``/traces`` read, ``configure()``): that thread does not exist in the
    child, so the lock would stay held forever, reads would hang and, the
    store looking busy, every span past PENDING_LIMIT would be dropped. The
    tracer's own hook, which runs after this one, tells it the store is free.
    """
    for store in list(_STORES):
        store._lock = _ReaderLock(store)
        store._full_lock = threading.Lock()
        store._busy = False
        store._busy_count = 0


def _calibrate() -> tuple[int, int]:
    holder = TraceStore(1)
    holder._previous = TraceStore(1)
    return holder._chain_refs()


_CHAIN_REFS = _calibrate()
"""Reference counts of a replaced store, and of its ring, that nothing but the chain of stores holds."""

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
