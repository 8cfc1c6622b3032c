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

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._outgoing import TracedAdapter as TracedAdapter
from ._outgoing import async_httpx_transport as async_httpx_transport
from ._outgoing import httpx_transport as httpx_transport
from ._outgoing import trace_requests as trace_requests
from ._stacktrace import error_type
from ._w3c import TRACEPARENT as TRACEPARENT
from ._w3c import TRACESTATE as TRACESTATE
from ._w3c import Contextish
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
    "TRACEPARENT",
    "TRACESTATE",
    "TracedAdapter",
    "async_httpx_transport",
    "attach",
    "extract",
    "format_traceparent",
    "httpx_transport",
    "inject",
    "inject_request",
    "parse_traceparent",
    "parse_tracestate",
    "trace_requests",
    "traced_urlopen",
]


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
