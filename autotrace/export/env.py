"""Reading exporter settings from OTEL_* variables; a bad value raises ValueError naming it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._env import get, parse_count, parse_ms
from ._base import Exporter

__all__ = ["DEFAULT_EXPORT_FILE", "batch_settings", "exporters_from_env", "get", "parse_count", "parse_ms"]

DEFAULT_EXPORT_FILE = "autotrace-traces.jsonl"
"""Where ``OTEL_TRACES_EXPORTER=file`` writes when ``AUTOTRACE_EXPORT_FILE`` is not set."""

_EXPORTER_NAMES = ("otlp", "console", "file", "none")


def batch_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """BatchSpanProcessor settings from ``OTEL_BSP_*`` (milliseconds), with OpenTelemetry's defaults."""
    settings: dict[str, Any] = {
        "max_queue_size": 2048,
        "schedule_delay": 5.0,
        "max_export_batch_size": 512,
        "export_timeout": 30.0,
    }
    for var, key, parse in (
        ("OTEL_BSP_MAX_QUEUE_SIZE", "max_queue_size", parse_count),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "max_export_batch_size", parse_count),
        ("OTEL_BSP_SCHEDULE_DELAY", "schedule_delay", parse_ms),
        ("OTEL_BSP_EXPORT_TIMEOUT", "export_timeout", parse_ms),
    ):
        text = get(env, var)
        if text is not None:
            settings[key] = parse(var, text)
    if settings["max_export_batch_size"] > settings["max_queue_size"]:
        raise ValueError(
            f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE ({settings['max_export_batch_size']}) must not exceed "
            f"OTEL_BSP_MAX_QUEUE_SIZE ({settings['max_queue_size']})"
        )
    return settings


def exporters_from_env(names: str, env: Mapping[str, str]) -> list[Any]:
    """The exporters named by ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``file``, ``none``; a comma list)."""
    from .console import ConsoleExporter
    from .files import FileExporter
    from .otlp_http import OTLPHttpExporter

    wanted: list[str] = []
    for part in names.split(","):
        name = part.strip().lower()
        if not name:
            continue
        if name not in _EXPORTER_NAMES:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER: unknown exporter {part.strip()!r}; expected a comma list of "
                f"{', '.join(_EXPORTER_NAMES)}"
            )
        if name != "none" and name not in wanted:
            wanted.append(name)
    settings = batch_settings(env)
    exporters: list[Any] = []
    for name in wanted:
        exporter: Exporter
        if name == "otlp":
            exporter = OTLPHttpExporter(env=env)
        elif name == "console":
            exporter = ConsoleExporter()
        else:
            path = get(env, "AUTOTRACE_EXPORT_FILE") or DEFAULT_EXPORT_FILE
            try:
                exporter = FileExporter(path)
            except ValueError as exc:
                raise ValueError(f"AUTOTRACE_EXPORT_FILE: {exc}") from None
        # BatchSpanProcessor reads these instead of os.environ, so a custom mapping wins.
        exporter.batch_settings = settings
        exporters.append(exporter)
    return exporters
