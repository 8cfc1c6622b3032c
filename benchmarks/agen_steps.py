"""What each step of the traced async generator's driver costs per item, beside OpenTelemetry's.

    python benchmarks/agen_steps.py            # 9 rounds
    python benchmarks/agen_steps.py --quick    # 5 rounds
    python benchmarks/agen_steps.py --smoke    # 2 short rounds: figures only (for CI)

Each row is an async generator of GEN_ITEMS items consumed with ``async for``,
timed as benchmarks/run.py times its rows (the same cases, rounds in a shuffled
order, CPU time, the collector off). The "+" rows are stripped copies of the
driver in autotrace/decorators.py, one step more per row: the figure beside each
is what that step adds per item, in the same run. "ContextVar set/reset" is the
previous driver's way to keep the span current inside only; "Context.run +
pump" is this one's (the body runs in a Context of its own). The last rows are
the real thing and OpenTelemetry's span around the body, whose own cost is
spread over the items.
"""

from __future__ import annotations

import argparse
import contextvars
import os
import statistics
import sys
import time
import types
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run as bench  # benchmarks/run.py: its cases, timers and configuration

from autotrace.context import CURRENT

GEN_ITEMS = bench.GEN_ITEMS
_ITEM = object()
_pc = time.perf_counter


async def bare() -> AsyncGenerator[int, None]:
    for i in range(GEN_ITEMS):
        yield i


async def layer(agen: AsyncGenerator[Any, Any]) -> AsyncGenerator[Any, Any]:
    """An async generator passing another's items through: the layer every driver adds."""
    asend = agen.asend
    value = None
    while True:
        try:
            item = await asend(value)
        except StopAsyncIteration:
            return
        value = yield item


async def set_reset(agen: AsyncGenerator[Any, Any]) -> AsyncGenerator[Any, Any]:
    """The layer, the span set around each resume and reset after it (the previous driver)."""
    asend = agen.asend
    value = None
    target: Any = 1
    while True:
        token = CURRENT.set(target)
        try:
            item = await asend(value)
        except StopAsyncIteration:
            return
        finally:
            target = CURRENT.get()
            CURRENT.reset(token)
        value = yield item


def _pump(cell: list[Any], aw: Any) -> Generator[Any, Any, None]:
    while True:
        cell[0] = yield from aw
        aw = yield _ITEM


@types.coroutine
def _relay(run: Callable[..., Any], pump: Generator[Any, Any, None], waiting: Any) -> Generator[Any, Any, None]:
    while True:
        waiting = run(pump.send, (yield waiting))
        if waiting is _ITEM:
            return


def _start(agen: AsyncGenerator[Any, Any]) -> tuple[Any, ...]:
    """A pump over ``agen`` in a Context of its own, its first step taken."""
    ctx = contextvars.copy_context()
    cell: list[Any] = [None]
    pump = _pump(cell, agen.asend(None))
    return ctx, ctx.run, cell, pump, pump.send, ctx.run(pump.send, None)


async def pumped(agen: AsyncGenerator[Any, Any]) -> AsyncGenerator[Any, Any]:
    """The layer, each step a Context.run() of a pump (this driver's switch)."""
    _, run, cell, pump, step, waiting = _start(agen)
    asend = agen.asend
    while True:
        if waiting is not _ITEM:
            await _relay(run, pump, waiting)
        value = yield cell[0]
        try:
            waiting = run(step, asend(value))
        except StopAsyncIteration:
            return


async def clocked(agen: AsyncGenerator[Any, Any]) -> AsyncGenerator[Any, Any]:
    """pumped, and the time of each item."""
    _, run, cell, pump, step, waiting = _start(agen)
    asend = agen.asend
    while True:
        if waiting is not _ITEM:
            await _relay(run, pump, waiting)
        _ = _pc()
        value = yield cell[0]
        try:
            waiting = run(step, asend(value))
        except StopAsyncIteration:
            return


async def counted(agen: AsyncGenerator[Any, Any]) -> AsyncGenerator[Any, Any]:
    """clocked, and the count and the longest gap between items."""
    _, run, cell, pump, step, waiting = _start(agen)
    asend = agen.asend
    last = _pc()
    count = 0
    max_gap = 0.0
    while True:
        if waiting is not _ITEM:
            await _relay(run, pump, waiting)
        now = _pc()
        if now - last > max_gap:
            max_gap = now - last
        last = now
        count += 1
        value = yield cell[0]
        try:
            waiting = run(step, asend(value))
        except StopAsyncIteration:
            return


async def mirrored(agen: AsyncGenerator[Any, Any]) -> AsyncGenerator[Any, Any]:
    """counted, and the check for context variables the body wrote (none here)."""
    ctx, run, cell, pump, step, waiting = _start(agen)
    snap = ctx.copy()
    asend = agen.asend
    last = _pc()
    count = 0
    max_gap = 0.0
    while True:
        if waiting is not _ITEM:
            await _relay(run, pump, waiting)
        if ctx != snap:
            snap = ctx.copy()
        now = _pc()
        if now - last > max_gap:
            max_gap = now - last
        last = now
        count += 1
        value = yield cell[0]
        try:
            waiting = run(step, asend(value))
        except StopAsyncIteration:
            return


STEPS: list[tuple[str, str, Callable[[], Any]]] = [
    ("bare", "bare async generator", bare),
    ("layer", "+ an async generator layer around it", lambda: layer(bare())),
    ("set_reset", "+ ContextVar set/reset around each resume (previous driver)", lambda: set_reset(bare())),
    ("pump", "+ Context.run of a pump instead (this driver)", lambda: pumped(bare())),
    ("clock", "+ perf_counter() per item", lambda: clocked(bare())),
    ("gap", "+ count and longest gap", lambda: counted(bare())),
    ("mirror", "+ the check for context variables the body wrote", lambda: mirrored(bare())),
]


def cases() -> list[bench.Case]:
    out = [bench.Case(key, label, bench.agen_timer(fn), per="item", units=GEN_ITEMS) for key, label, fn in STEPS]
    for case in bench.autotrace_cases():
        if case.key in ("agen_unsampled", "agen_sampled"):
            out.append(case)
    if bench.HAVE_OTEL:
        out += [c for c in bench.otel_cases().cases if c.key == "otel_agen"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds")
    parser.add_argument("--smoke", action="store_true", help="2 short rounds (figures only)")
    args = parser.parse_args()
    rounds, target = (2, 0.001) if args.smoke else (5, 0.01) if args.quick else (9, 0.02)
    measured = cases()
    bench.measure(measured, rounds, target, seed=1, progress=False)
    med = {c.key: statistics.median(c.samples) for c in measured}
    print(f"| {GEN_ITEMS} items per stream, CPython {sys.version.split()[0]} | ns per item | step adds |")
    print("|---|---:|---:|")
    previous = {"layer": "bare", "set_reset": "layer", "pump": "layer", "clock": "pump", "gap": "clock"}
    previous.update(mirror="gap", agen_unsampled="bare", agen_sampled="bare", otel_agen="bare")
    for c in measured:
        before = previous.get(c.key)
        adds = f"{med[c.key] - med[before]:+.0f} ns" if before else ""
        print(f"| {c.label} | {med[c.key]:.0f} | {adds} |")
    if "otel_agen" in med:
        print(f"\ntraced async generator sampled / OpenTelemetry's: {med['agen_sampled'] / med['otel_agen']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
