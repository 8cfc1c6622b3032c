"""Local root spans still open, sampled or not: what ``GET /inflight`` lists.

The hot path files a root when it starts and takes it out when it ends (one
dict store and one pop): a sampled root as ``OPEN[span] = span``, an unsampled
one as ``OPEN[seed] = (series, perf_counter_ns at start)``. Bounded by the
number of requests running at once.
"""

from __future__ import annotations

import time
from typing import Any

from ._model import unsampled_context

__all__ = ["OPEN", "inflight"]

OPEN: dict[Any, Any] = {}


def inflight(min_age: float = 0.0) -> list[dict[str, Any]]:
    """The open local roots, oldest first, at least ``min_age`` seconds old."""
    now_wall = time.time_ns()
    now_perf = time.perf_counter_ns()
    found: list[dict[str, Any]] = []
    for key, value in list(OPEN.items()):
        if value is key:  # a sampled root span
            s = value
            start = s._start
            ctx = s.get_span_context()
            record = {
                "name": s.name,
                "trace_id": ctx.trace_id_hex,
                "span_id": ctx.span_id_hex,
                "start_time_unix_nano": start,
                "age_seconds": max(0, now_wall - start) / 1e9,
                "sampled": True,
                "chain": [{"name": s.name, "span_id": ctx.span_id_hex}],
            }
        else:
            h, t0 = value
            age = max(0, now_perf - t0)
            ctx = unsampled_context(key)
            record = {
                "name": h.name,
                "trace_id": ctx.trace_id_hex,
                "span_id": ctx.span_id_hex,
                "start_time_unix_nano": now_wall - age,
                "age_seconds": age / 1e9,
                "sampled": False,
                "chain": [],
            }
        if record["age_seconds"] >= min_age:
            found.append(record)
    found.sort(key=lambda r: r["start_time_unix_nano"])
    return found
