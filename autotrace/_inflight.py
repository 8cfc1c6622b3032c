"""Local root spans still open, sampled or not: what ``GET /inflight`` lists.

Every root is filed while it runs by the code that runs it; nothing here looks
into another thread's stack or frames. Where each kind is filed:

- a plain sync ``@traced`` function appends its roots to a list of its own
  (``watch``): the span of a sampled root, ``(seed, start)`` for an unsampled
  one while metrics are on (the start, ``perf_counter_ns``, is the one the
  metrics take). A list per function, so the entry needs no name. The entry
  is appended inside the call's ``try`` and removed in its ``finally`` (after the
  context reset, in a ``finally`` of its own): whatever is raised (a signal
  handler's exception, KeyboardInterrupt), nothing outlives the call. Its roots
  below a context from elsewhere (a traceparent) go to ``OPEN``, as below;
- ``span()`` roots, capture and stream roots are appended to ``ROOTS`` when
  entered: a root is open while it has no end. A ``span()`` root leaving its
  block takes itself out again when it is the last one listed (the common
  case); the others (roots ended another way or left in another order) are
  pruned past ``ROOTS_PRUNE_AT`` entries and at each read;
- async roots and wrapt-wrapped callables' unsampled roots are filed in ``OPEN``
  while they run: ``OPEN[span] = span`` sampled, ``OPEN[seed] = (series,
  perf_counter_ns at start, name)`` unsampled (the key a non-recording span
  below an unsampled context from elsewhere).

Unsampled roots are listed while metrics are on (their start is taken for
the metrics); with metrics off an unsampled call files nothing, so it costs
no more than without /inflight. Sampled roots are listed either way.

The chain of a sampled root (where the request is now): every sampled span,
when it starts as a child of an open span, writes itself in its parent's
``_attr0`` slot (a slot that holds an attribute value only once the span has
ended and packed its attributes: see ``Span.__slots__``). The chain follows
those links from the root while they lead to open spans of its trace. One
slot store per child, and one at the span's end, which lets its link go (packing
writes over it, or None): a stored span must not keep alive a child dropped past
max_spans_per_trace, nor close a cycle through a child left entered (its token
holds the parent). The child checks that its parent is open and writes the link
in one statement on one line, with no call (``spans.ENDED``): the parent's end,
which sets its end before it packs, cannot come between them in another thread,
not even through a tracer's line event. With children running at once (threads,
``asyncio.gather``), the chain follows the one started last; it stops at the
first ended span.

Names are the roots' own (the wrapper's ``name``, span()'s ``_root``), not their
series': past the series cap that is ``"_other"``.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from ._errors import reraise_foreign
from ._model import unsampled_context

__all__ = ["OPEN", "inflight", "oldest", "watch"]

OPEN: dict[Any, Any] = {}
# The sync @traced functions' lists of open roots: {number: (weakref to the function, name, list)},
# each entry removed when its function is freed. A plain dict: copied in one C step at a read.
_WATCHED: dict[int, tuple[Any, str, list[Any]]] = {}
_numbers = itertools.count()

# span()'s roots, appended when entered: a root is open while its span has no
# end (or, unsampled, still has its series). A deque: a root appended and taken
# out again (span()'s exit) costs no allocation, where a list emptied and filled
# again reallocates its storage each time. Pruned of ended ones past
# ROOTS_PRUNE_AT entries (and at each read), so at most that many ended roots
# stay referenced here.
ROOTS: deque[Any] = deque()
ROOTS_PRUNE_AT = 1024
KEPT: list[Any] = []  # roots found still open at a prune (only prune() writes it)
_KEPT_PRUNE_AT = ROOTS_PRUNE_AT
_PRUNING = threading.Lock()  # taken by `with` only (see _metrics.Series.fold)


def _after_fork_in_child() -> None:
    """A new prune lock in a forked child: one held by another thread at fork time would stay held
    there, and ROOTS would never be pruned again."""
    global _PRUNING
    _PRUNING = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _is_open(obj: Any) -> bool:
    return obj._series is not None if hasattr(obj, "_series") else obj._end is None


def add_root(root: Any) -> None:
    """List a root (a Span, or span()'s unsampled root) until it ends; what span() does inline."""
    ROOTS.append(root)
    if len(ROOTS) > ROOTS_PRUNE_AT:
        prune()


def prune() -> None:
    """Drop ended roots from ROOTS (unless another thread is at it); the open ones move to KEPT."""
    global _KEPT_PRUNE_AT
    if _PRUNING.locked():  # another thread is at it
        return
    with _PRUNING:  # (two threads passing the check at once prune one after the other)
        # The first n entries, taken one by one from the left (each popleft is
        # atomic under the GIL): roots appended meanwhile land past them and
        # stay. Fewer may be left: exits in other threads take theirs out.
        taken: list[Any] = []
        take = ROOTS.popleft
        try:
            for _ in range(len(ROOTS)):
                taken.append(take())
        except IndexError:
            pass
        KEPT.extend([r for r in taken if _is_open(r)])
        # Roots open for long (or never closed) wait in KEPT, pruned when it has
        # doubled since: each root is looked at O(1) times on average, however
        # many stay open.
        if len(KEPT) > _KEPT_PRUNE_AT:
            KEPT[:] = [r for r in KEPT if _is_open(r)]
            _KEPT_PRUNE_AT = max(ROOTS_PRUNE_AT, 2 * len(KEPT))


CHAIN_MAX = 64  # spans of a chain listed: the root and the innermost ones (deep recursion is not megabytes)
_CHAIN_WALK = 1_000_000  # links followed at most (they never loop: this only bounds a read)


def watch(function: Callable[..., Any], name: str, roots: list[Any]) -> None:
    """List the open roots a sync ``@traced`` wrapper files in ``roots`` (under ``name``) while it lives."""
    number = next(_numbers)
    forget = _WATCHED.pop  # (bound now: it works at interpreter exit too)

    def unwatch(_: Any) -> None:
        forget(number, None)

    _WATCHED[number] = (weakref.ref(function, unwatch), name, roots)


def _copied(source: Callable[[], Any]) -> list[Any]:
    """A copy of a list, deque or dict view while other threads change it (a copy cut by a change is made again)."""
    for _ in range(100):
        try:
            return list(source())
        except RuntimeError:  # "mutated during iteration": only if the copy ran Python code (a collection)
            continue
    return []


def _chain(root: Any) -> tuple[list[Any], int]:
    """The open spans from ``root`` down to the innermost one (at most CHAIN_MAX) and how many were left out."""
    span_type = root.__class__
    trace_id = root._trace_id
    inner: deque[Any] = deque(maxlen=CHAIN_MAX - 1)
    seen = 0
    s = root
    for _ in range(_CHAIN_WALK):
        try:
            s = s._attr0  # its latest child while it is open (see the module docstring)
        except AttributeError:  # never had a child
            break
        if s.__class__ is not span_type or s._t1 is not None or s._trace_id != trace_id:
            break  # an attribute value (it ended meanwhile), or a child that has ended
        inner.append(s)
        seen += 1
    return [root, *inner], seen - len(inner)


def _sampled(s: Any, now_wall: int) -> dict[str, Any]:
    """A recorded root; ``sampled`` False when tail sampling records it provisionally. Its chain is
    followed by ``_with_chain`` once the roots to show are known: the record holds the span till then."""
    start = s._start
    return {
        "name": s.name,
        # The ids as they are, not through get_span_context(): in a provisional trace that call
        # shares it (_tail.share), so a look at /inflight would change what tail sampling does.
        "trace_id": f"{int(s._trace_id):032x}",
        "span_id": f"{s._span_id:016x}",
        "start_time_unix_nano": start,
        "age_seconds": max(0, now_wall - start) / 1e9,
        "sampled": s.is_sampled,  # (a property reading the trace's buffer: no side effect)
        "chain": s,  # (the root until _with_chain)
        "chain_skipped": 0,  # open spans left out between the root and the innermost ones
    }


def _with_chain(record: dict[str, Any], now_wall: int) -> None:
    """Follow a recorded root's chain (its span in ``chain``) into the record; an unsampled one has none."""
    root = record["chain"]
    if root.__class__ is list:
        return
    try:
        chain, skipped = _chain(root)
        record["chain"] = [
            {"name": c.name, "span_id": f"{c._span_id:016x}", "age_seconds": max(0, now_wall - c._start) / 1e9}
            for c in chain
        ]
        record["chain_skipped"] = skipped
    except Exception as exc:  # (it ended meanwhile, in another thread: as in inflight())
        reraise_foreign(exc)
        record["chain"] = [{"name": record["name"], "span_id": record["span_id"], "age_seconds": record["age_seconds"]}]


def _unsampled(name: str, seed: Any, t0: int, now_wall: int, now_perf: int) -> dict[str, Any]:
    """An unsampled root: ``seed`` the low 64 bits of a new trace's id, or its span below a context from elsewhere."""
    age = max(0, now_perf - t0)
    ctx = unsampled_context(seed) if seed.__class__ is int else seed.get_span_context()
    return {
        "name": name,
        "trace_id": ctx.trace_id_hex,
        "span_id": ctx.span_id_hex,
        "start_time_unix_nano": now_wall - age,
        "age_seconds": age / 1e9,
        "sampled": False,
        "chain": [],
        "chain_skipped": 0,
    }


def _non_recording(root: Any, now_wall: int, now_perf: int) -> dict[str, Any]:
    """span()'s unsampled root: its own seed, or (below a remote unsampled parent) its context."""
    name = root._root if isinstance(root._root, str) else root._series.name
    return _unsampled(name, root._seed if hasattr(root, "_seed") else root, root._t0, now_wall, now_perf)


def inflight(min_age: float = 0.0) -> list[dict[str, Any]]:
    """The open local roots, oldest first, at least ``min_age`` seconds old."""
    return oldest(min_age)[0]


def oldest(min_age: float = 0.0, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """The ``limit`` oldest open local roots at least ``min_age`` seconds old, and how many there are.

    Chains are followed for those only: thousands of open roots, each deep, cost a reader the
    records it shows (at most CHAIN_MAX links each), not megabytes per look.
    """
    now_wall = time.time_ns()
    now_perf = time.perf_counter_ns()
    found: list[dict[str, Any]] = []
    # Each record is read while its root may end in another thread: a span ended
    # meanwhile is packed (its slots gone), a dict entry popped. What it was
    # running is over; the next look sees what runs now.
    for _, name, roots in _copied(_WATCHED.values):
        for root in _copied(roots.__iter__):
            try:
                if root.__class__ is tuple:  # an unsampled root: (seed, start)
                    found.append(_unsampled(name, root[0], root[1], now_wall, now_perf))
                elif _is_open(root):
                    found.append(_sampled(root, now_wall))
            except Exception as exc:  # (a signal handler's exception goes on)
                reraise_foreign(exc)
                continue
    prune()
    for root in [*KEPT, *_copied(ROOTS.__iter__)]:
        try:
            if not _is_open(root):
                continue
            if hasattr(root, "_series"):  # span()'s non-recording root
                if root._series is not None:
                    found.append(_non_recording(root, now_wall, now_perf))
            else:
                found.append(_sampled(root, now_wall))
        except Exception as exc:  # (a signal handler's exception goes on)
            reraise_foreign(exc)
            continue
    for key, value in _copied(OPEN.items):
        try:
            if value is key:  # a sampled root span
                found.append(_sampled(value, now_wall))
            else:
                _, t0, name = value
                found.append(_unsampled(name, key, t0, now_wall, now_perf))  # a seed, or a span below a remote parent
        except Exception as exc:  # (a signal handler's exception goes on)
            reraise_foreign(exc)
            continue
    found = [r for r in found if r["age_seconds"] >= min_age]
    found.sort(key=lambda r: r["start_time_unix_nano"])
    shown = found if limit is None else found[:limit]
    for record in shown:
        _with_chain(record, now_wall)
    return shown, len(found)
