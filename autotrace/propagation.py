"""W3C Trace Context: carry a trace across processes in ``traceparent`` / ``tracestate``.

    headers = autotrace.propagation.inject({})          # outgoing call
    parent = autotrace.propagation.extract(request_headers)  # incoming call
    with autotrace.span("handle", kind="server", parent=parent): ...

``extract`` follows https://www.w3.org/TR/trace-context/ exactly and never
raises: anything invalid gives None (start a new trace), an invalid
``tracestate`` is dropped while the ``traceparent`` stands. The header rules
live in ``_w3c``, the httpx and requests hooks in ``_outgoing`` (those
libraries imported only when used); this module is their public home.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ._outgoing import TracedAdapter as TracedAdapter
from ._outgoing import async_httpx_transport as async_httpx_transport
from ._outgoing import httpx_transport as httpx_transport
from ._outgoing import trace_requests as trace_requests
from ._stacktrace import error_type
from ._w3c import TRACEPARENT as TRACEPARENT
from ._w3c import TRACESTATE as TRACESTATE
from ._w3c import Contextish, _resolve
from ._w3c import extract as extract
from ._w3c import format_traceparent as format_traceparent
from ._w3c import inject as inject
from ._w3c import parse_traceparent as parse_traceparent
from ._w3c import parse_tracestate as parse_tracestate
from .context import use_span
from .redaction import redact_url
from .spans import NonRecordingSpan, Span, SpanContext, SpanKind, StatusCode
from .tracer import internal_error, span

__all__ = [
    "ENV_TRACEPARENT",
    "ENV_TRACESTATE",
    "TRACEPARENT",
    "TRACESTATE",
    "TracedAdapter",
    "async_httpx_transport",
    "attach",
    "extract",
    "extract_env",
    "format_traceparent",
    "httpx_transport",
    "inject",
    "inject_env",
    "inject_request",
    "parse_traceparent",
    "parse_tracestate",
    "trace_requests",
    "traced_urlopen",
]


ENV_TRACEPARENT = "TRACEPARENT"
"""The environment variable carrying ``traceparent`` to a child process (OpenTelemetry's env carrier)."""
ENV_TRACESTATE = "TRACESTATE"
"""The environment variable carrying ``tracestate`` beside ``TRACEPARENT``."""


def inject_env(env: Mapping[str, str] | None = None, context: Contextish = None) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) with ``TRACEPARENT`` (and ``TRACESTATE``) for a child process.

    Ready for ``subprocess.run(..., env=inject_env())``: the child continues
    the current trace (or ``context``'s) with ``extract_env()``. Stale values
    inherited from this process's own parent are replaced, or removed when
    there is no span to continue. ``env`` itself is not changed. Never raises.
    """
    out = dict(os.environ if env is None else env)
    try:
        out.pop(ENV_TRACEPARENT, None)
        out.pop(ENV_TRACESTATE, None)
        ctx = _resolve(context)
        if ctx is not None and ctx.is_valid:
            out[ENV_TRACEPARENT] = format_traceparent(ctx)
            if ctx.trace_state:
                out[ENV_TRACESTATE] = ctx.trace_state
    except Exception as exc:
        internal_error("propagation.inject_env", exc)
    return out


def extract_env(env: Mapping[str, str] | None = None) -> SpanContext | None:
    """The parent process's span context from ``TRACEPARENT``/``TRACESTATE`` in ``env`` (default ``os.environ``).

    None when absent or invalid, as ``extract``. Never raises.
    """
    try:
        source = os.environ if env is None else env
        parent = source.get(ENV_TRACEPARENT)
        if not isinstance(parent, str):
            return None
        headers = {TRACEPARENT: parent}
        state = source.get(ENV_TRACESTATE)
        if isinstance(state, str):
            headers[TRACESTATE] = state
        return extract(headers)
    except Exception as exc:
        internal_error("propagation.extract_env", exc)
        return None


@contextmanager
def attach(headers: Any) -> Iterator[SpanContext | None]:
    """Make the caller's context from ``headers`` current for a block.

    Spans and ``@traced`` calls inside become children of the remote span (in
    the same trace, honouring its sampled flag). With missing or invalid
    headers the current context is left as it is; the block gets None.
    """
    ctx = extract(headers)
    with use_span(ctx):
        yield ctx


# -- outgoing HTTP calls --------------------------------------------------------------------


def inject_request(request: urllib.request.Request, context: Contextish = None) -> urllib.request.Request:
    """Add the current (or given) trace context to a ``urllib.request.Request``; return it."""
    try:
        carrier: dict[str, str] = {}
        for name, value in inject(carrier, context).items():
            request.remove_header(name.capitalize())
            request.add_header(name, value)
    except Exception as exc:
        internal_error("propagation.inject_request", exc)
    return request


def traced_urlopen(
    url: str | urllib.request.Request, data: bytes | None = None, timeout: float = 30.0, **kwargs: Any
) -> Any:
    """``urllib.request.urlopen`` inside a CLIENT span that propagates the trace.

    The span is named after the method and carries ``http.request.method``,
    ``url.full`` (credentials, sensitive query values and token-looking path
    segments replaced by ``REDACTED``: see ``redaction.redact_url``),
    ``server.address``, ``server.port`` and ``http.response.status_code``; a
    status of 400 or more, or a failure, makes it ERROR. The response (or the
    exception) is exactly urlopen's.
    """
    request = url if isinstance(url, urllib.request.Request) else urllib.request.Request(url, data=data)
    if data is not None and request.data is None:
        request.data = data
    try:
        method = request.get_method()
        parts = urllib.parse.urlsplit(request.full_url)
        attrs: dict[str, Any] = {
            "http.request.method": method,
            "url.full": redact_url(request.full_url),  # no user:password, no key or signature values
            "server.address": parts.hostname or "",
        }
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        if port:
            attrs["server.port"] = port
        s: Span | NonRecordingSpan = span(method, kind=SpanKind.CLIENT, attributes=attrs)
    except Exception as exc:
        internal_error("traced_urlopen", exc)
        return urllib.request.urlopen(request, timeout=timeout, **kwargs)
    with s:
        inject_request(request, s)
        try:
            response = urllib.request.urlopen(request, timeout=timeout, **kwargs)
        except urllib.error.HTTPError as err:
            _client_status(s, err.code)
            raise
        except BaseException as exc:
            s.set_attribute("error.type", error_type(exc))
            raise
        _client_status(s, getattr(response, "status", None))
        return response


def _client_status(s: Span | NonRecordingSpan, code: Any) -> None:
    if not isinstance(code, int):
        return
    s.set_attribute("http.response.status_code", code)
    if code >= 400:
        s.set_attribute("error.type", str(code))
        s.set_status(StatusCode.ERROR, f"HTTP {code}")
