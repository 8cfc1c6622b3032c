"""The in-memory trace store: whole traces, FIFO eviction, thread-safe.

Finished spans are appended to a lock-free deque (one atomic C call on the hot
path) and folded into traces under the lock when the store is read or the
queue passes a threshold, so recording never waits on a reader.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .spans import Span

__all__ = ["TraceStore"]

# Pending spans are folded into traces once this many wait; it bounds the memory
# between reads and amortises the lock over many spans.
DRAIN_THRESHOLD = 256
# Hard cap on the queue while the store's lock is held elsewhere.
PENDING_LIMIT = 100_000


class TraceStore:
    """Holds at most ``max_traces`` whole traces; the trace that arrived first leaves first."""

    def __init__(self, max_traces: int = 1000, *, max_spans_per_trace: int = 10_000) -> None:
        if isinstance(max_traces, bool) or not isinstance(max_traces, int) or max_traces < 1:
            raise ValueError(f"max_traces must be a positive integer; got {max_traces!r}")
        if isinstance(max_spans_per_trace, bool) or not isinstance(max_spans_per_trace, int) or max_spans_per_trace < 1:
            raise ValueError(f"max_spans_per_trace must be a positive integer; got {max_spans_per_trace!r}")
        self.max_traces = max_traces
        self.max_spans_per_trace = max_spans_per_trace
        self._lock = threading.RLock()
        self._traces: OrderedDict[int, list[Span]] = OrderedDict()
        self._pending: deque[Span] = deque()
        self.evicted_traces = 0
        self.dropped_spans = 0

    # -- writing ----------------------------------------------------------------

    def add(self, span: Span) -> None:
        """Queue a finished span; it joins its trace at the next read."""
        pending = self._pending
        pending.append(span)
        if len(pending) >= DRAIN_THRESHOLD:
            self.try_drain()

    def try_drain(self) -> None:
        """Drain if the lock is free right now; a recording thread never waits for a reader.

        If the lock stays busy (a reader stuck, a debugger), the queue is capped
        at PENDING_LIMIT spans: the newest are dropped and counted rather than
        letting memory grow without bound.
        """
        lock = self._lock
        if lock.acquire(blocking=False):
            try:
                self._drain_locked()
            finally:
                lock.release()
            return
        pending = self._pending
        while len(pending) > PENDING_LIMIT:
            try:
                pending.pop()
            except IndexError:
                break
            self.dropped_spans += 1

    def add_many(self, spans: Iterable[Span]) -> None:
        """Queue several finished spans."""
        self._pending.extend(spans)
        self.drain()

    def drain(self) -> None:
        """Fold queued spans into their traces, evicting the oldest traces past the limit."""
        with self._lock:
            self._drain_locked()

    def _drain_locked(self) -> None:
        # One pass, inlined: this loop runs once per recorded span.
        pending = self._pending
        traces = self._traces
        get = traces.get
        popleft = pending.popleft
        limit = self.max_spans_per_trace
        max_traces = self.max_traces
        while pending:
            span = popleft()
            tid = span._trace_id
            spans = get(tid)
            if spans is None:
                traces[tid] = [span]
                if len(traces) > max_traces:
                    self._evict_locked()
            elif len(spans) < limit:
                spans.append(span)
            else:
                self.dropped_spans += 1

    def _evict_locked(self) -> None:
        traces = self._traces
        while len(traces) > self.max_traces:
            traces.popitem(last=False)
            self.evicted_traces += 1

    # -- reading ----------------------------------------------------------------

    def traces(self, limit: int | None = None) -> list[list[Span]]:
        """The ``limit`` most recent traces (all by default), oldest first; each a list of spans."""
        with self._lock:
            self._drain_locked()
            items = self._select_locked(limit)
            return [list(spans) for _, spans in items]

    def take(self, limit: int | None = None) -> list[list[Span]]:
        """Remove and return the ``limit`` most recent traces in one atomic step."""
        with self._lock:
            self._drain_locked()
            items = self._select_locked(limit)
            for tid, _ in items:
                del self._traces[tid]
            return [spans for _, spans in items]

    def _select_locked(self, limit: int | None) -> list[tuple[int, list[Span]]]:
        items = list(self._traces.items())
        if limit is not None:
            if limit <= 0:
                return []
            items = items[-limit:]
        return items

    def get_trace(self, trace_id: int | str) -> list[Span] | None:
        """One trace's spans by id (int or hex), or None."""
        if isinstance(trace_id, str):
            try:
                trace_id = int(trace_id, 16)
            except ValueError:
                return None
        with self._lock:
            self._drain_locked()
            spans = self._traces.get(trace_id)
            return None if spans is None else list(spans)

    def clear(self) -> int:
        """Remove every trace; returns how many there were."""
        with self._lock:
            self._drain_locked()
            count = len(self._traces)
            self._traces.clear()
            return count

    def trace_count(self) -> int:
        """How many traces the store holds."""
        with self._lock:
            self._drain_locked()
            return len(self._traces)

    __len__ = trace_count

    def span_count(self) -> int:
        """How many spans the store holds across all traces."""
        with self._lock:
            self._drain_locked()
            return sum(len(spans) for spans in self._traces.values())

    def export(self, limit: int | None = None, *, clear: bool = False) -> dict[str, Any]:
        """The ``limit`` most recent traces as an OTLP/JSON ExportTraceServiceRequest."""
        from .otlp import encode_traces

        traces = self.take(limit) if clear else self.traces(limit)
        return encode_traces(traces)

    def stats(self) -> dict[str, int]:
        """Counters: traces, spans, evicted traces and dropped spans."""
        with self._lock:
            self._drain_locked()
            return {
                "traces": len(self._traces),
                "spans": sum(len(spans) for spans in self._traces.values()),
                "max_traces": self.max_traces,
                "evicted_traces": self.evicted_traces,
                "dropped_spans": self.dropped_spans,
            }

    def __repr__(self) -> str:
        return f"TraceStore(max_traces={self.max_traces}, traces={len(self._traces)})"
