"""POST /v1/traces: the OTLP/HTTP receiver, fed by real exporters on loopback, and its refusals."""

from __future__ import annotations

import base64
import concurrent.futures
import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autotrace
from autotrace import _receiver
from autotrace.export import OTLPHttpExporter
from autotrace.otlp import encode_span
from autotrace.server import ServerHandle, start_in_background
from autotrace.spans import Link, Span, SpanContext, StatusCode
from autotrace.store import TraceStore
from autotrace.tracer import resource_attributes
from tests.otlp_check import validate
from tests.server_helpers import fetch, spans_of

PB = "application/x-protobuf"


@pytest.fixture
def served() -> Iterator[tuple[ServerHandle, TraceStore]]:
    """A server with its own store on a free loopback port."""
    store = TraceStore(max_traces=100_000)
    handle = start_in_background("127.0.0.1", 0, store=store)
    try:
        yield handle, store
    finally:
        handle.stop()


def _post(url: str, body: bytes, content_type: str = "application/json", **headers: str) -> Any:
    return fetch(url, "/v1/traces", method="POST", body=body, headers={"Content-Type": content_type, **headers})


def _by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["spanId"]: s for s in spans_of(doc)}


def _hand_spans() -> list[Span]:
    """Two traces' spans with attributes of every type, events, links, statuses and kinds."""
    root = Span("root", kind="server", attributes={"s": "x", "i": -7, "f": 1.5, "b": True, "la": [1, 2], "ls": ["a"]})
    child = Span(
        "child",
        kind="client",
        trace_id=root.trace_id,
        parent_span_id=root.span_id,
        links=[Link(SpanContext(0xABC, 0xDEF, True, True, "k=v", False), {"why": "batch"})],
        attributes={"big": 2**62, "fl": [0.5, 2.0], "bl": [True, False]},
    )
    child.add_event("first_token", {"ttft_ms": 41.2})
    child.set_status(StatusCode.ERROR, "boom")
    root.set_status(StatusCode.OK)
    other = Span("other", kind="consumer")
    for s in (child, root, other):
        s.end()
    return [child, root, other]


@pytest.mark.parametrize("gzipped", [False, True])
def test_sdk_protobuf_export_round_trips(served: tuple[ServerHandle, TraceStore], gzipped: bool) -> None:
    """The OpenTelemetry SDK's OTLP/HTTP protobuf exporter (gzip or not): /traces gives back every field it sent."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Link as OtelLink
    from opentelemetry.trace import SpanKind, Status
    from opentelemetry.trace import StatusCode as OtelStatus

    handle, _ = served
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "engine", "process.pid": 4242}))
    from opentelemetry.exporter.otlp.proto.http import Compression

    compression = Compression.Gzip if gzipped else Compression.NoCompression
    exporter = OTLPSpanExporter(endpoint=handle.url + "/v1/traces", compression=compression)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("engine.scope", "2.1")
    attrs = {"s": "x", "i": 7, "f": 1.5, "b": True, "li": [1, 2], "ls": ["a", "b"], "lf": [0.5], "lb": [False]}
    with tracer.start_as_current_span("generate", kind=SpanKind.SERVER, attributes=attrs) as root:
        with tracer.start_as_current_span("decode", links=[OtelLink(root.get_span_context(), {"k": "v"})]) as c:
            c.add_event("first_token", {"n": 1, "d": 0.25})
            c.set_status(Status(OtelStatus.ERROR, "bad"))
    provider.shutdown()

    sent = MessageToDict(encode_spans(memory.get_finished_spans()))
    got = fetch(handle.url, "/traces").json()
    validate(got)
    [rs] = got["resourceSpans"]
    [sent_rs] = sent["resourceSpans"]
    assert {a["key"]: a["value"] for a in rs["resource"]["attributes"]} == {
        a["key"]: a["value"] for a in sent_rs["resource"]["attributes"]
    }
    [ss] = rs["scopeSpans"]
    assert ss["scope"] == {"name": "engine.scope", "version": "2.1"}
    mine = _by_id(got)
    for want in sent_rs["scopeSpans"][0]["spans"]:
        have = mine[base64.b64decode(want["spanId"]).hex()]
        assert have["traceId"] == base64.b64decode(want["traceId"]).hex()
        assert have.get("parentSpanId") == (
            base64.b64decode(want["parentSpanId"]).hex() if "parentSpanId" in want else None
        )
        for key in ("name", "startTimeUnixNano", "endTimeUnixNano", "attributes"):
            assert have[key] == want.get(key, []), key
        assert have["kind"] == {"SPAN_KIND_SERVER": 2, "SPAN_KIND_INTERNAL": 1}[want["kind"]]
        assert [(e["name"], e["timeUnixNano"], e["attributes"]) for e in have["events"]] == [
            (e["name"], e["timeUnixNano"], e["attributes"]) for e in want.get("events", [])
        ]
        assert [(lk["spanId"], lk["attributes"]) for lk in have["links"]] == [
            (base64.b64decode(lk["spanId"]).hex(), lk["attributes"]) for lk in want.get("links", [])
        ]
        want_status = want.get("status", {})
        if want_status.get("code") == "STATUS_CODE_ERROR":
            assert have["status"] == {"code": 2, "message": want_status["message"]}
        else:
            assert have["status"] == {}


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_autotrace_exporter_round_trips(
    served: tuple[ServerHandle, TraceStore], encoding: str, compression: str
) -> None:
    """autotrace's own exporter, JSON or protobuf, gzip or not: each span reads back exactly as encoded."""
    handle, store = served
    spans = _hand_spans()
    exporter = OTLPHttpExporter(handle.url + "/v1/traces", encoding=encoding, compression=compression, env={})
    assert exporter.export(spans)
    exporter.shutdown()
    got = fetch(handle.url, "/traces").json()
    validate(got)
    [rs] = got["resourceSpans"]
    assert {a["key"] for a in rs["resource"]["attributes"]} >= set(resource_attributes())
    mine = _by_id(got)
    assert len(mine) == 3
    for s in spans:
        assert mine[s.span_id] == encode_span(s)
    assert store.stats()["traces"] == 2


def test_spans_from_three_senders_make_one_trace_each_with_its_resource(
    served: tuple[ServerHandle, TraceStore],
) -> None:
    """Spans of one trace sent by three services are one trace; each keeps its own service.name."""
    handle, store = served
    trace_id = "5b8efff798038103d269b633813fc60c"
    for i, service in enumerate(("gateway", "tokenizer", "engine")):
        doc = {
            "resourceSpans": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                    "scopeSpans": [
                        {
                            "scope": {"name": service},
                            "spans": [
                                {
                                    "traceId": trace_id,
                                    "spanId": f"{i + 1:016x}",
                                    **({"parentSpanId": f"{i:016x}"} if i else {}),
                                    "name": service,
                                    "kind": "SPAN_KIND_SERVER",  # enum names are accepted too
                                    "startTimeUnixNano": 1000 + i,  # numbers as well as strings
                                    "endTimeUnixNano": "2000",
                                }
                            ],
                        }
                    ],
                }
            ]
        }
        reply = _post(handle.url, json.dumps(doc).encode())
        assert reply.status == 200 and reply.json() == {}
    assert store.trace_count() == 1
    got = fetch(handle.url, "/traces").json()
    validate(got)
    services = {
        rs["resource"]["attributes"][0]["value"]["stringValue"]: [
            s["name"] for ss in rs["scopeSpans"] for s in ss["spans"]
        ]
        for rs in got["resourceSpans"]
    }
    assert services == {"gateway": ["gateway"], "tokenizer": ["tokenizer"], "engine": ["engine"]}


def _doc(spans: list[Any]) -> bytes:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


def _good(i: int) -> dict[str, Any]:
    return {"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": f"ok{i}", "startTimeUnixNano": "1"}


def test_invalid_spans_are_rejected_alone(served: tuple[ServerHandle, TraceStore]) -> None:
    """Bad ids, no name, values of the wrong type: partialSuccess counts them; every valid span is kept."""
    handle, store = served
    before = fetch(handle.url, "/ready").json()["received"]
    bad = [
        {"traceId": "abc", "spanId": "0000000000000001", "name": "short trace id"},
        {"traceId": "0" * 32, "spanId": "0000000000000001", "name": "zero trace id"},
        {"traceId": "-" + "1" * 31, "spanId": "0000000000000001", "name": "negative trace id"},
        {"traceId": "1" * 32, "spanId": "0x" + "1" * 14, "name": "0x span id"},
        {"traceId": "1" * 32, "spanId": "1" * 18, "name": "long span id"},
        {"traceId": "1" * 32, "spanId": "1" * 16},
        {"traceId": "1" * 32, "spanId": "1" * 16, "name": 5},
        {"traceId": "1" * 32, "spanId": "1" * 16, "name": "x", "startTimeUnixNano": "soon"},
        {
            "traceId": "1" * 32,
            "spanId": "1" * 16,
            "name": "x",
            "attributes": [{"key": "k", "value": {"intValue": "x"}}],
        },
        {"traceId": "1" * 32, "spanId": "1" * 16, "name": "x", "attributes": {"k": 1}},
        {"traceId": "1" * 32, "spanId": "1" * 16, "name": "x", "kind": 9},
        {"traceId": "1" * 32, "spanId": "1" * 16, "name": "x", "status": {"code": "WRONG"}},
        "not a span",
    ]
    spans = [x for pair in zip(bad, [_good(i) for i in range(len(bad))], strict=True) for x in pair]
    reply = _post(handle.url, _doc(spans))
    assert reply.status == 200
    partial = reply.json()["partialSuccess"]
    assert partial["rejectedSpans"] == str(len(bad))
    assert "spanId" in partial["errorMessage"] or "traceId" in partial["errorMessage"]
    got = {s["name"] for s in spans_of(fetch(handle.url, "/traces").json())}
    assert got == {f"ok{i}" for i in range(len(bad))}
    assert store.stats()["spans"] == len(bad)
    after = fetch(handle.url, "/ready").json()["received"]
    assert after["rejected_spans"] - before["rejected_spans"] == len(bad)
    assert after["accepted_spans"] - before["accepted_spans"] == len(bad)


def test_protobuf_partial_success_and_truncated_body(served: tuple[ServerHandle, TraceStore]) -> None:
    """Protobuf: a wrong-length id is rejected in a protobuf partialSuccess; a truncated body is a 400."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    handle, store = served
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    good = scope.spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="good", kind=2)
    good.attributes.add(key="k").value.int_value = 3
    scope.spans.add(trace_id=b"\x01" * 12, span_id=b"\x03" * 8, name="bad id")
    body = request.SerializeToString()
    reply = _post(handle.url, body, PB)
    assert reply.status == 200 and reply.headers["content-type"] == PB
    answer = ExportTraceServiceResponse.FromString(reply.body)
    assert answer.partial_success.rejected_spans == 1 and "trace_id" in answer.partial_success.error_message
    assert [s["name"] for s in spans_of(fetch(handle.url, "/traces").json())] == ["good"]
    truncated = _post(handle.url, body[:-7], PB)
    assert truncated.status == 400 and "protobuf" in truncated.json()["error"]
    assert store.stats()["spans"] == 1


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "status", "words"),
    [
        (b"{not json", "application/json", {}, 400, "not JSON"),
        (b"[1, 2]", "application/json", {}, 400, "JSON object"),
        (b'{"resourceSpans": 5}', "application/json", {}, 400, "resourceSpans"),
        (b"{}", "text/plain", {}, 415, "application/x-protobuf"),
        (b"{}", "application/json", {"Content-Encoding": "br"}, 415, "gzip"),
        (b"\x1f\x8b\x08\x00garbage", "application/json", {"Content-Encoding": "gzip"}, 400, "gzip"),
        (gzip.compress(b'{"resourceSpans": []}')[:-9], "application/json", {"Content-Encoding": "gzip"}, 400, "gzip"),
    ],
)
def test_undecodable_bodies_are_refused(
    served: tuple[ServerHandle, TraceStore],
    body: bytes,
    content_type: str,
    headers: dict[str, str],
    status: int,
    words: str,
) -> None:
    """Bodies that are not an ExportTraceServiceRequest get 400 or 415 with a JSON error naming the problem."""
    handle, _ = served
    reply = _post(handle.url, body, content_type, **headers)
    assert reply.status == status
    assert words in reply.json()["error"]


def test_large_bodies_and_gzip_bombs_get_413() -> None:
    """A body over the limit (50 MB) and a gzip bomb that inflates past it are 413; the server stays up."""
    store = TraceStore()
    from autotrace.server import create_app

    app = create_app(store, allowed_hosts=["127.0.0.1"], max_receive_bytes=1 << 20)
    with start_in_background("127.0.0.1", 0, app=app) as handle:
        big = _post(handle.url, b" " * (50 * 1024 * 1024))
        assert big.status == 413 and "at most" in big.json()["error"]
        bomb = gzip.compress(b"[" * (200 * 1024 * 1024), compresslevel=9)
        assert len(bomb) < 1 << 20
        refused = _post(handle.url, bomb, "application/json", **{"Content-Encoding": "gzip"})
        assert refused.status == 413 and "inflates" in refused.json()["error"]
        ok = _post(handle.url, gzip.compress(_doc([_good(0)])), "application/json", **{"Content-Encoding": "gzip"})
        assert ok.status == 200 and store.stats()["spans"] == 1


def test_token_and_cross_site_checks_apply(served: tuple[ServerHandle, TraceStore]) -> None:
    """The receiver asks for the token when one is set and refuses cross-site browser posts."""
    store = TraceStore()
    with start_in_background("127.0.0.1", 0, store=store, token="s3cret") as handle:
        assert _post(handle.url, _doc([_good(0)])).status == 401
        ok = _post(handle.url, _doc([_good(0)]), Authorization="Bearer s3cret")
        assert ok.status == 200
        page = _post(handle.url, _doc([_good(1)]), Authorization="Bearer s3cret", **{"Sec-Fetch-Site": "cross-site"})
        assert page.status == 403
        foreign = _post(handle.url, _doc([_good(2)]), Authorization="Bearer s3cret", Origin="https://evil.example")
        assert foreign.status == 403
        assert store.stats()["spans"] == 1


def test_received_spans_count_against_max_traces_and_are_not_traced() -> None:
    """Received traces evict the oldest past max_traces (counted), and posting adds no span of its own."""
    from autotrace.server import create_app

    store = TraceStore(max_traces=3)
    with start_in_background("127.0.0.1", 0, app=create_app(store, allowed_hosts=["127.0.0.1"])) as handle:
        reply = _post(handle.url, _doc([_good(i) for i in range(5)]))
        assert reply.status == 200
        stats = store.stats()
        assert stats["traces"] == 3 and stats["evicted_traces"] == 2
        assert autotrace.trace_count() == 0  # the request itself was not traced into the global store


def test_without_the_proto_extra_protobuf_is_415_naming_it() -> None:
    """With opentelemetry-proto missing, a protobuf post is a 415 that names the [proto] extra."""
    code = (
        "import sys; sys.modules['opentelemetry.proto.collector.trace.v1'] = None\n"
        "from autotrace.server import start_in_background\n"
        "import http.client, json\n"
        "with start_in_background('127.0.0.1', 0) as h:\n"
        "    c = http.client.HTTPConnection('127.0.0.1', h.port)\n"
        "    c.request('POST', '/v1/traces', b'x', {'Content-Type': 'application/x-protobuf'})\n"
        "    r = c.getresponse()\n"
        "    print(r.status, json.loads(r.read())['error'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.startswith("415 ") and "autotrace-inference[proto]" in out.stdout


def test_a_thousand_concurrent_posts_never_get_a_500(served: tuple[ServerHandle, TraceStore]) -> None:
    """1,000 posts at once: each is a 200 or a 503 from the connection cap, never a 500; accepted spans are stored."""
    handle, store = served

    def one(i: int) -> int:
        try:
            return int(_post(handle.url, _doc([_good(i)])).status)
        except OSError:
            return -1  # refused or reset by the backlog: not an answer, not a 500

    with concurrent.futures.ThreadPoolExecutor(1000) as pool:  # all 1,000 at once
        statuses = list(pool.map(one, range(1000)))
    assert 500 not in statuses and set(statuses) <= {200, 503, -1}
    assert store.stats()["spans"] == statuses.count(200)
    assert fetch(handle.url, "/health").status == 200


def test_inject_env_and_extract_env() -> None:
    """inject_env copies the environment with TRACEPARENT/TRACESTATE set; extract_env reads them; invalid is None."""
    from autotrace import propagation

    base = {"PATH": "/bin", "TRACEPARENT": "stale"}
    with autotrace.span("parent") as s:
        env = propagation.inject_env(base)
    assert base == {"PATH": "/bin", "TRACEPARENT": "stale"}  # not mutated
    assert env["PATH"] == "/bin" and env["TRACEPARENT"] == f"00-{s.trace_id}-{s.span_id}-03"
    ctx = propagation.extract_env(env)
    assert ctx is not None and ctx.trace_id_hex == s.trace_id and ctx.is_remote
    assert "TRACEPARENT" not in propagation.inject_env(base)  # outside a span: no stale parent passed on
    assert propagation.extract_env({"TRACEPARENT": "00-zz-11-01"}) is None
    assert propagation.extract_env({}) is None
    default = propagation.inject_env()
    assert default.get("HOME") == os.environ.get("HOME")


_CHILD = """
import pickle, sys, autotrace
from autotrace import propagation
parent = propagation.extract_env() if sys.argv[1] == "env" else pickle.loads(bytes.fromhex(sys.argv[2]))
with autotrace.span("child-" + sys.argv[1], parent=parent):
    pass
autotrace.shutdown(10)
"""


def test_a_trace_continues_in_child_processes_to_one_server(served: tuple[ServerHandle, TraceStore]) -> None:
    """Parent and two children (via inject_env and a pickled SpanContext) export to one server: one whole trace."""
    import pickle

    from autotrace import propagation

    handle, store = served
    exporter = OTLPHttpExporter(handle.url + "/v1/traces", env={})
    autotrace.configure(sample_rate=1.0, exporters=[exporter])
    child_env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": handle.url,
        "AUTOTRACE_SAMPLE_RATE": "1",
    }
    with autotrace.span("parent") as parent:
        env = propagation.inject_env({**os.environ, **child_env})
        subprocess.run([sys.executable, "-c", _CHILD, "env"], env=env, check=True, timeout=60)
        context = pickle.loads(pickle.dumps(parent.get_span_context()))
        assert context == parent.get_span_context()
        plain = {k: v for k, v in env.items() if k not in ("TRACEPARENT", "TRACESTATE")}
        blob = pickle.dumps(parent.get_span_context()).hex()
        subprocess.run([sys.executable, "-c", _CHILD, "pickle", blob], env=plain, check=True, timeout=60)
    autotrace.shutdown(10)
    [trace] = store.traces()
    by_name = {s.name: s for s in trace}
    assert set(by_name) == {"parent", "child-env", "child-pickle"}
    for name in ("child-env", "child-pickle"):
        assert by_name[name].parent_span_id == parent.span_id
    pids = {s._extra.origin.resource["process.pid"] for s in trace}  # type: ignore[union-attr]
    assert len(pids) == 3  # each process names itself


def test_forked_child_resource_has_its_own_pid() -> None:
    """After fork, the child's resource carries the child's process.pid, not the parent's."""
    r, w = os.pipe()
    assert resource_attributes()["process.pid"] == os.getpid()
    pid = os.fork()
    if pid == 0:
        os.write(w, str(resource_attributes()["process.pid"]).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    assert int(os.read(r, 64)) == pid
    os.close(r)
    attrs = resource_attributes()
    assert {"process.executable.name", "process.runtime.name", "host.name"} <= set(attrs)


def test_serve_merges_several_files_into_one_store(tmp_path: Any) -> None:
    """`autotrace serve --file A --file B`: one store; a trace whose spans are in both files is one trace."""
    from autotrace.export import FileExporter

    root = Span("rank0.step")
    child = Span("rank1.step", trace_id=root.trace_id, parent_span_id=root.span_id)
    alone = Span("rank1.other")
    for s in (root, child, alone):
        s.end()
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    FileExporter(a).export([root])
    FileExporter(b).export([child, alone])
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotrace", "serve", "--port", "0", "--file", str(a), "--file", str(b)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("AUTOTRACE_", "OTEL_"))},
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert "loaded 1 spans" in lines[0] and "loaded 2 spans" in lines[1]
        url = lines[2].split("listening on ")[1].strip()
        doc = fetch(url, "/traces").json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    traces: dict[str, set[str]] = {}
    for s in spans_of(doc):
        traces.setdefault(s["traceId"], set()).add(s["name"])
    assert traces == {root.trace_id: {"rank0.step", "rank1.step"}, alone.trace_id: {"rank1.other"}}


def test_receiver_benchmark_smoke() -> None:
    """benchmarks/receiver.py --smoke runs and reports both encodings."""
    out = subprocess.run(
        [sys.executable, "benchmarks/receiver.py", "--smoke", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    figures = json.loads(out.stdout)
    assert figures["protobuf"]["spans_per_s"] > 0 and figures["json"]["spans_per_s"] > 0


def test_demo_workers_export_to_the_demo_server() -> None:
    """`autotrace demo --workers 2`: two worker processes' CLIENT spans arrive, each under its own pid."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotrace", "demo", "--port", "0", "--workers", "2", "--traffic", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("AUTOTRACE_", "OTEL_"))},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split("listening on ")[1].strip()
        for line in proc.stdout:
            if "worker processes sent" in line:
                assert "(0 failed)" in line
                break
        doc = fetch(url, "/traces").json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    workers: dict[Any, int] = {}
    for rs in doc["resourceSpans"]:
        attrs = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
        if attrs["service.name"] == {"stringValue": "autotrace-demo-worker"}:
            count = sum(len(ss["spans"]) for ss in rs["scopeSpans"])
            workers[attrs["process.pid"]["intValue"]] = count
    assert len(workers) == 2 and all(n == 2 for n in workers.values())


def test_lenient_json_forms_are_accepted(served: tuple[ServerHandle, TraceStore]) -> None:
    """Proto field names, enum names, numbers for 64-bit integers and base64 ids all decode as OTLP/JSON."""
    handle, store = served
    doc = {
        "resource_spans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"string_value": "snake"}}]},
                "scope_spans": [
                    {
                        "scope": {"name": "s"},
                        "spans": [
                            {
                                "trace_id": base64.b64encode(bytes(range(1, 17))).decode(),
                                "span_id": "0102030405060708",
                                "name": "lenient",
                                "kind": "SPAN_KIND_CLIENT",
                                "start_time_unix_nano": 5,
                                "end_time_unix_nano": "9",
                                "attributes": [{"key": "n", "value": {"int_value": 3}}],
                                "events": [{"name": "e", "time_unix_nano": 6}],
                                "status": {"code": "STATUS_CODE_ERROR", "message": "m"},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    reply = _post(handle.url, json.dumps(doc).encode(), "application/json; charset=utf-8")
    assert reply.status == 200 and reply.json() == {}
    [span] = spans_of(fetch(handle.url, "/traces").json())
    assert span["traceId"] == bytes(range(1, 17)).hex() and span["kind"] == 3
    assert (span["startTimeUnixNano"], span["endTimeUnixNano"]) == ("5", "9")
    assert span["attributes"] == [{"key": "n", "value": {"intValue": "3"}}]
    assert span["events"][0]["timeUnixNano"] == "6" and span["status"] == {"code": 2, "message": "m"}
    assert store.stats()["spans"] == 1


def test_a_body_without_content_length_is_411(served: tuple[ServerHandle, TraceStore]) -> None:
    """A chunked body, or none with no Content-Length, is refused with 411 and a JSON error."""
    import http.client

    handle, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=30)
    conn.putrequest("POST", "/v1/traces")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"2\r\n{}\r\n0\r\n\r\n")
    resp = conn.getresponse()
    assert resp.status == 411 and "Content-Length" in json.loads(resp.read())["error"]
    conn.close()


def test_span_context_pickles_and_continues_the_trace() -> None:
    """A pickled SpanContext (trace state and flags included) unpickles equal and parents a span in its trace."""
    import pickle

    context = SpanContext(0x1234, 0x5678, True, True, "vendor=abc", True)
    back = pickle.loads(pickle.dumps(context, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == context and back.trace_state == "vendor=abc" and back.trace_flags == 0x03
    with autotrace.span("continued", parent=back) as s:
        pass
    assert s.trace_id == context.trace_id_hex and s.parent_span_id == context.span_id_hex


def test_deeply_nested_values_are_rejected_and_traces_stay_readable(served: tuple[ServerHandle, TraceStore]) -> None:
    """Attribute values nested past MAX_VALUE_DEPTH (JSON or protobuf) reject their span; /traces stays a 200."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    handle, store = served
    depth = 320  # written as text: deeper than json.dumps itself would go
    value = '{"arrayValue":{"values":[' * depth + '{"stringValue":"x"}' + "]}}" * depth
    deep = '{"traceId":"' + "1" * 32 + '","spanId":"' + "1" * 16 + '","name":"deep","attributes":[{"key":"k","value":'
    body = '{"resourceSpans":[{"scopeSpans":[{"spans":[' + deep + value + "}]}," + json.dumps(_good(5)) + "]}]}]}"
    reply = _post(handle.url, body.encode())
    assert reply.status == 200 and reply.json()["partialSuccess"]["rejectedSpans"] == "1"
    request = ExportTraceServiceRequest()
    span = (
        request.resource_spans.add().scope_spans.add().spans.add(trace_id=b"\x07" * 16, span_id=b"\x07" * 8, name="d")
    )
    any_value = span.attributes.add(key="k").value
    for _ in range(20):
        any_value = any_value.array_value.values.add()
    any_value.string_value = "x"
    assert _post(handle.url, request.SerializeToString(), PB).status == 200
    assert [s["name"] for s in spans_of(fetch(handle.url, "/traces").json())] == ["ok5"]
    assert store.stats()["spans"] == 1


_VALUES = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=True),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=4),
    st.lists(st.text(max_size=5), max_size=4),
)


@settings(max_examples=100, deadline=None)
@given(
    name=st.text(min_size=1, max_size=30),
    attributes=st.dictionaries(st.text(min_size=1, max_size=10), _VALUES, max_size=6),
    kind=st.sampled_from(["internal", "server", "client", "producer", "consumer"]),
    error=st.one_of(st.none(), st.text(min_size=1, max_size=10)),
    remote=st.booleans(),
    trace_state=st.sampled_from(["", "vendor=abc", "a=1,b=2"]),
)
def test_any_span_survives_protobuf_and_json_receiving(
    name: str, attributes: dict[str, object], kind: str, error: str | None, remote: bool, trace_state: str
) -> None:
    """encode -> protobuf (the exporter's encoder) or JSON -> receiver decode -> encode gives the same span."""
    from autotrace.export._protobuf import _Protobuf

    span = Span(name, attributes=attributes, kind=kind, start_time_unix_nano=10**18, end_time_unix_nano=10**18 + 5)
    span.add_event("ev", attributes)
    span.add_link(SpanContext(0xABC, 0xDEF, True, remote, trace_state, remote), {"k": "v"})
    span._remote_parent = remote
    span._trace_state = trace_state
    if error is not None:
        span.set_status("error", error)
    original = encode_span(span)
    doc = {
        "resourceSpans": [
            {"resource": {"attributes": []}, "scopeSpans": [{"scope": {"name": "s"}, "spans": [original]}]}
        ]
    }
    pb = _receiver.decode_protobuf(_Protobuf().request(doc).SerializeToString())
    js = _receiver.decode_json(json.dumps(doc).encode())
    for decoded in (pb, js):
        assert decoded.rejected == 0
        (rebuilt,) = decoded.spans
        assert encode_span(rebuilt) == original


def test_serve_takes_a_receive_limit() -> None:
    """`autotrace serve --max-receive-bytes N` answers 413 past N bytes and takes smaller bodies."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotrace", "serve", "--port", "0", "--max-receive-bytes", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("AUTOTRACE_", "OTEL_"))},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split("listening on ")[1].strip()
        assert _post(url, b" " * 1001).status == 413
        small = _post(url, _doc([_good(0)]))
        assert small.status == 200 and small.headers["x-content-type-options"] == "nosniff"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
