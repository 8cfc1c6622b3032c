"""Real traces for the browser tests, recorded through @traced and span(), and screenshot saving."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from autotrace import span, traced

SCREENSHOTS = Path(__file__).parent / "screenshots"
XSS_NAME = "<img src=x onerror=alert(1)>"
VIEWPORT = {"width": 1280, "height": 760}
README_SHOTS = frozenset({"list", "waterfall", "search", "flame", "stats", "compare", "inflight", "llm", "dark"})


def screenshot(page: Any, name: str) -> Path:
    """Save a PNG of the page in tests/browser/screenshots/.

    Runs write ``<name>.last.png`` (git-ignored); with AUTOTRACE_UPDATE_SCREENSHOTS=1 they
    overwrite the committed ``<name>.png`` that the README shows.
    """
    SCREENSHOTS.mkdir(exist_ok=True)
    update = os.environ.get("AUTOTRACE_UPDATE_SCREENSHOTS") == "1" and name in README_SHOTS
    path = SCREENSHOTS / (f"{name}.png" if update else f"{name}.last.png")
    page.screenshot(path=str(path))
    return path


def _work(ms: float) -> None:
    # real elapsed time so the waterfall has something to draw
    time.sleep(ms / 1000)


@traced("POST /v1/generate", kind="server", attributes={"gen_ai.request.model": "tiny-llm"})
def generate(prompt: str, *, fail: bool = False, flaky_search: bool = False) -> str:
    """A small instrumented inference request: tokenize, retrieve, prefill, decode, detokenize."""
    with span("tokenize") as s:
        s.set_attribute("gen_ai.usage.input_tokens", len(prompt.split()))
        _work(2)
    with span("retrieve", kind="client", attributes={"db.system": "vectors"}):
        with span("embed", kind="client", attributes={"embedding.dim": 384}):
            _work(6)
        try:
            with span("vector.search", kind="client", attributes={"k": 4}):
                _work(4)
                if flaky_search:
                    raise TimeoutError("vector index did not answer within 4 ms")
        except TimeoutError:
            with span("vector.search.retry", kind="client", attributes={"k": 4}):
                _work(5)
    with span("model.generate", attributes={"gen_ai.request.max_tokens": 64}) as gen:
        with span("prefill"):
            _work(8)
        for step in range(4):
            with span("decode", attributes={"step": step}) as d:
                _work(3)
                if step == 0:
                    d.add_event("first_token", {"ttft_ms": 11.5})
                if fail and step == 2:
                    raise RuntimeError("CUDA out of memory while decoding step 2")
        gen.set_attribute("gen_ai.usage.output_tokens", 4)
    with span("detokenize"):
        _work(1)
    return "hello"


def record_demo_traces(count: int = 8) -> None:
    """``count`` inference traces; the third fails, the fifth has a failed (retried) search."""
    for i in range(count):
        try:
            generate(f"prompt number {i} about tracing", fail=(i == 2), flaky_search=(i == 4))
        except RuntimeError:
            pass


def record_tree() -> dict[str, str]:
    """One trace: root -> (a -> a1, b); returns the trace id and its root span id."""
    with span("root", kind="server", attributes={"http.route": "/tree"}) as root:
        _work(1)
        with span("a", attributes={"answer": 42}):
            with span("a1", attributes={"note": "leaf"}):
                _work(1)
        with span("b"):
            _work(1)
    return {"trace_id": root.trace_id, "span_id": root.span_id}


def record_big_store(small: int = 999, layers: int = 40, ops: int = 48, chain: int = 39) -> str:
    """``small`` two-span traces, then one trace of 1 + layers*(1+ops) + chain spans; returns its id."""
    for i in range(small):
        with span(f"small-{i}"), span("child"):
            pass
    with span("big-trace") as root:
        for layer in range(layers):
            with span(f"layer-{layer}"):
                for op in range(ops):
                    with span(f"op-{layer}-{op}", attributes={"op": op}):
                        pass
        _chain(chain)
    return root.trace_id


def _chain(depth: int) -> None:
    # nested without recursion limits: enter spans one inside another
    from contextlib import ExitStack

    with ExitStack() as stack:
        for level in range(depth):
            stack.enter_context(span(f"chain-{level}"))
