"""Exporter configuration from OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_* and OTEL_BSP_*."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import autotrace
from autotrace.export import (
    DEFAULT_ENDPOINT,
    BatchSpanProcessor,
    ConsoleExporter,
    FileExporter,
    OTLPHttpExporter,
    exporters_from_env,
)


def test_exporter_names_make_exporters(tmp_path: Path) -> None:
    """otlp, console and file make one exporter each (comma list, any case, duplicates once); none makes none."""
    env = {"AUTOTRACE_EXPORT_FILE": str(tmp_path / "out.jsonl")}
    made = exporters_from_env(" OTLP, console,file,otlp ", env)
    assert [type(e) for e in made] == [OTLPHttpExporter, ConsoleExporter, FileExporter]
    assert made[2].path == str(tmp_path / "out.jsonl")
    assert exporters_from_env("none", {}) == []
    assert exporters_from_env("none,console", {})[0].__class__ is ConsoleExporter


def test_the_file_exporter_defaults_to_autotrace_traces_jsonl() -> None:
    """OTEL_TRACES_EXPORTER=file without AUTOTRACE_EXPORT_FILE writes autotrace-traces.jsonl."""
    (exporter,) = exporters_from_env("file", {})
    assert exporter.path == "autotrace-traces.jsonl"


def test_unknown_exporter_names_are_a_value_error_naming_the_variable() -> None:
    """A name we do not know (zipkin, a typo) fails loudly through TraceConfig.from_env too."""
    with pytest.raises(ValueError, match=r"OTEL_TRACES_EXPORTER.*'zipkin'"):
        exporters_from_env("otlp,zipkin", {})
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER"):
        autotrace.TraceConfig.from_env({"OTEL_TRACES_EXPORTER": "jaegr"})
    with pytest.raises(ValueError, match="AUTOTRACE_EXPORT_FILE"):
        exporters_from_env("file", {"AUTOTRACE_EXPORT_FILE": "/no/such/folder/x.jsonl"})


def test_trace_config_from_env_builds_exporters_that_configure_wraps() -> None:
    """OTEL_TRACES_EXPORTER in TraceConfig.from_env gives exporters; configure() runs them in batch processors."""
    config = autotrace.TraceConfig.from_env({"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "123"})
    (exporter,) = config.exporters
    assert isinstance(exporter, ConsoleExporter)
    autotrace.configure(config)
    (proc,) = [p for p in autotrace.tracer._S.processors if isinstance(p, BatchSpanProcessor)]
    assert proc.exporter is exporter and proc.schedule_delay == 0.123


def test_otlp_endpoint_resolution() -> None:
    """The traces endpoint is used as given; the base endpoint gets /v1/traces; the default is localhost:4318."""
    assert OTLPHttpExporter(env={}).endpoint == DEFAULT_ENDPOINT == "http://localhost:4318/v1/traces"
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/"}
    assert OTLPHttpExporter(env=base).endpoint == "https://collector:4318/v1/traces"
    both = {**base, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tempo:4318/custom/path"}
    assert OTLPHttpExporter(env=both).endpoint == "http://tempo:4318/custom/path"
    assert OTLPHttpExporter("http://x:1/t", env=both).endpoint == "http://x:1/t"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://collector/v1/traces"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://host:99999"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "ten"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-5"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/xml"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "bad%0Akey=1"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "NaN"),
    ],
)
def test_bad_values_raise_a_value_error_naming_the_variable(var: str, value: str) -> None:
    """Every bad OTEL_* value is a ValueError whose message names the variable."""
    with pytest.raises(ValueError, match=var):
        exporters_from_env("otlp", {var: value})


def test_grpc_is_refused_with_a_clear_message() -> None:
    """OTEL_EXPORTER_OTLP_PROTOCOL=grpc says it is not supported and what to use instead."""
    with pytest.raises(ValueError, match=r"grpc is not supported.*http/protobuf or http/json"):
        OTLPHttpExporter(env={"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_otlp_settings_from_env() -> None:
    """Headers (percent-decoded, signal-specific wins), timeout in ms, compression and protocol are read."""
    env = {
        "OTEL_EXPORTER_OTLP_HEADERS": "a=1",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "Authorization=Bearer%20tok,x-team=infer%2Cence",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "GZIP",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json",
    }
    exporter = OTLPHttpExporter(env=env)
    assert exporter.headers == {"Authorization": "Bearer tok", "x-team": "infer,ence"}
    assert exporter.timeout == 2.5
    assert exporter.compression == "gzip"
    assert exporter.encoding == "json"
    assert OTLPHttpExporter(env={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}).encoding == "protobuf"
    assert OTLPHttpExporter(env={}).encoding == "json"
    assert OTLPHttpExporter(env={}).timeout == 10.0


def test_constructor_arguments_are_checked() -> None:
    """Bad constructor arguments name themselves."""
    with pytest.raises(ValueError, match="encoding"):
        OTLPHttpExporter(encoding="xml", env={})
    with pytest.raises(ValueError, match="compression"):
        OTLPHttpExporter(compression="zstd", env={})
    with pytest.raises(ValueError, match="timeout"):
        OTLPHttpExporter(timeout=0, env={})
    with pytest.raises(ValueError, match="endpoint"):
        OTLPHttpExporter("collector:4318", env={})
    with pytest.raises(ValueError, match="header"):
        OTLPHttpExporter(headers={"x\r\ny": "1"}, env={})
    with pytest.raises(ValueError, match="max_retries"):
        OTLPHttpExporter(max_retries=-1, env={})


def test_protobuf_without_opentelemetry_proto_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking for protobuf when opentelemetry-proto is missing is a clear error, before any span is lost."""
    monkeypatch.setitem(sys.modules, "opentelemetry.proto.collector.trace.v1.trace_service_pb2", None)
    with pytest.raises(ValueError, match=r"autotrace-inference\[proto\]"):
        OTLPHttpExporter(encoding="protobuf", env={})
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        exporters_from_env("otlp", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})


def test_logs_and_repr_hide_credentials_in_the_endpoint(caplog: pytest.LogCaptureFixture) -> None:
    """user:password@ and query strings in the endpoint never reach logs or repr()."""
    from .conftest import closed_port

    exporter = OTLPHttpExporter(
        f"http://user:s3cret@127.0.0.1:{closed_port()}/v1/traces?token=abc", timeout=0.5, backoff_base=0.01, env={}
    )
    assert "s3cret" not in repr(exporter) and "abc" not in repr(exporter)
    assert exporter.export([autotrace.Span("x")]) is False
    assert caplog.records and not any("s3cret" in r.getMessage() or "abc" in r.getMessage() for r in caplog.records)
