"""Local root spans still open, sampled or not: what ``GET /inflight`` lists.

Two sources, so the hottest path files nothing:

- a plain sync ``@traced`` function is found in the stacks of the running
  threads (``sys._current_frames()``): each frame of its wrapper (codes in
  ``FRAME_CODES``) holds the parent it ran under (``parent``, None for a local
  root), its span ``s`` when sampled, else the trace's seed ``lo`` and the start
  ``t0`` (``perf_counter_ns``, taken while metrics are on) and series ``h``.
  Nested frames of a sampled root give the chain of open spans down to the
  innermost one;
- ``span()`` roots and sampled async roots are appended to ``ROOTS`` when
  entered: a root is open while it has no end. A ``span()`` root leaving its
  block takes itself out again when it is the last one listed (the common
  case); the others (sampled async roots, roots ended another way or left in
  another order) are pruned past ``ROOTS_PRUNE_AT`` entries and at each read;
- unsampled async roots and wrapt-wrapped callables' roots are filed in
  ``OPEN`` while they run: ``OPEN[seed] = (series, perf_counter_ns at start, name)``.

Names are the roots' own (the wrapper's ``name``, span()'s ``_root``), not their
series': past the series cap that is ``"_other"``.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections import deque
from types import CodeType
from typing import Any

from ._model import unsampled_context

__all__ = ["FRAME_CODES", "OPEN", "inflight"]

OPEN: dict[Any, Any] = {}
FRAME_CODES: set[CodeType] = set()
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


def _listed() -> list[Any]:
    """A copy of ROOTS while other threads append and take out (a copy cut by a change is made again)."""
    for _ in range(100):
        try:
            return list(ROOTS)
        except RuntimeError:  # "deque mutated during iteration": only if the copy ran Python code (a collection)
            continue
    return []


def _sampled(s: Any, now_wall: int, chain: list[Any]) -> dict[str, Any]:
    ctx = s.get_span_context()
    start = s._start
    skipped = max(0, len(chain) - CHAIN_MAX)
    if skipped:
        chain = [chain[0], *chain[skipped + 1 :]]
    return {
        "name": s.name,
        "trace_id": ctx.trace_id_hex,
        "span_id": ctx.span_id_hex,
        "start_time_unix_nano": start,
        "age_seconds": max(0, now_wall - start) / 1e9,
        "sampled": True,
        "chain": [
            {"name": c.name, "span_id": f"{c._span_id:016x}", "age_seconds": max(0, now_wall - c._start) / 1e9}
            for c in chain
        ],
        "chain_skipped": skipped,  # open spans left out between the root and the innermost ones
    }


def _unsampled(name: str, seed: int, t0: int, now_wall: int, now_perf: int) -> dict[str, Any]:
    age = max(0, now_perf - t0)
    ctx = unsampled_context(seed)
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
    if hasattr(root, "_seed"):
        return _unsampled(name, root._seed, root._t0, now_wall, now_perf)
    record = _unsampled(name, 1, root._t0, now_wall, now_perf)
    ctx = root.get_span_context()
    record["trace_id"], record["span_id"] = ctx.trace_id_hex, ctx.span_id_hex
    return record


def _from_frames(now_wall: int, now_perf: int) -> list[dict[str, Any]]:
    """Open roots of plain sync ``@traced`` functions, from the stacks of the other threads."""
    found: list[dict[str, Any]] = []
    me = threading.get_ident()
    codes = FRAME_CODES
    # No collection while another thread's frames are read: a collection inside
    # f_locals (which copies the frame's fast locals into a dict, in C) can run
    # finalizers, that is Python code, that is a switch to the thread whose
    # frame is being copied, which may return from it meanwhile (a crash seen
    # under load on 3.11).
    collecting = gc.isenabled()
    gc.disable()
    try:
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            try:
                _from_stack(frame, codes, found, now_wall, now_perf)
            except Exception:
                # The thread runs on while it is read: a span it ends meanwhile is packed
                # (its slots gone) or its frame's locals change. What it was running
                # is over; the next look sees what runs now.
                continue
    finally:
        if collecting:
            gc.enable()
    return found


def _from_stack(frame: Any, codes: set[CodeType], found: list[dict[str, Any]], now_wall: int, now_perf: int) -> None:
    """The open roots in one thread's stack, appended to ``found``."""
    mine: list[Any] = []  # wrapper frames, innermost first
    f: Any = frame
    while f is not None:
        if f.f_code in codes:
            mine.append(f)
        f = f.f_back
    if not mine:
        return
    spans: list[Any] = []  # sampled spans still open, outermost first
    for f in reversed(mine):
        local = f.f_locals
        s = local.get("s")
        if s is not None and s.__class__.__name__ == "Span" and s._end is None:
            if local.get("parent", 0) is None:
                spans = [s]
            elif spans and s._trace_id == spans[0]._trace_id:
                spans.append(s)
        elif local.get("parent", 0) is None and "t0" in local and "lo" in local and "h" in local:
            name = local.get("name")
            if not isinstance(name, str):
                name = local["h"].name
            found.append(_unsampled(name, local["lo"], local["t0"], now_wall, now_perf))
    if spans:
        found.append(_sampled(spans[0], now_wall, spans))


def inflight(min_age: float = 0.0) -> list[dict[str, Any]]:
    """The open local roots, oldest first, at least ``min_age`` seconds old."""
    now_wall = time.time_ns()
    now_perf = time.perf_counter_ns()
    found = _from_frames(now_wall, now_perf)
    prune()
    for root in [*KEPT, *_listed()]:
        try:  # (a root ending in another thread meanwhile: as in _from_frames)
            if not _is_open(root):
                continue
            if hasattr(root, "_series"):  # span()'s non-recording root
                if root._series is not None:
                    found.append(_non_recording(root, now_wall, now_perf))
            else:
                found.append(_sampled(root, now_wall, [root]))
        except Exception:
            continue
    for key, value in list(OPEN.items()):
        try:
            if value is key:  # a sampled root span
                found.append(_sampled(value, now_wall, [value]))
            else:
                _, t0, name = value
                found.append(_unsampled(name, key if isinstance(key, int) else 0, t0, now_wall, now_perf))
        except Exception:
            continue
    found = [r for r in found if r["age_seconds"] >= min_age]
    found.sort(key=lambda r: r["start_time_unix_nano"])
    return found
