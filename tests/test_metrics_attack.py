"""Metrics defects found by attack: cancellation labels, hostile names in /metrics, reads racing folds."""

from __future__ import annotations

import asyncio

import pytest

import autotrace
from autotrace import span, traced
from autotrace.config import TraceConfig


def _by_status(name: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in autotrace.metrics.snapshot()["spans"]:
        if row["name"] == name:
            out[row["status_code"]] = out.get(row["status_code"], 0) + row["count"]
    return out


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_cancelled_call_is_labelled_alike_sampled_or_not(rate: float) -> None:
    """A cancelled call is no error (as its sampled span's status): the same label at rate 0 and 1, on every path."""
    autotrace.configure(TraceConfig(sample_rate=rate))
    autotrace.metrics.reset()

    @traced("cancel.root")
    async def root() -> None:
        await asyncio.sleep(30)

    @traced("cancel.child")
    async def child() -> None:
        await asyncio.sleep(30)

    @traced("cancel.parent")
    async def parent() -> None:
        await child()

    @traced("cancel.sync")
    def sync() -> None:
        raise asyncio.CancelledError

    async def in_span() -> None:
        with span("cancel.span"):
            await asyncio.sleep(30)

    async def main() -> None:
        for make in (root, parent, in_span):
            task = asyncio.ensure_future(make())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        with pytest.raises(asyncio.CancelledError):
            sync()

    asyncio.run(main())
    for name in ("cancel.root", "cancel.child", "cancel.parent", "cancel.sync", "cancel.span"):
        assert _by_status(name) == {"unset": 1}, (name, rate)
