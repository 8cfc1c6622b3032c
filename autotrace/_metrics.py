"""Metrics over every traced call, sampled or not: the hot path's side and the folded histograms.

The hot path appends a duration (integer nanoseconds) to its series, a
``deque`` subclass: ``deque.append`` is atomic under the GIL, so no lock is
taken and no update is lost. A fold (under a lock) pops what is queued and
adds it to the histograms: by whoever sees a series pass ``FOLD_AT`` items
(taken without blocking, so memory stays bounded) and always before a read.
An error is queued as ``~d`` (negative); an OK status goes to ``ok``.

Each histogram keeps exact counts per Prometheus ``le`` bucket and a sparse
log-linear histogram (32 sub-buckets per power of two) for percentiles: a
percentile is the midpoint of the bucket holding its rank, within 1/64 (1.6%)
of the exact value.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from bisect import bisect_left, bisect_right
from collections import deque
from itertools import repeat, starmap
from typing import Any

from ._errors import logger
from ._limits import LIMITS

__all__ = [
    "LE_SECONDS",
    "ITEM_BUCKETS",
    "M",
    "Folded",
    "Hist",
    "Series",
    "add_failed",
    "failed",
    "series",
    "shown",
    "stream_series",
]

LE_SECONDS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
"""The ``le`` bounds (seconds) of every duration histogram: 100 µs to 5 minutes."""
_LE_NS = tuple(round(x * 1e9) for x in LE_SECONDS)

ITEM_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)
"""The ``le`` bounds of ``autotrace_stream_items`` (items per stream)."""

FOLD_AT = 1024  # queued items per series past which the caller folds them (memory bound)
DEFAULT_MAX_SERIES = 1000
OTHER = "_other"


def bucket_of(d: int) -> int:
    """The fine bucket index of ``d`` (>= 0): exact below 64, 32 sub-buckets per power of two above."""
    if d < 64:
        return d
    b = d.bit_length()
    return (b << 5) | ((d >> (b - 6)) & 31)


def bucket_bounds(idx: int) -> tuple[int, int]:
    """The ``[low, high)`` values of fine bucket ``idx``."""
    if idx < 64:
        return idx, idx + 1
    b, sub = idx >> 5, idx & 31
    return (32 + sub) << (b - 6), (33 + sub) << (b - 6)


class Hist:
    """One histogram, folded: count, sum, min, max, exact counts per ``le`` bound and the fine buckets."""

    __slots__ = ("count", "fine", "le", "max", "min", "sum")

    def __init__(self, bounds: tuple[int, ...] = _LE_NS) -> None:
        self.count = 0
        self.sum = 0
        self.min = 0
        self.max = 0
        self.le = [0] * len(bounds)  # cumulative: observations <= bound
        self.fine: dict[int, int] = {}

    def add_sorted(self, items: list[int], bounds: tuple[int, ...] = _LE_NS) -> None:
        """Add sorted non-negative values (per-item work is C-level except one step per fine bucket)."""
        n = len(items)
        if not n:
            return
        if not self.count or items[0] < self.min:
            self.min = items[0]
        if items[-1] > self.max:
            self.max = items[-1]
        self.count += n
        self.sum += sum(items)
        le = self.le
        for i, bound in enumerate(bounds):
            le[i] += bisect_right(items, bound)
        # One step per fine bucket present (bucket_of and bucket_bounds inline):
        # durations cluster, so a batch spans few buckets.
        fine = self.fine
        get = fine.get
        i = 0
        while i < n:
            d = items[i]
            if d < 64:
                idx, high = d, d + 1
            else:
                b = d.bit_length()
                sub = (d >> (b - 6)) & 31
                idx, high = (b << 5) | sub, (33 + sub) << (b - 6)
            j = bisect_left(items, high, i)
            fine[idx] = get(idx, 0) + j - i
            i = j

    def copy(self) -> Hist:
        """A copy a reader can keep reading while folds go on."""
        made = Hist.__new__(Hist)
        made.count, made.sum, made.min, made.max = self.count, self.sum, self.min, self.max
        made.le = list(self.le)
        made.fine = dict(self.fine)
        return made

    def merge(self, other: Hist) -> None:
        """Add ``other`` into this one."""
        if not other.count:
            return
        if not self.count or other.min < self.min:
            self.min = other.min
        self.max = max(self.max, other.max)
        self.count += other.count
        self.sum += other.sum
        for i, v in enumerate(other.le):
            self.le[i] += v
        for k, v in other.fine.items():
            self.fine[k] = self.fine.get(k, 0) + v

    def percentile(self, q: float) -> int:
        """The value at nearest rank ``ceil(q * count)``: its bucket's midpoint, within [min, max]."""
        if not self.count:
            return 0
        rank = max(1, -int(-q * self.count // 1))
        if rank >= self.count:  # the top rank is the largest value, known exactly
            return self.max
        if rank == 1:
            return self.min
        seen = 0
        for idx in sorted(self.fine):
            seen += self.fine[idx]
            if seen >= rank:
                low, high = bucket_bounds(idx)
                mid = (low + high - 1) // 2 if high - low > 1 else low
                return min(max(mid, self.min), self.max)
        return self.max


class Series(list):  # type: ignore[type-arg]
    """The queue of one ``span_name``/``span_kind`` label pair: durations in ns (``~d`` for an error).

    A list: ``append`` is atomic, and so are the fold's ``self[:n]`` and
    ``del self[:n]``, which take exactly the first ``n`` items: whatever
    another thread appends meanwhile lands past them and waits for the next fold.
    """

    __slots__ = ("hists", "kind", "name", "ok", "pinned", "stream", "streams")

    def __init__(self, name: str, kind: int) -> None:
        super().__init__()
        self.name = name
        self.kind = kind
        self.ok: deque[int] = deque()  # durations of spans with status OK
        self.streams: deque[tuple[int, int, int]] = deque()  # (first item ns or -1, mean gap ns or -1, items)
        self.hists = (Hist(), Hist(), Hist())  # unset, ok, error
        self.stream: tuple[Hist, Hist, Hist] | None = None  # ttft, per item, items
        self.pinned = False  # held by a decorator for good: kept by reset(), which drops the others

    def fold(self) -> None:
        """Fold what is queued, unless another thread is folding (then it will)."""
        # Skipped while another thread folds (it takes what is queued; two that
        # pass the check at once fold one after the other). The lock is only
        # ever taken by `with`: its __enter__ and __exit__ run in C with no room
        # between them and the block for a signal handler's exception (a
        # deadline's TimeoutError), so it can never be left held, unlike a
        # `got = acquire()` interrupted before `got` is stored.
        if not _LOCK.locked():
            with _LOCK:
                self._fold()

    def _fold(self) -> None:
        n = len(self)
        if n:
            items = self[:n]
            del self[:n]
            items.sort()
            k = bisect_left(items, 0)  # errors (negative) first
            if k:
                self.hists[2].add_sorted(sorted(~x for x in items[:k]))
                del items[:k]
            self.hists[0].add_sorted(items)
        n = len(self.ok)
        if n:
            self.hists[1].add_sorted(sorted(starmap(self.ok.popleft, repeat((), n))))
        n = len(self.streams)
        if n:
            if self.stream is None:
                self.stream = (Hist(), Hist(), Hist(ITEM_BUCKETS))
            got = list(starmap(self.streams.popleft, repeat((), n)))
            ttft, gap, per_stream = self.stream
            ttft.add_sorted(sorted(t for t, _, _ in got if t >= 0))
            gap.add_sorted(sorted(g for _, g, _ in got if g >= 0))
            per_stream.add_sorted(sorted(c for _, _, c in got), ITEM_BUCKETS)

    def clear_all(self) -> None:
        """Forget every observation (``reset()``), folded or queued."""
        self._fold()
        self.hists = (Hist(), Hist(), Hist())
        self.stream = None


class _Metrics:
    """The switch and the series table (one instance, ``M``)."""

    __slots__ = ("by_name", "max_series", "named", "on", "overflow", "series", "since", "warned")

    def __init__(self) -> None:
        self.on = True  # read on the hot path: metrics recorded at all
        self.max_series = DEFAULT_MAX_SERIES
        self.series: dict[tuple[str, int], Series] = {}
        # The same series by name, then by kind (a list index): what span()'s exit
        # reads, without building a tuple key per span.
        self.by_name: dict[str, list[Series | None]] = {}
        self.overflow = 0  # lookups past the cap, counted under span_name="_other"
        self.named = 0  # series in the table but the "_other" ones: what the cap counts (kept, not recounted)
        self.warned = False
        self.since = time.time()


M = _Metrics()
_LOCK = threading.Lock()  # folds and reads; taken by `with` only (see Series.fold)
_TABLE = threading.Lock()  # the series table's writes (taken by `with` only)


def pinned(name: str, kind: int) -> Series:
    """``series()`` for a caller that keeps the handle (a decorator): kept by ``reset()``."""
    found = series(name, kind)
    found.pinned = True
    return found


def series(name: str, kind: int) -> Series:
    """The series of ``(name, kind)``, made on first use; past the cap the kind's ``_other`` series."""
    key = (name, int(kind))
    found = M.series.get(key)
    if found is not None:
        return found
    with _TABLE:
        found = M.series.get(key)
        if found is not None:
            return found
        if M.named >= M.max_series:
            M.overflow += 1
            if not M.warned:
                M.warned = True
                logger.warning(
                    "autotrace: more than %d span names/kinds in the metrics (max_series); new ones are counted "
                    "under span_name=%r",
                    M.max_series,
                    OTHER,
                )
            key = (OTHER, int(kind))
            found = M.series.get(key)
            if found is not None:
                return found
        made = Series(key[0], key[1])
        M.series[key] = made
        if key[0] != OTHER:
            M.named += 1
        if key[0] == name:
            kinds = M.by_name.get(name) or [None] * 6
            kinds[key[1] if 0 <= key[1] < 6 else 0] = made if 0 <= key[1] < 6 else None
            M.by_name[name] = kinds
        return made


stream_series = series


def failed(d: int, exc: BaseException) -> int:
    """What a call left by ``exc`` queues: ``~d`` (an error), or ``d`` for an asyncio cancellation, no error
    (the sampled span's status stays unset then, as OpenTelemetry does: both paths label it alike)."""
    aio = sys.modules.get("asyncio")  # not imported for this: without asyncio there is no cancellation
    return d if aio is not None and isinstance(exc, aio.CancelledError) else ~d


def add_failed(h: Series, d: int, exc: BaseException) -> None:
    """Queue a call left by ``exc`` (see ``failed``), folding past ``FOLD_AT``: a call that always
    raises, with no reader, would otherwise grow its queue for good."""
    h.append(failed(d, exc))
    if len(h) > FOLD_AT:
        h.fold()


def observe_span(s: Any) -> None:
    """Record a finished sampled span (its own start and end): the general path, by name and kind."""
    if not M.on:
        return
    # The slots where they are plain (spans.Span: a packed span decodes through its properties).
    t0 = s._t0
    d = s._end - s._start if t0 is None else s._t1 - t0
    if d < 0:
        d = 0
    h = series(s._name, s._kind)
    extra = s._extra
    code = 0 if extra is None else extra.status.code
    if code == 2:
        h.append(~d)
    elif code == 1:
        h.ok.append(d)
        if len(h.ok) > FOLD_AT:  # (spans set OK queue here only: the check below never sees them)
            h.fold()
    else:
        h.append(d)
    if len(h) > FOLD_AT:
        h.fold()


class Folded:
    """One label pair as a reader sees it: copies taken under the fold lock, merged by shown name."""

    __slots__ = ("hists", "kind", "name", "stream")

    def __init__(self, name: str, kind: int) -> None:
        self.name = name
        self.kind = kind
        self.hists = (Hist(), Hist(), Hist())  # unset, ok, error
        self.stream: tuple[Hist, Hist, Hist] | None = None  # ttft, per item, items

    def add(self, h: Series | Folded) -> None:
        """Merge a series' folded histograms into this copy."""
        for mine, theirs in zip(self.hists, h.hists, strict=True):
            mine.merge(theirs)
        if h.stream is not None:
            if self.stream is None:
                self.stream = (Hist(), Hist(), Hist(ITEM_BUCKETS))
            for mine, theirs in zip(self.stream, h.stream, strict=True):
                mine.merge(theirs)


def shown(name: str) -> str:
    """A span name as readers show it: cut at ``max_name_length`` (span() leaves the cut to the exporters)."""
    limit = LIMITS.max_name_length
    return name if len(name) <= limit else name[:limit]


def fold_all() -> list[Folded]:
    """Fold every series; for a reader, copies of them (taken under the fold lock, so a fold in
    another thread cannot change them mid-read), merged by shown name and kind."""
    found = list(M.series.values())
    out: dict[tuple[str, int], Folded] = {}
    with _LOCK:  # (a `with`: a signal handler's exception cannot leave the lock held, see Series.fold)
        for h in found:
            h._fold()
            key = (shown(h.name), h.kind)
            view = out.get(key)
            if view is None:
                view = out[key] = Folded(key[0], key[1])
            view.add(h)
    return list(out.values())


# References to a series held only by the table while reset() looks at it: the dict, the
# (key, series) pair of its copy, the loop variable and getrefcount's argument (+1 in by_name).
_TABLE_REFS = 4
_refcount = getattr(sys, "getrefcount", lambda obj: 1 << 30)  # (no refcounts: every series kept)


def reset() -> None:
    """Forget every observation; series still held (decorators, open calls) stay, emptied; the others go."""
    with _LOCK, _TABLE:
        for key, h in list(M.series.items()):
            kinds = M.by_name.get(h.name)
            listed = kinds is not None and any(k is h for k in kinds)
            # Held elsewhere too (an open span() or stream, a call running): kept, emptied, or
            # what it records when it ends would go to a series no reader sees any more.
            if _refcount(h) <= _TABLE_REFS + listed:  # (pinned too: a dropped decorator holds it no more)
                del M.series[key]
                kinds = M.by_name.get(h.name)
                if kinds is not None:  # (by identity: a Series is a list, == compares contents)
                    kinds[:] = [None if k is h else k for k in kinds]
                    if all(k is None for k in kinds):
                        del M.by_name[h.name]
        M.named = sum(1 for n, _ in M.series if n != OTHER)
        for h in list(M.series.values()):
            h.clear_all()
        M.overflow = 0
        M.since = time.time()


def _after_fork_in_child() -> None:
    """New locks in a forked child: one held by another thread at fork time is never released there
    (no fold ever ran again: every queue grew for good, and each read waited for good)."""
    global _LOCK, _TABLE
    _LOCK = threading.Lock()
    _TABLE = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def configure(on: bool, max_series: int) -> None:
    """Turn metrics on or off and set the series cap (existing decorators see it at their next call)."""
    M.on = bool(on)
    M.max_series = int(max_series)
