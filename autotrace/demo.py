"""A tiny inference server to try autotrace on: ``autotrace demo``.

``create_demo_app()`` is a Bottle app whose handlers are instrumented the way
a real model server would be: ``POST /generate`` streams tokens from a traced
generator with ``tokenize``, ``prefill`` and ``decode`` child spans carrying
GenAI semantic-convention attributes, and ``GET /models`` lists the model. The
/traces routes, /health, /ready and the viewer come from ``autotrace.server``.
Each request to /generate or /models is one SERVER span (the app runs them
through ``autotrace.wsgi.TracingMiddleware``, as ``create_app`` does), so a
caller's ``traceparent`` is continued and answered.
The "model" is a deterministic toy: no weights, no randomness between runs.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Generator, Iterable, Iterator
from typing import Any

import bottle

from .decorators import traced
from .propagation import traced_urlopen
from .server import Guard, Problem, _TracedBottle, install
from .store import TraceStore
from .tracer import shutdown, span

__all__ = ["MODEL", "create_demo_app", "generate_tokens", "send_traffic"]

MODEL = "tiny-llm"
"""The one model the demo server offers (``GET /models``, ``gen_ai.request.model``)."""
MAX_BODY = 64 * 1024
MAX_PROMPT = 10_000
MAX_TOKENS = 512
DEFAULT_MAX_TOKENS = 16

_VOCAB = (
    "the", "model", "reads", "your", "prompt", "and", "writes", "a", "short", "answer", "one", "token",
    "at", "a", "time", "while", "autotrace", "records", "every", "step", "as", "a", "span", "so", "you",
    "can", "see", "where", "the", "time", "goes",
)  # fmt: skip
_END = "."

PROMPTS = (
    "Explain tracing in one sentence",
    "Write a haiku about latency",
    "What is a span?",
    "Summarise the plot of a very short story",
    "Why is the first token slow?",
    "Name three colours",
)


@traced("tokenize")
def tokenize(text: str) -> list[int]:
    """Words to token ids (a toy: CRC32 of each word)."""
    return [zlib.crc32(word.encode()) & 0xFFFF for word in text.split()] or [0]


@traced("prefill")
def prefill(ids: list[int], delay: float) -> int:
    """Run the prompt through the 'model'; returns the state the decoder starts from."""
    time.sleep(delay * (2 + len(ids) / 8))  # prefill cost grows with the prompt
    return zlib.crc32(bytes(i & 0xFF for i in ids))


def _next_token(state: int, step: int) -> tuple[str, int]:
    state = zlib.crc32(step.to_bytes(4, "little"), state)
    # About one answer in eight stops early, so finish reasons vary.
    if step >= 3 and state % 8 == 0:
        return _END, state
    return _VOCAB[state % len(_VOCAB)], state


@traced(
    f"text_completion {MODEL}",
    attributes={
        "gen_ai.operation.name": "text_completion",
        "gen_ai.provider.name": "autotrace.demo",
        "gen_ai.request.model": MODEL,
    },
)
def generate_tokens(
    prompt: str, max_tokens: int = DEFAULT_MAX_TOKENS, *, delay: float = 0.002
) -> Generator[str, None, None]:
    """Stream up to ``max_tokens`` tokens for ``prompt``; the span stays open until the stream ends."""
    from .context import current_span

    root = current_span()  # inside a traced generator: this generator's own span
    started = time.monotonic()
    root.set_attribute("gen_ai.request.max_tokens", max_tokens)
    ids = tokenize(prompt)
    root.set_attribute("gen_ai.usage.input_tokens", len(ids))
    state = prefill(ids, delay)
    produced = 0
    finish = "length"
    try:
        for step in range(max_tokens):
            # One span per decode step, closed before the yield: a span left open across
            # a yield would be current for whatever the consumer does meanwhile.
            with span("decode", attributes={"autotrace.demo.step": step}) as s:
                time.sleep(delay)
                token, state = _next_token(state, step)
                s.set_attribute("autotrace.demo.token", token)
            produced += 1
            if produced == 1:  # a GenAI name: this span is the model call
                root.set_attribute("gen_ai.response.time_to_first_chunk", time.monotonic() - started)
            yield token
            if token == _END:
                finish = "stop"
                break
    finally:
        root.set_attribute("gen_ai.usage.output_tokens", produced)
        root.set_attribute("gen_ai.response.model", MODEL)
        root.set_attribute("gen_ai.response.finish_reasons", [finish])


def _request_json() -> dict[str, Any]:
    request = bottle.request
    try:
        length = int(request.environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise Problem(400, "Content-Length must be an integer")
    if length < 0:
        raise Problem(400, "Content-Length must not be negative")
    if length > MAX_BODY:
        raise Problem(413, f"request body is larger than {MAX_BODY} bytes")
    raw = request.environ["wsgi.input"].read(length) if length else b""
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, f"the body must be a JSON object: {exc}")
    if not isinstance(body, dict):
        raise Problem(400, "the body must be a JSON object")
    return body


def _generate_options(body: dict[str, Any]) -> tuple[str, int, bool]:
    unknown = sorted(set(body) - {"prompt", "max_tokens", "stream", "model"})
    if unknown:
        raise Problem(400, f"unknown field {unknown[0]!r}; use prompt, max_tokens, stream, model")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT:
        raise Problem(400, f"prompt must be a string of at most {MAX_PROMPT} characters")
    max_tokens = body.get("max_tokens", DEFAULT_MAX_TOKENS)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS:
        raise Problem(400, f"max_tokens must be an integer from 1 to {MAX_TOKENS}")
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise Problem(400, "stream must be true or false")
    if body.get("model", MODEL) != MODEL:
        raise Problem(404, f"no model {str(body.get('model'))[:60]!r}; this server has {MODEL!r}")
    return prompt, max_tokens, stream


def create_demo_app(
    store: TraceStore | None = None,
    *,
    token: str | None = None,
    allowed_hosts: Iterable[str] | None = None,
    delay: float = 0.002,
    trace_requests: bool = True,
) -> bottle.Bottle:
    """The demo inference server: /generate, /models, plus /traces, /health, /ready and the viewer.

    ``delay`` is the pretend cost of one decode step, in seconds. With
    ``trace_requests`` each request to /generate and /models is a SERVER span
    (the parent of the generation span) continuing the caller's ``traceparent``.
    """
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 10:
        raise ValueError(f"delay must be a number of seconds from 0 to 10; got {delay!r}")
    guard = Guard(token, allowed_hosts=allowed_hosts)
    app = install(_TracedBottle(trace_requests=trace_requests, catchall=True), store, guard=guard)

    def generate() -> Any:
        """POST {"prompt": ..., "max_tokens": N, "stream": true}: tokens as JSON lines, or one JSON answer."""
        prompt, max_tokens, stream = _generate_options(_request_json())
        tokens = generate_tokens(prompt, max_tokens, delay=delay)
        if not stream:
            out = list(tokens)
            bottle.response.content_type = "application/json"
            return json.dumps(
                {
                    "model": MODEL,
                    "text": " ".join(out),
                    "finish_reason": "stop" if out and out[-1] == _END else "length",
                    "usage": {"output_tokens": len(out)},
                }
            )
        bottle.response.content_type = "application/x-ndjson"

        def lines() -> Iterator[str]:
            count = 0
            last = ""
            try:
                for token in tokens:
                    count += 1
                    last = token
                    yield json.dumps({"token": token}) + "\n"
                reason = "stop" if last == _END else "length"
                yield json.dumps({"done": True, "finish_reason": reason, "output_tokens": count}) + "\n"
            finally:
                tokens.close()  # a client that hangs up still ends the span

        return lines()

    def models() -> str:
        """The models this server offers (one)."""
        with span("list_models"):
            bottle.response.content_type = "application/json"
            return json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "autotrace"}]})

    app.route("/generate", "POST", guard(generate))
    app.route("/models", "GET", guard(models))
    return app


def send_traffic(
    url: str,
    count: int,
    *,
    token: str | None = None,
    max_tokens: int = 8,
    timeout: float = 30.0,
    stop: threading.Event | None = None,
) -> int:
    """POST ``count`` prompts to ``url``/generate (streaming and not, in turn); returns how many succeeded.

    Setting ``stop`` (Ctrl-C in ``autotrace demo``) ends the run after the request in flight.
    """
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    ok = 0
    for i in range(count):
        if stop is not None and stop.is_set():
            break
        body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "stream": i % 2 == 0}
        req = urllib.request.Request(
            url.rstrip("/") + "/generate", data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            # A CLIENT span that injects traceparent: the server's spans join its trace.
            with traced_urlopen(req, timeout=timeout) as resp:
                resp.read()
                ok += resp.status == 200
        except (OSError, urllib.error.URLError):
            continue
    return ok


def start_workers(url: str, workers: int, count: int, token: str | None = None) -> list[Any]:
    """Start ``workers`` processes that each send ``count`` requests to ``url`` and export their spans there.

    Each is ``python -m autotrace.demo URL COUNT`` with the OTLP exporter pointed at the
    demo's own ``POST /v1/traces``, so the viewer shows every worker's CLIENT spans in
    the same traces as the server's. The token travels in the environment, not argv.
    """
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "autotrace-demo-worker",
            "AUTOTRACE_SAMPLE_RATE": "1",
        }
    )
    if token:
        env["AUTOTRACE_TOKEN"] = token
        env["OTEL_EXPORTER_OTLP_HEADERS"] = f"Authorization=Bearer%20{token}"
    return [
        subprocess.Popen([sys.executable, "-m", "autotrace.demo", url, str(count)], env=env) for _ in range(workers)
    ]


def _worker(argv: list[str]) -> int:
    """A demo worker process (see start_workers): send traffic, then export every span before leaving."""
    import os

    sent = send_traffic(argv[0], int(argv[1]), token=os.environ.get("AUTOTRACE_TOKEN") or None)
    shutdown(10.0)
    return 0 if sent == int(argv[1]) else 1


if __name__ == "__main__":
    import sys

    sys.exit(_worker(sys.argv[1:]))
