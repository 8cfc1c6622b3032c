"""Configuration as data: TraceConfig, read from code or from the environment.

``TraceConfig`` is frozen and validated when built, so a bad setting fails at
configure time with a ``ValueError`` that names it, never later on the hot path.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import _resource
from ._env import get as _get
from ._env import parse_bool as _parse_bool
from ._env import parse_float as _parse_float
from ._env import parse_int as _parse_int
from ._env import parse_kv_list as _parse_kv_list
from ._resource import process_attributes as process_attributes  # its old home
from .sampling import ParentBased, Sampler, TraceIdRatioBased, sampler_from_name

__all__ = ["TraceConfig"]


@dataclasses.dataclass(frozen=True)
class TraceConfig:
    """Everything autotrace can be told: sampling, storage, resource, limits, exporters."""

    sample_rate: float = 0.1
    """Share of new traces recorded, 0..1 (OpenTelemetry's TraceIdRatioBased rule)."""
    max_traces: int = 1000
    """Whole traces kept in memory; the oldest is evicted first."""
    service_name: str | None = None
    """``service.name``; default ``unknown_service:<program>`` as OpenTelemetry does."""
    service_version: str | None = None
    """``service.version`` on the resource, when given."""
    resource_attributes: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """More resource attributes (``deployment.environment``, ``host.name``...)."""
    exporters: Sequence[Any] = ()
    """Exporters that run beside the in-memory store (see ``autotrace.export``)."""
    sampler: Sampler | None = None
    """A custom sampler; when set it replaces the ``sample_rate`` rule."""
    enabled: bool = True
    """False turns tracing into no-ops (``OTEL_SDK_DISABLED=true``)."""
    max_attributes: int = 128
    """Attributes per span (and per event or link); more are dropped and counted."""
    max_events: int = 128
    """Events per span."""
    max_links: int = 128
    """Links per span."""
    max_attribute_length: int | None = None
    """Longest string value kept; longer ones are truncated. None: no limit."""
    max_spans_per_trace: int = 10_000
    """Spans one trace may hold in the store, so a runaway loop cannot eat memory."""
    max_name_length: int = 1024
    """Longest span or event name kept; longer ones are truncated."""
    max_sequence_length: int = 1024
    """Items kept of a list or tuple attribute value; the rest are dropped."""
    capture_max_length: int = 1000
    """Longest repr kept by ``capture_args`` / ``capture_result``."""
    capture_max_bytes: int = 4096
    """Bytes of captured values kept per span, all arguments and the result together; past it they are cut."""
    redact: Callable[[str, Any], Any] | None = None
    """Called as ``redact(key, value)`` on captured arguments and results; returns the value to keep."""
    keep_errors: bool = False
    """Tail sampling: also keep every trace the head sample left out in which a span failed."""
    keep_slower_than: float | None = None
    """Tail sampling: also keep every trace left out whose local root lasted longer than this (seconds)."""
    max_provisional_spans: int = 100_000
    """Spans held at most in open provisional traces (tail sampling); past it the oldest is discarded."""
    metrics: bool = True
    """Duration histograms over every traced call, sampled or not (``/metrics``, ``/stats``)."""
    metrics_max_series: int = 1000
    """Span name/kind pairs the metrics keep apart; past it new ones count under ``span_name="_other"``."""

    def __post_init__(self) -> None:
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or math.isnan(rate):
            raise ValueError(f"sample_rate must be a number between 0 and 1; got {rate!r}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"sample_rate must be between 0 and 1; got {rate!r}")
        object.__setattr__(self, "sample_rate", float(rate))
        for name in ("max_traces", "max_attributes", "max_events", "max_links", "max_spans_per_trace"):
            _check_int(name, getattr(self, name), minimum=1 if name in ("max_traces", "max_spans_per_trace") else 0)
        _check_int("max_name_length", self.max_name_length, minimum=1)
        _check_int("max_sequence_length", self.max_sequence_length, minimum=0)
        _check_int("capture_max_length", self.capture_max_length, minimum=1)
        _check_int("capture_max_bytes", self.capture_max_bytes, minimum=0)
        if self.max_attribute_length is not None:
            _check_int("max_attribute_length", self.max_attribute_length, minimum=0)
        for name in ("service_name", "service_version"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a str; got {value!r}")
        if not isinstance(self.resource_attributes, Mapping):
            raise ValueError(f"resource_attributes must be a mapping; got {self.resource_attributes!r}")
        object.__setattr__(self, "resource_attributes", dict(self.resource_attributes))
        if self.sampler is not None and not callable(self.sampler.should_sample):
            raise ValueError(f"sampler must have a should_sample method; got {self.sampler!r}")
        if isinstance(self.exporters, (str, bytes)) or not isinstance(self.exporters, Sequence):
            raise ValueError(f"exporters must be a list of exporters; got {self.exporters!r}")
        object.__setattr__(self, "exporters", tuple(self.exporters))
        if not isinstance(self.keep_errors, bool):
            raise ValueError(f"keep_errors must be True or False; got {self.keep_errors!r}")
        slow = self.keep_slower_than
        if slow is not None:
            if isinstance(slow, bool) or not isinstance(slow, (int, float)) or not math.isfinite(slow) or slow < 0:
                raise ValueError(f"keep_slower_than must be a number of seconds >= 0, or None; got {slow!r}")
            object.__setattr__(self, "keep_slower_than", float(slow))
        _check_int("max_provisional_spans", self.max_provisional_spans, minimum=1)
        if not isinstance(self.metrics, bool):
            raise ValueError(f"metrics must be True or False; got {self.metrics!r}")
        _check_int("metrics_max_series", self.metrics_max_series, minimum=1)
        if self.redact is not None and not callable(self.redact):
            raise ValueError(f"redact must be callable; got {self.redact!r}")

    # ------------------------------------------------------------------------------

    def make_sampler(self) -> Sampler:
        """The sampler in force: the custom one, else parent-based ratio sampling."""
        if self.sampler is not None:
            return self.sampler
        return ParentBased(TraceIdRatioBased(self.sample_rate))

    def resource(self) -> dict[str, Any]:
        """Resource attributes: configured ones, ``service.*`` and ``telemetry.sdk.*``."""
        return _resource.build(self.resource_attributes, self.service_name, self.service_version)

    def replace(self, **changes: Any) -> TraceConfig:
        """A copy with some fields changed (validated again)."""
        _check_setting_names(changes)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> TraceConfig:
        """Read the AUTOTRACE_* and standard OTEL_* variables; a bad one raises ValueError naming it."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}

        def get(name: str) -> str | None:
            return _get(env, name)

        disabled = get("OTEL_SDK_DISABLED")
        if disabled is not None:
            values["enabled"] = not _parse_bool("OTEL_SDK_DISABLED", disabled)

        resource = _parse_kv_list("OTEL_RESOURCE_ATTRIBUTES", get("OTEL_RESOURCE_ATTRIBUTES") or "")
        if resource:
            values["resource_attributes"] = resource
            if "service.version" in resource:
                values["service_version"] = resource["service.version"]
        service = get("OTEL_SERVICE_NAME") or resource.get("service.name")
        if service:
            values["service_name"] = service

        sampler_name = get("OTEL_TRACES_SAMPLER")
        sampler_arg = get("OTEL_TRACES_SAMPLER_ARG")
        arg: float | None = None
        if sampler_arg is not None:
            arg = _parse_float("OTEL_TRACES_SAMPLER_ARG", sampler_arg, 0.0, 1.0)
        if sampler_name is not None:
            try:
                sampler = sampler_from_name(sampler_name, arg)
            except ValueError as exc:
                raise ValueError(f"OTEL_TRACES_SAMPLER: {exc}") from None
            rate = getattr(sampler, "root_bound", 0) / float(1 << 64)
            values["sample_rate"] = rate
            if sampler_name.strip().lower() != "parentbased_traceidratio":
                values["sampler"] = sampler
        elif arg is not None:
            values["sample_rate"] = arg

        rate_text = get("AUTOTRACE_SAMPLE_RATE")
        if rate_text is not None:
            values["sample_rate"] = _parse_float("AUTOTRACE_SAMPLE_RATE", rate_text, 0.0, 1.0)
            values.pop("sampler", None)  # ours wins over the OTEL ones
        max_traces = get("AUTOTRACE_MAX_TRACES")
        if max_traces is not None:
            values["max_traces"] = _parse_int("AUTOTRACE_MAX_TRACES", max_traces, 1)

        keep_errors = get("AUTOTRACE_KEEP_ERRORS")
        if keep_errors is not None:
            values["keep_errors"] = _parse_bool("AUTOTRACE_KEEP_ERRORS", keep_errors)
        slow = get("AUTOTRACE_KEEP_SLOWER_THAN")
        if slow is not None:
            values["keep_slower_than"] = _parse_float("AUTOTRACE_KEEP_SLOWER_THAN", slow, 0.0, 1e9)

        for var, field in (
            ("AUTOTRACE_MAX_PROVISIONAL_SPANS", "max_provisional_spans"),
            ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "max_attributes"),
            ("OTEL_SPAN_EVENT_COUNT_LIMIT", "max_events"),
            ("OTEL_SPAN_LINK_COUNT_LIMIT", "max_links"),
            ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "max_attribute_length"),
            ("AUTOTRACE_MAX_SPANS_PER_TRACE", "max_spans_per_trace"),
            ("AUTOTRACE_MAX_NAME_LENGTH", "max_name_length"),
            ("AUTOTRACE_MAX_SEQUENCE_LENGTH", "max_sequence_length"),
        ):
            text = get(var)
            if text is not None:
                values[field] = _parse_int(
                    var, text, 1 if field in ("max_spans_per_trace", "max_name_length", "max_provisional_spans") else 0
                )

        metrics = get("AUTOTRACE_METRICS")
        if metrics is not None:
            values["metrics"] = _parse_bool("AUTOTRACE_METRICS", metrics)
        max_series = get("AUTOTRACE_METRICS_MAX_SERIES")
        if max_series is not None:
            values["metrics_max_series"] = _parse_int("AUTOTRACE_METRICS_MAX_SERIES", max_series, 1)

        exporter_names = get("OTEL_TRACES_EXPORTER")
        if exporter_names is not None:
            values["exporters"] = _exporters_from_env(exporter_names, env)

        _check_setting_names(overrides)
        values.update(overrides)
        return cls(**values)


def _check_setting_names(changes: Mapping[str, Any]) -> None:
    """Raise ValueError naming each key that is no TraceConfig field, with the field it may be a typo of."""
    names = [f.name for f in dataclasses.fields(TraceConfig)]
    unknown = sorted(set(changes) - set(names))
    if unknown:
        hints = [
            f"{u} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(u, names, 1)) else u
            for u in unknown
        ]
        raise ValueError(f"unknown TraceConfig setting(s): {', '.join(hints)}")


def from_env_skipping_bad(environ: Mapping[str, str] | None = None) -> tuple[TraceConfig, list[str]]:
    """``TraceConfig.from_env()`` that leaves out each bad variable instead of failing as a whole.

    Returns the configuration and one message per variable left out, each naming
    it. Used at import, where one typo must not cost the other settings (a bad
    ``OTEL_RESOURCE_ATTRIBUTES`` would otherwise discard a good ``AUTOTRACE_SAMPLE_RATE``).
    """
    env = dict(os.environ if environ is None else environ)
    problems: list[str] = []
    while True:
        try:
            return TraceConfig.from_env(env), problems
        except Exception as exc:  # import must survive whatever the environment holds
            name = _variable_named_in(str(exc), env)
            if name is None:  # not traceable to one variable: fall back to the defaults
                problems.append(f"{exc}; using the defaults for every variable")
                return TraceConfig(), problems
            problems.append(f"ignoring {name} at import: {exc}")
            del env[name]


def _variable_named_in(message: str, env: Mapping[str, str]) -> str | None:
    """The first word of ``message`` that is a variable set in ``env`` (errors start with its name)."""
    for match in re.finditer(r"[A-Za-z_][A-Za-z0-9_]*", message):
        if match.group() in env:
            return match.group()
    return None


def _exporters_from_env(names: str, env: Mapping[str, str]) -> tuple[Any, ...]:
    try:
        from .export import exporters_from_env
    except ImportError as exc:  # pragma: no cover - export module always ships
        raise ValueError(f"OTEL_TRACES_EXPORTER: exporters are unavailable ({exc})") from None
    return tuple(exporters_from_env(names, env))


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value!r}")


parse_kv_list = _parse_kv_list  # its old home, for code that imports it from here
