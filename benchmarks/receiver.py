"""POST /v1/traces throughput: spans/s the receiver accepts, against a bare handler that only reads the body.

The payloads are the OpenTelemetry SDK's own encoding (its OTLP/HTTP protobuf
encoder) of batches of 512 spans like an inference server's (a SERVER span and
its children, a few attributes each, an event on some); the JSON payload is the
same request in OTLP/JSON. Each is posted over one loopback connection per
request to ``autotrace serve``'s app (``start_in_background``) and to a bare
Bottle route that reads the body and answers 200, on the same server class.

Figures: spans/s accepted (target >= 50,000 in one server process), and the
receiver's own per-span cost (its time minus the bare handler's) as a multiple
of ``json.loads`` of the same JSON body per span (target < 3).

    python benchmarks/receiver.py            # full run
    python benchmarks/receiver.py --smoke    # a few requests, checks it runs
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import sys
import time
from typing import Any

import bottle

from autotrace import _receiver
from autotrace.server import ServerHandle, start_in_background
from autotrace.store import TraceStore

BATCH = 512


def sdk_payloads(batch: int) -> tuple[bytes, bytes]:
    """(protobuf, JSON) bodies of one ExportTraceServiceRequest of ``batch`` spans, encoded by the OTel SDK."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-engine"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench", "1.0")
    made = 0
    while made < batch:
        with tracer.start_as_current_span(
            "POST /generate",
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.route": "/generate"},
        ):
            made += 1
            for step in range(7):
                if made >= batch:
                    break
                with tracer.start_as_current_span(
                    "decode", attributes={"step": step, "gen_ai.request.model": "tiny-llm", "tokens": 12}
                ) as s:
                    if step == 0:
                        s.add_event("first_token", {"ttft_ms": 41.2})
                made += 1
    provider.shutdown()
    request = encode_spans(memory.get_finished_spans()[:batch])
    doc = MessageToDict(request)
    for rs in doc["resourceSpans"]:  # OTLP/JSON ids are hex, not the base64 of protobuf's JSON mapping
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = __import__("base64").b64decode(span[key]).hex()
    return request.SerializeToString(), json.dumps(doc).encode()


def bare_app() -> bottle.Bottle:
    """A Bottle app whose POST /v1/traces reads the body and answers 200: the cost of HTTP and reading alone."""
    app = bottle.Bottle()

    @app.post("/v1/traces")  # type: ignore[misc,untyped-decorator]
    def receive() -> bytes:
        length = int(bottle.request.environ.get("CONTENT_LENGTH") or 0)
        bottle.request.environ["wsgi.input"].read(length)
        bottle.response.content_type = "application/json"
        return b"{}"

    return app


def post_many(handle: ServerHandle, body: bytes, content_type: str, count: int) -> float:
    """Seconds to post ``body`` ``count`` times (one connection each, as the SDK's exporter mostly does)."""
    start = time.perf_counter()
    for _ in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=60)
        conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        if resp.status != 200:
            raise SystemExit(f"POST /v1/traces answered {resp.status}")
    return time.perf_counter() - start


def _receive(store: TraceStore, body: bytes, content_type: str) -> None:
    """The receiver's whole work on one body (checks, decoding, storing, the answer), without HTTP."""
    environ = {"CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    status, _, _ = _receiver.receive(store, environ)
    if status != 200:
        raise SystemExit(f"receive() answered {status}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the figures (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="a few requests: check that it runs")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    requests = 3 if args.smoke else 40
    repeat = 1 if args.smoke else 3
    proto_body, json_body = sdk_payloads(BATCH)
    spans = BATCH * requests

    # Every figure is the fastest of `repeat` runs, and the runs are interleaved (parse, receiver,
    # bare handler, in turn): on a shared machine the fastest run is the one least disturbed, and
    # interleaving keeps a busy spell from favouring one side of a ratio.
    parse_count = 2 if args.smoke else 20
    parse = float("inf")
    results: dict[str, Any] = {"batch_spans": BATCH, "requests": requests}
    store = TraceStore(max_traces=1_000_000)
    with (
        start_in_background("127.0.0.1", 0, store=store) as receiver,
        start_in_background("127.0.0.1", 0, app=bare_app()) as bare,
    ):
        for label, body, ctype in (
            ("protobuf", proto_body, "application/x-protobuf"),
            ("json", json_body, "application/json"),
        ):
            post_many(receiver, body, ctype, 1)  # warm up (imports)
            post_many(bare, body, ctype, 1)
            got = base = decode = float("inf")
            side = TraceStore(max_traces=1_000_000)
            for _ in range(repeat):
                parse = min(parse, _time(lambda: json.loads(json_body), parse_count))
                decode = min(
                    decode, _time(lambda body=body, ctype=ctype, side=side: _receive(side, body, ctype), parse_count)
                )
                side.clear()
                got = min(got, post_many(receiver, body, ctype, requests))
                base = min(base, post_many(bare, body, ctype, requests))
                store.clear()
            results[label] = {"got": got, "base": base, "decode": decode}
    parse_per_span = parse / BATCH
    results["json_parse_us_per_span"] = parse_per_span * 1e6
    for label in ("protobuf", "json"):
        got, base, decode = (results[label][k] for k in ("got", "base", "decode"))
        own_per_span = max(got - base, 0.0) / spans
        results[label] = {
            "spans_per_s": spans / got,
            "bare_spans_per_s": spans / base,
            "receiver_us_per_span": own_per_span * 1e6,
            "x_json_parse": own_per_span / parse_per_span,
            "decode_us_per_span": decode / BATCH * 1e6,
            "decode_x_json_parse": decode / parse,
        }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"payload: {BATCH} spans per request (OpenTelemetry SDK encoding), {requests} requests")
        print(f"json.loads of the JSON body: {parse_per_span * 1e6:.2f} us per span")
        for label in ("protobuf", "json"):
            r = results[label]
            print(
                f"{label:9s} {r['spans_per_s']:>10,.0f} spans/s accepted (bare handler {r['bare_spans_per_s']:,.0f});"
                f" receiver {r['receiver_us_per_span']:.2f} us/span = {r['x_json_parse']:.2f}x json.loads;"
                f" in process (no HTTP) {r['decode_us_per_span']:.2f} us/span = {r['decode_x_json_parse']:.2f}x"
            )
    return 0


def _time(fn: Any, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count


if __name__ == "__main__":
    sys.exit(main())
