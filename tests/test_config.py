"""TraceConfig: defaults, validation, and the environment variables."""

from __future__ import annotations

import pytest

import autotrace
from autotrace import TraceConfig
from autotrace.sampling import ParentBased, TraceIdRatioBased


def test_defaults() -> None:
    """Default: 10% sampling, 1000 traces, OpenTelemetry's default limits."""
    c = TraceConfig()
    assert c.sample_rate == 0.1 and c.max_traces == 1000
    assert (c.max_attributes, c.max_events, c.max_links) == (128, 128, 128)
    assert c.max_attribute_length is None and c.enabled is True
    sampler = c.make_sampler()
    assert isinstance(sampler, ParentBased) and isinstance(sampler.root, TraceIdRatioBased)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"sample_rate": -0.1}, "sample_rate"),
        ({"sample_rate": float("nan")}, "sample_rate"),
        ({"sample_rate": "0.5"}, "sample_rate"),
        ({"max_traces": 0}, "max_traces"),
        ({"max_traces": 2.5}, "max_traces"),
        ({"max_attributes": -1}, "max_attributes"),
        ({"max_attribute_length": -1}, "max_attribute_length"),
        ({"service_name": 5}, "service_name"),
        ({"exporters": "otlp"}, "exporters"),
        ({"redact": 3}, "redact"),
    ],
)
def test_bad_values_name_the_setting(kwargs: dict[str, object], field: str) -> None:
    """Every bad value raises ValueError naming the setting."""
    with pytest.raises(ValueError, match=field):
        TraceConfig(**kwargs)  # type: ignore[arg-type]


def test_configure_overrides_and_unknown_settings() -> None:
    """configure(**overrides) applies them; an unknown setting raises ValueError naming it."""
    store = autotrace.configure(TraceConfig(), max_traces=7)
    assert store.max_traces == 7
    with pytest.raises(ValueError, match="bogus"):
        autotrace.configure(TraceConfig(), bogus=1)


def test_from_env_reads_every_variable() -> None:
    """AUTOTRACE_* and OTEL_* variables are all read."""
    env = {
        "AUTOTRACE_SAMPLE_RATE": "0.25",
        "AUTOTRACE_MAX_TRACES": "42",
        "OTEL_SERVICE_NAME": "svc",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=ml%20infra,service.version=1.2",
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "10",
        "OTEL_SPAN_EVENT_COUNT_LIMIT": "11",
        "OTEL_SPAN_LINK_COUNT_LIMIT": "12",
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "100",
    }
    c = TraceConfig.from_env(env)
    assert c.sample_rate == 0.25 and c.max_traces == 42
    assert c.service_name == "svc" and c.service_version == "1.2"
    assert c.resource_attributes["team"] == "ml infra"
    assert (c.max_attributes, c.max_events, c.max_links, c.max_attribute_length) == (10, 11, 12, 100)
    resource = c.resource()
    assert resource["service.name"] == "svc" and resource["deployment.environment"] == "prod"


def test_service_name_precedence() -> None:
    """OTEL_SERVICE_NAME wins over service.name in OTEL_RESOURCE_ATTRIBUTES."""
    c = TraceConfig.from_env({"OTEL_SERVICE_NAME": "a", "OTEL_RESOURCE_ATTRIBUTES": "service.name=b"})
    assert c.resource()["service.name"] == "a"
    c = TraceConfig.from_env({"OTEL_RESOURCE_ATTRIBUTES": "service.name=b"})
    assert c.resource()["service.name"] == "b"


def test_default_service_name_is_unknown_service() -> None:
    """Without configuration service.name is unknown_service:<program>, as OpenTelemetry does."""
    assert TraceConfig.from_env({}).resource()["service.name"].startswith("unknown_service:")


def test_otel_sampler_variables() -> None:
    """OTEL_TRACES_SAMPLER(_ARG) choose the sampler; AUTOTRACE_SAMPLE_RATE wins over them."""
    c = TraceConfig.from_env({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"})
    assert c.sample_rate == 0.5 and isinstance(c.make_sampler(), TraceIdRatioBased)
    c = TraceConfig.from_env({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.3"})
    assert c.sample_rate == 0.3 and isinstance(c.make_sampler(), ParentBased)
    c = TraceConfig.from_env({"OTEL_TRACES_SAMPLER": "always_off"})
    assert c.sample_rate == 0.0
    c = TraceConfig.from_env({"OTEL_TRACES_SAMPLER": "always_on", "AUTOTRACE_SAMPLE_RATE": "0.2"})
    assert c.sample_rate == 0.2 and isinstance(c.make_sampler(), ParentBased)


def test_sdk_disabled() -> None:
    """OTEL_SDK_DISABLED=true turns tracing off."""
    assert TraceConfig.from_env({"OTEL_SDK_DISABLED": "true"}).enabled is False
    assert TraceConfig.from_env({"OTEL_SDK_DISABLED": "false"}).enabled is True


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("AUTOTRACE_SAMPLE_RATE", "lots"),
        ("AUTOTRACE_SAMPLE_RATE", "2"),
        ("AUTOTRACE_MAX_TRACES", "0"),
        ("AUTOTRACE_MAX_TRACES", "1e3"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "nan"),
        ("OTEL_SDK_DISABLED", "maybe"),
        ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
        ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "-3"),
        ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "big"),
    ],
)
def test_bad_environment_names_the_variable(var: str, value: str) -> None:
    """A bad environment value raises ValueError naming the variable."""
    with pytest.raises(ValueError, match=var):
        TraceConfig.from_env({var: value})


def test_configure_without_config_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure() with no config reads the environment; overrides win."""
    monkeypatch.setenv("AUTOTRACE_MAX_TRACES", "33")
    monkeypatch.setenv("AUTOTRACE_SAMPLE_RATE", "0.5")
    store = autotrace.configure(sample_rate=1.0)
    assert store.max_traces == 33
    assert autotrace.tracer.get_config().sample_rate == 1.0  # type: ignore[union-attr]
    monkeypatch.setenv("AUTOTRACE_MAX_TRACES", "zero")
    with pytest.raises(ValueError, match="AUTOTRACE_MAX_TRACES"):
        autotrace.configure()


def test_import_survives_bad_environment() -> None:
    """`import autotrace` with a bad variable logs a warning and keeps defaults."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "import autotrace; print(autotrace.get_trace_store().max_traces)"],
        env={"AUTOTRACE_MAX_TRACES": "nope", "PYTHONPATH": ".", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1000"
    assert "AUTOTRACE_MAX_TRACES" in out.stderr


def test_import_ignores_only_the_bad_variable() -> None:
    """At import a bad OTEL_RESOURCE_ATTRIBUTES is left out alone, named once on stderr; the good variables apply."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOTRACE_", "OTEL_"))}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment",  # no '=': invalid
        AUTOTRACE_SAMPLE_RATE="1",
        OTEL_SERVICE_NAME="checkout",
        AUTOTRACE_MAX_TRACES="many",  # a second bad one, named on its own line
        OTEL_SPAN_EVENT_COUNT_LIMIT="7",
    )
    code = (
        "import autotrace\n"
        "c = autotrace.tracer.get_config()\n"
        "print(c.sample_rate, c.service_name, c.max_events, c.max_traces)\n"
        "try:\n"
        "    autotrace.TraceConfig.from_env()\n"
        "except ValueError as exc:\n"
        "    print('raises:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    values, raised = done.stdout.splitlines()
    assert values == "1.0 checkout 7 1000"
    assert raised.startswith("raises: OTEL_RESOURCE_ATTRIBUTES")
    lines = done.stderr.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("autotrace: ignoring OTEL_RESOURCE_ATTRIBUTES at import")
    assert lines[1].startswith("autotrace: ignoring AUTOTRACE_MAX_TRACES at import")
