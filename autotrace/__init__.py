"""autotrace: tracing for inference code that costs almost nothing per call.

    from autotrace import traced, span

    @traced
    def generate(prompt): ...

    with span("decode", attributes={"step": 3}) as s:
        s.set_attribute("tokens", 12)

Spans are kept as whole traces in memory (``export_traces()`` gives OTLP/JSON),
served by ``autotrace.server`` and sent to any OpenTelemetry collector by
``autotrace.export``.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._process import flush_on_sigterm
from ._stderr import StderrFallback
from ._version import __version__
from .config import TraceConfig, from_env_skipping_bad
from .context import current_span, use_span
from .decorators import traced
from .genai import llm
from .inference import InferenceSpanBuilder
from .spans import Link, NonRecordingSpan, Span, SpanContext, SpanEvent, SpanKind, Status, StatusCode
from .store import TraceStore
from .tracer import apply_config, flush, get_trace_store, record_span, shutdown, span

if TYPE_CHECKING:
    from . import metrics as metrics
    from . import testing as testing

__all__ = [
    "InferenceSpanBuilder",
    "Link",
    "NonRecordingSpan",
    "Span",
    "SpanContext",
    "SpanEvent",
    "SpanKind",
    "Status",
    "StatusCode",
    "TraceConfig",
    "TraceStore",
    "__version__",
    "clear_traces",
    "configure",
    "current_span",
    "export_traces",
    "flush",
    "flush_on_sigterm",
    "get_trace_store",
    "init_trace_store",
    "llm",
    "record_span",
    "shutdown",
    "span",
    "trace_count",
    "traced",
    "use_span",
]

# Not the usual bare NullHandler: that also silences logging.lastResort, so a dead
# collector would go unnoticed. This one writes warnings to stderr only while the
# application has set up no logging of its own (see _stderr.py).
logging.getLogger("autotrace").addHandler(StderrFallback())

# Submodules with dependencies or threads of their own load on first use.
_LAZY = {"asgi", "cli", "export", "logs", "metrics", "propagation", "server", "testing", "wsgi"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'autotrace' has no attribute {name!r}")


def configure(config: TraceConfig | None = None, **overrides: Any) -> TraceStore:
    """Install a configuration and return the (new) global trace store.

    Without ``config`` the environment is read (``TraceConfig.from_env()``);
    keyword overrides win over both. Traces already stored are kept. A bad
    value raises ``ValueError`` naming the setting.
    """
    if config is None:
        config = TraceConfig.from_env(**overrides)
    elif overrides:
        config = config.replace(**overrides)
    if not isinstance(config, TraceConfig):
        raise TypeError(f"configure() takes a TraceConfig; got {type(config).__name__}")
    return apply_config(config)


init_trace_store = configure


def export_traces(limit: int | None = None) -> dict[str, Any]:
    """The ``limit`` most recent traces (all by default) as an OTLP/JSON ExportTraceServiceRequest."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None; got {limit!r}")
    return get_trace_store().export(limit)


def clear_traces() -> int:
    """Empty the global store; returns how many traces it held."""
    return get_trace_store().clear()


def trace_count() -> int:
    """How many traces the global store holds."""
    return get_trace_store().trace_count()


def _configure_from_env_at_import() -> None:
    # A bad variable must not break `import autotrace`, nor cost the good ones:
    # only it is left out, with a warning naming it (configure() raises on it).
    config, problems = from_env_skipping_bad()
    for problem in problems:
        logging.getLogger("autotrace").warning("autotrace: %s (configure() raises on it)", problem)
    apply_config(config)


_configure_from_env_at_import()
