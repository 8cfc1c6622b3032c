"""The demo inference server in-process: span tree, GenAI attributes, streaming, bad bodies, hang-ups."""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import autotrace
from autotrace.demo import MODEL, create_demo_app, generate_tokens, send_traffic
from autotrace.server import ServerHandle, start_in_background
from tests.otlp_check import validate

from .server_helpers import fetch, settle, spans_of, trace_ids

JSON = {"Content-Type": "application/json"}


def server_spans(count: int = 1, timeout: float = 30.0) -> list[list[autotrace.Span]]:
    """The stored traces once ``count`` SERVER spans have ended.

    A SERVER span ends when the server has written the whole body, so the
    client can have its answer a moment before the span reaches the store.
    """
    deadline = time.monotonic() + timeout
    while True:
        traces = autotrace.get_trace_store().traces()
        ended = [s for trace in traces for s in trace if s.kind is autotrace.SpanKind.SERVER]
        if len(ended) >= count:
            return traces
        assert time.monotonic() < deadline, f"{len(ended)} of {count} SERVER spans ended"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def demo_server() -> Iterator[ServerHandle]:
    """The demo app on a free port, no artificial delay."""
    with start_in_background(port=0, app=create_demo_app(delay=0)) as handle:
        yield handle


@pytest.fixture
def demo(demo_server: ServerHandle) -> Iterator[ServerHandle]:
    """The shared demo server; after each test, its requests have finished (their spans ended)."""
    yield demo_server
    settle(demo_server)


def test_generate_streams_tokens_then_a_done_line(demo: ServerHandle) -> None:
    """POST /generate streams one JSON line per token, then a done line with the count."""
    reply = fetch(demo.url, "/generate", method="POST", body=b'{"prompt": "a b c", "max_tokens": 5}', headers=JSON)
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in reply.body.decode().splitlines()]
    tokens = [line["token"] for line in lines[:-1]]
    assert 1 <= len(tokens) <= 5
    assert lines[-1] == {"done": True, "finish_reason": lines[-1]["finish_reason"], "output_tokens": len(tokens)}


def test_generate_records_a_genai_span_tree(demo: ServerHandle) -> None:
    """One request is one trace: SERVER span, then text_completion with tokenize, prefill and decode children."""
    fetch(demo.url, "/generate", method="POST", body=b'{"prompt": "one two three", "max_tokens": 3}', headers=JSON)
    server_spans()
    doc = fetch(demo.url, "/traces").json()
    validate(doc)
    assert len(trace_ids(doc)) == 1
    spans = spans_of(doc)
    (server,) = [s for s in spans if "parentSpanId" not in s or not s["parentSpanId"]]
    assert server["name"] == "POST /generate" and server["kind"] == 2  # SPAN_KIND_SERVER
    (root,) = [s for s in spans if s.get("parentSpanId") == server["spanId"]]
    assert root["name"] == f"text_completion {MODEL}"
    attrs = {kv["key"]: kv["value"] for kv in root["attributes"]}
    assert attrs["gen_ai.operation.name"] == {"stringValue": "text_completion"}
    assert attrs["gen_ai.request.model"] == {"stringValue": MODEL}
    assert attrs["gen_ai.request.max_tokens"] == {"intValue": "3"}
    assert attrs["gen_ai.usage.input_tokens"] == {"intValue": "3"}
    output = int(attrs["gen_ai.usage.output_tokens"]["intValue"])
    assert float(attrs["gen_ai.response.time_to_first_chunk"]["doubleValue"]) >= 0
    # GenAI names only on the model call: Phoenix and MLflow read them as an LLM span and count its tokens.
    for other in spans:
        if other is not root:
            assert not [kv["key"] for kv in other["attributes"] if kv["key"].startswith("gen_ai.")], other["name"]
    names = [s["name"] for s in spans if s.get("parentSpanId") == root["spanId"]]
    assert names[:2] == ["tokenize", "prefill"]
    assert names[2:] == ["decode"] * output
    decode_steps = sorted(
        int(kv["value"]["intValue"])
        for s in spans
        if s["name"] == "decode"
        for kv in s["attributes"]
        if kv["key"] == "autotrace.demo.step"
    )
    assert decode_steps == list(range(output))


def test_generate_without_stream_answers_one_json(demo: ServerHandle) -> None:
    """stream=false gives one JSON object with the text and the usage."""
    reply = fetch(
        demo.url, "/generate", method="POST", body=b'{"prompt": "hi", "max_tokens": 4, "stream": false}', headers=JSON
    )
    body = reply.json()
    assert body["model"] == MODEL
    assert 1 <= body["usage"]["output_tokens"] <= 4
    assert body["finish_reason"] in ("stop", "length")


def test_the_toy_model_is_deterministic() -> None:
    """The same prompt gives the same tokens, so demo traces are reproducible."""
    assert list(generate_tokens("same prompt", 12, delay=0)) == list(generate_tokens("same prompt", 12, delay=0))


def test_models_lists_the_model(demo: ServerHandle) -> None:
    """GET /models lists tiny-llm and records a list_models span under its SERVER span."""
    assert fetch(demo.url, "/models").json()["data"][0]["id"] == MODEL
    server_spans()
    spans = {s["name"]: s for s in spans_of(fetch(demo.url, "/traces").json())}
    assert sorted(spans) == ["GET /models", "list_models"]
    assert spans["list_models"]["parentSpanId"] == spans["GET /models"]["spanId"]


BAD_BODIES = [
    (b"not json", 400, "JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"{}", 400, "prompt"),
    (b'{"prompt": 5}', 400, "prompt"),
    (b'{"prompt": "x", "max_tokens": 0}', 400, "max_tokens"),
    (b'{"prompt": "x", "max_tokens": 513}', 400, "max_tokens"),
    (b'{"prompt": "x", "max_tokens": true}', 400, "max_tokens"),
    (b'{"prompt": "x", "max_tokens": "5"}', 400, "max_tokens"),
    (b'{"prompt": "x", "stream": "yes"}', 400, "stream"),
    (b'{"prompt": "x", "temperature": 2}', 400, "temperature"),
    (b'{"prompt": "x", "model": "gpt-9"}', 404, "gpt-9"),
    (b"\xff\xfe", 400, "JSON"),
    (json.dumps({"prompt": "x" * 10_001}).encode(), 400, "prompt"),
    (b" " * (64 * 1024 + 1), 413, "larger"),
]


@pytest.mark.parametrize(("body", "status", "named"), BAD_BODIES)
def test_bad_generate_bodies_are_json_errors(demo: ServerHandle, body: bytes, status: int, named: str) -> None:
    """Every malformed /generate body is a 4xx JSON error naming the problem; only the SERVER span records it."""
    reply = fetch(demo.url, "/generate", method="POST", body=body, headers=JSON)
    assert reply.status == status, reply.body
    assert named in reply.json()["error"]
    (trace,) = server_spans()
    (server,) = trace
    assert server.name == "POST /generate" and server.kind is autotrace.SpanKind.SERVER
    assert server.attributes["http.response.status_code"] == status
    assert server.status.code is autotrace.StatusCode.UNSET  # a 4xx is the client's error


def test_bad_content_length_is_a_400(demo: ServerHandle) -> None:
    """A Content-Length that is not a number is a 400, not a 500."""
    parts = urllib.parse.urlsplit(demo.url)
    assert parts.hostname and parts.port
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(b"POST /generate HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 400"), answer[:100]
    assert b"Content-Length" in answer.split(b"\r\n\r\n", 1)[1]


def test_a_client_hanging_up_mid_stream_still_ends_the_span() -> None:
    """When the client disconnects during a stream the generation span ends, marked closed early."""
    with start_in_background(port=0, app=create_demo_app(delay=0.01)) as handle:
        parts = urllib.parse.urlsplit(handle.url)
        assert parts.hostname and parts.port
        body = b'{"prompt": "a long answer please", "max_tokens": 512}'
        sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        sock.sendall(
            b"POST /generate HTTP/1.0\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert sock.recv(100).startswith(b"HTTP/1.0 200")
        sock.close()
        deadline = time.monotonic() + 60
        while True:
            roots = [
                sp for trace in autotrace.get_trace_store().traces() for sp in trace if sp.name.startswith("text_")
            ]
            if roots:
                break
            assert time.monotonic() < deadline, "the generation span never ended"
            time.sleep(0.05)
    attrs = roots[0].attributes
    if attrs["gen_ai.response.finish_reasons"] == ("length",):  # the whole stream fitted in the socket buffers
        pytest.skip("the server finished before it noticed the hang-up")
    assert attrs.get("autotrace.stream.closed_early") is True
    assert attrs["gen_ai.usage.output_tokens"] < 512


def test_unsampled_requests_still_work_and_store_nothing(demo: ServerHandle) -> None:
    """With sample_rate=0 the demo answers normally and records no trace."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))
    reply = fetch(demo.url, "/generate", method="POST", body=b'{"prompt": "x", "max_tokens": 3}', headers=JSON)
    assert reply.status == 200 and reply.body.decode().splitlines()[-1].startswith('{"done"')
    assert autotrace.trace_count() == 0


def test_send_traffic_drives_the_demo(demo: ServerHandle) -> None:
    """send_traffic(url, n) makes n successful requests, each from a CLIENT span that propagates."""
    assert send_traffic(demo.url, 4, max_tokens=3) == 4
    spans = [s for trace in autotrace.get_trace_store().traces() for s in trace]
    clients = [s for s in spans if s.kind is autotrace.SpanKind.CLIENT]
    assert len(clients) == 4 and {s.name for s in clients} == {"POST"}
    assert len([s for s in spans if s.name == "text_completion tiny-llm"]) == 4


def test_send_traffic_joins_client_and_server_spans(demo: ServerHandle) -> None:
    """Each request is one trace: CLIENT -> one SERVER span (the demo app's own middleware) -> text_completion."""
    assert send_traffic(demo.url, 3, max_tokens=2) == 3
    traces = server_spans(3)
    assert len(traces) == 3
    for trace in traces:
        by_id = {s.span_id: s for s in trace}
        gen = next(s for s in trace if s.name == "text_completion tiny-llm")
        server = by_id[gen.parent_span_id or ""]
        client = by_id[server.parent_span_id or ""]
        assert server.name == "POST /generate" and server.kind is autotrace.SpanKind.SERVER
        assert client.kind is autotrace.SpanKind.CLIENT and client.parent_span_id is None
        assert [s.kind for s in trace].count(autotrace.SpanKind.SERVER) == 1


def test_generate_continues_the_callers_traceparent(demo: ServerHandle) -> None:
    """POST /generate with a traceparent: the SERVER span joins that trace, parents the generation, answers one."""
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    reply = fetch(
        demo.url,
        "/generate",
        method="POST",
        body=b'{"prompt": "follow me", "max_tokens": 3}',
        headers={**JSON, "traceparent": f"00-{caller_trace}-{caller_span}-01"},
    )
    assert reply.status == 200
    (trace,) = server_spans()
    (server,) = [s for s in trace if s.kind is autotrace.SpanKind.SERVER]
    assert server.name == "POST /generate"
    assert server.trace_id == caller_trace and server.parent_span_id == caller_span
    assert server.attributes["http.route"] == "/generate"
    assert server.attributes["http.response.status_code"] == 200
    gen = next(s for s in trace if s.name == f"text_completion {MODEL}")
    assert gen.parent_span_id == server.span_id and gen.trace_id == caller_trace
    assert reply.headers["traceparent"] == f"00-{caller_trace}-{server.span_id}-01"


def test_the_servers_own_routes_record_no_span(demo: ServerHandle) -> None:
    """GET /traces (polled by the viewer), /health, /ready, / and DELETE /traces add nothing to the store."""
    for method, path in [("GET", "/traces"), ("GET", "/traces?limit=1"), ("GET", "/health"), ("GET", "/ready")]:
        reply = fetch(demo.url, path, method=method)
        assert reply.status == 200 and "traceparent" not in reply.headers
    assert fetch(demo.url, "/").status == 200
    assert fetch(demo.url, "/traces", method="DELETE").status == 200
    assert fetch(demo.url, "/models").status == 200  # a traced route, as a fence
    (trace,) = server_spans()
    assert sorted(s.name for s in trace) == ["GET /models", "list_models"]


def test_trace_requests_false_leaves_requests_untraced() -> None:
    """create_demo_app(trace_requests=False) records the generation span alone, as its own root."""
    with start_in_background(port=0, app=create_demo_app(delay=0, trace_requests=False)) as handle:
        reply = fetch(handle.url, "/generate", method="POST", body=b'{"prompt": "x", "max_tokens": 2}', headers=JSON)
    assert reply.status == 200 and "traceparent" not in reply.headers
    (trace,) = autotrace.get_trace_store().traces()
    assert not [s for s in trace if s.kind is autotrace.SpanKind.SERVER]
    (root,) = [s for s in trace if s.parent_span_id is None]
    assert root.name == f"text_completion {MODEL}"


def test_demo_token_guards_generate() -> None:
    """create_demo_app(token=...) needs the bearer token on /generate and /models too."""
    with start_in_background(port=0, app=create_demo_app(token="k", delay=0)) as handle:
        assert fetch(handle.url, "/models").status == 401
        assert fetch(handle.url, "/generate", method="POST", body=b'{"prompt": "x"}', headers=JSON).status == 401
        assert send_traffic(handle.url, 2, token="k") == 2
        assert fetch(handle.url, "/health").status == 200


def test_bad_delay_is_a_value_error() -> None:
    """create_demo_app rejects a negative or non-numeric delay."""
    for delay in (-1, "fast", float("nan"), True):
        with pytest.raises(ValueError, match="delay"):
            create_demo_app(delay=delay)  # type: ignore[arg-type]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(st.sampled_from(["prompt", "max_tokens", "stream", "model", "x"]), _json_values).map(
            lambda d: json.dumps(d).encode()
        ),
    )
)
def test_no_generate_body_produces_a_500(demo: ServerHandle, body: bytes) -> None:
    """Whatever the body, POST /generate answers 200 or a 4xx JSON error, never 500."""
    reply = fetch(demo.url, "/generate", method="POST", body=body, headers=JSON)
    assert reply.status in (200, 400, 404, 413), (body, reply.status, reply.body)
    if reply.status != 200:
        assert "error" in reply.json()
