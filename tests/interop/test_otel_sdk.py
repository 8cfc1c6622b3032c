"""autotrace against the real OpenTelemetry SDK: its OTLP exporter on one collector, its W3C parser on mutants.

OpenTelemetry uses private TracerProviders here (never the global one).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import autotrace
from autotrace.export import OTLPHttpExporter
from autotrace.propagation import extract, inject, parse_traceparent, parse_tracestate
from autotrace.testing import capture_spans
from tests.export.conftest import Receiver
from tests.export.test_otlp_http_hostile import RawCollector

W3C = TraceContextTextMapPropagator()
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
HAS_IS_REMOTE, IS_REMOTE = 0x100, 0x200


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A loopback OTLP/HTTP collector that parses every request with opentelemetry-proto."""
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def otel_to(receiver: Receiver) -> Iterator[trace.Tracer]:
    """An OpenTelemetry tracer whose spans go through its own OTLP/HTTP protobuf exporter to ``receiver``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.url, timeout=10)))
    yield provider.get_tracer("w3c-attacks")
    provider.shutdown()


@pytest.mark.parametrize("flags", ["00", "01", "02", "03"])
def test_both_exporters_describe_a_remote_parent_the_same_way(
    receiver: Receiver, otel_to: trace.Tracer, flags: str
) -> None:
    """Under one remote parent, both SDKs' OTLP exporters send the same ids, tracestate and remote bits."""
    headers = {"traceparent": f"00-{TRACE}-{PARENT}-{flags}", "tracestate": "vendor=opaque,t@sys=1"}
    with otel_to.start_as_current_span("otel-server", context=W3C.extract(headers), kind=trace.SpanKind.SERVER):
        with otel_to.start_as_current_span("otel-child"):
            pass
    # The real pipeline (sampler, batch processor, exporter): capture_spans() would force sampling.
    exporter = OTLPHttpExporter(receiver.url, encoding="protobuf", timeout=10)
    autotrace.configure(sample_rate=1.0, exporters=[exporter])
    with autotrace.span("at-server", kind="server", parent=extract(headers)):
        with autotrace.span("at-child"):
            pass
    assert autotrace.shutdown(10) is True
    sampled = int(flags, 16) & 1
    assert receiver.errors == []
    by_name = {s["name"]: s for s in receiver.spans}
    if not sampled:
        assert by_name == {}
        return
    assert set(by_name) == {"otel-server", "otel-child", "at-server", "at-child"}
    for side in ("otel", "at"):
        server, child = by_name[f"{side}-server"], by_name[f"{side}-child"]
        assert server["trace_id"] == child["trace_id"] == TRACE
        assert server["parent_span_id"] == PARENT
        assert child["parent_span_id"] == server["span_id"]
        assert server["trace_state"] == child["trace_state"] == "vendor=opaque,t@sys=1"
        assert server["flags"] & 0xFF00 == HAS_IS_REMOTE | IS_REMOTE
        assert child["flags"] & 0xFF00 == HAS_IS_REMOTE
    # The low byte is the W3C trace flags (trace.proto); OpenTelemetry Python leaves it 0.
    assert by_name["at-server"]["flags"] & 0xFF == int(flags, 16)
    assert by_name["at-child"]["flags"] & 0xFF == int(flags, 16)


@pytest.mark.parametrize("flags", ["01", "03"])
def test_otel_continues_autotrace_headers_and_exports_the_same_trace(
    receiver: Receiver, otel_to: trace.Tracer, flags: str
) -> None:
    """autotrace's headers, continued by OpenTelemetry and sent by its exporter, name autotrace's span as parent."""
    remote = extract({"traceparent": f"00-{TRACE}-{PARENT}-{flags}", "tracestate": "a=1"})
    with capture_spans() as got:
        with autotrace.span("at-client", kind="client", parent=remote):
            carrier: dict[str, str] = inject({})
    with otel_to.start_as_current_span("otel-server", context=W3C.extract(carrier)):
        pass
    assert receiver.wait_for(1, timeout=10)
    (otel_span,) = receiver.spans
    (at_span,) = got
    assert otel_span["trace_id"] == TRACE
    assert otel_span["parent_span_id"] == f"{at_span.get_span_context().span_id:016x}"
    assert otel_span["trace_state"] == "a=1"
    assert otel_span["flags"] & 0xFF00 == HAS_IS_REMOTE | IS_REMOTE


def _otel_traceparent(header: str) -> tuple[int, int, bool] | None:
    ctx = trace.get_current_span(W3C.extract({"traceparent": header})).get_span_context()
    return (ctx.trace_id, ctx.span_id, ctx.trace_flags.sampled) if ctx.is_valid else None


def _otel_tracestate(header: str) -> str:
    carrier = {"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": header}
    ctx = trace.get_current_span(W3C.extract(carrier)).get_span_context()
    return ",".join(f"{k}={v}" for k, v in ctx.trace_state.items())


def _mutants(seed: int, base: str, alphabet: str, count: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        chars = list(base)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(chars))
            roll = rng.random()
            if roll < 0.4:
                chars[at] = rng.choice(alphabet)
            elif roll < 0.7:
                del chars[at]
            else:
                chars.insert(at, rng.choice(alphabet))
        out.append("".join(chars))
    return out


def test_traceparent_mutants_are_judged_as_opentelemetry_judges_them(caplog: pytest.LogCaptureFixture) -> None:
    """2000 near-miss traceparents (and every version/flags/tail combination) parse as OpenTelemetry parses them."""
    caplog.set_level(logging.CRITICAL)
    cases = [
        f"{version}-{TRACE}-{PARENT}-{flags}{tail}"
        for version in ("00", "01", "cc", "fe", "ff", "0A")
        for flags in ("00", "01", "02", "03", "09", "ff", "0F")
        for tail in ("", "-", "-future", "x", ".future", "-a-b")
    ]
    cases += _mutants(7, f"00-{TRACE}-{PARENT}-01", "0123456789abcdefABCDEF-xz. ", 2000)
    for header in cases:
        ours = parse_traceparent(header)
        mine = None if ours is None else (ours.trace_id, ours.span_id, ours.sampled)
        assert mine == _otel_traceparent(header), header


def test_tracestate_mutants_are_judged_as_opentelemetry_judges_them(caplog: pytest.LogCaptureFixture) -> None:
    """Random and limit-edge tracestates (32/33 members, 256/257-char keys, values) keep OpenTelemetry's members."""
    caplog.set_level(logging.CRITICAL)
    rng = random.Random(11)
    cases = [
        ",".join(f"k{n}=v" for n in range(32)),
        ",".join(f"k{n}=v" for n in range(33)),
        "a=" + "x" * 256,
        "a=" + "x" * 257,
        "a" * 256 + "=1",
        "a" * 257 + "=1",
        "t" * 241 + "@" + "s" * 14 + "=1",
        "t" * 242 + "@s=1",
        "a@" + "s" * 15 + "=1",
        "a=1,a=2",
        "a=1, ,b=2",
        "a=1 \t, \tb=2",
        "A=1",
    ]
    cases += ["".join(rng.choice("ab0_-*/@=, \tAxyz~") for _ in range(rng.randint(1, 14))) for _ in range(2000)]
    for header in cases:
        assert parse_tracestate(header) == _otel_tracestate(header), header


def test_endpoint_credentials_reach_the_collector_as_opentelemetry_sends_them() -> None:
    """user:password@ in the endpoint gives the same Authorization from autotrace as from OpenTelemetry's exporter."""
    collector = RawCollector()
    url = f"http://us%40er:p%3Ass@127.0.0.1:{collector.port}/v1/traces"
    try:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url, timeout=10)))
        with provider.get_tracer("creds").start_as_current_span("otel"):
            pass
        provider.shutdown()
        exporter = OTLPHttpExporter(url, timeout=10)
        autotrace.configure(sample_rate=1.0, exporters=[exporter])
        with autotrace.span("autotrace"):
            pass
        assert autotrace.shutdown(10) is True
    finally:
        collector.close()
    sent = [[v for k, v in head if k.lower() == "authorization"] for head in collector.heads]
    assert len(sent) == 2
    assert sent[0] == sent[1] == ["Basic dXNAZXI6cDpzcw=="]
