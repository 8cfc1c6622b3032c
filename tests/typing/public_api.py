"""Public-API examples that `mypy --strict` must accept (run by .ci/run, not by pytest)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import autotrace
import autotrace.propagation
from autotrace import InferenceSpanBuilder, Span, SpanKind, StatusCode, TraceConfig, span, traced


@traced
def tokenize(text: str) -> list[str]:
    return text.split()


@traced("generate", kind="server", attributes={"gen_ai.request.model": "tiny-llm"})
async def generate(prompt: str, max_tokens: int = 128) -> str:
    return prompt[:max_tokens]


@traced(capture_args=True, capture_result=True)
def embed(texts: list[str]) -> list[float]:
    return [float(len(t)) for t in texts]


@traced
def stream(prompt: str) -> Iterator[str]:
    yield from prompt.split()


@traced(name="astream", kind=SpanKind.INTERNAL)
async def astream(prompt: str) -> AsyncIterator[str]:
    for word in prompt.split():
        yield word


@autotrace.llm("chat", model="tiny-llm", provider="local")
def chat_stream(prompt: str, max_tokens: int = 16) -> Iterator[str]:
    yield from prompt.split()


@autotrace.llm
async def complete(prompt: str) -> str:
    return prompt


def main() -> None:
    store = autotrace.configure(TraceConfig(sample_rate=1.0), max_traces=10)
    words: list[str] = tokenize("a b")
    text: str = asyncio.run(generate("hi"))
    vec: list[float] = embed(["x"])
    with span("decode", attributes={"step": 3}) as s:
        s.set_attribute("tokens", 12)
        s.add_event("first_token", {"ttft_ms": 41.2})
        s.set_status(StatusCode.OK)
    current: str = autotrace.current_span().trace_id
    stored: bool = autotrace.record_span(Span("custom_operation", attributes={"k": 1}))
    built: bool = InferenceSpanBuilder("inference").with_request_id(1).with_model("m").build_and_record()
    tokens: list[str] = list(chat_stream("a b"))
    done: str = asyncio.run(complete("x"))
    with autotrace.llm("chat", model="m", capture_io=True) as llm_span:
        llm_span.set_usage(input_tokens=3, output_tokens=4)
        llm_span.set_response(model="m-1", finish_reasons=["stop"])
        llm_span.set_attribute("k", 1)
    print(tokens, done)
    doc: dict[str, object] = autotrace.export_traces(limit=5)
    n: int = autotrace.trace_count() + autotrace.clear_traces() + store.trace_count()
    env: dict[str, str] = autotrace.propagation.inject_env()
    parent: autotrace.SpanContext | None = autotrace.propagation.extract_env(env)
    with span("child", parent=parent):
        pass
    print(words, text, vec, current, stored, built, doc, n, list(stream("a b")))


def asgi_and_outgoing() -> None:
    """The ASGI middleware wraps any ASGI app; the httpx transports fit httpx's clients."""
    import httpx
    from fastapi import FastAPI

    from autotrace import propagation
    from autotrace.asgi import TracingMiddleware

    app = TracingMiddleware(FastAPI(), excluded_paths=("/health",))
    assert callable(app)
    httpx.Client(transport=propagation.httpx_transport(httpx.HTTPTransport(retries=1)))
    httpx.AsyncClient(transport=propagation.async_httpx_transport())
    propagation.trace_requests()
