"""Outgoing HTTP calls with httpx and requests: a CLIENT span per request, the trace context in its headers.

    client = httpx.Client(transport=propagation.httpx_transport())
    client = httpx.AsyncClient(transport=propagation.async_httpx_transport())
    session = propagation.trace_requests(requests.Session())

A transport (httpx) and an adapter (requests) rather than event hooks: a hook
never sees a request that fails (connection refused, timeout), so its span
could not be ended or marked ERROR. Neither library is imported until one of
these is called. Each request (each redirect hop, as the HTTP conventions ask)
is one span named after its method, with ``http.request.method``, ``url.full``
(credentials and sensitive query values replaced by ``REDACTED``),
``server.address``, ``server.port``, ``http.response.status_code`` and
``network.protocol.version``; status 400 and up, or an exception, makes it
ERROR (with ``error.type``), and the exception propagates unchanged. The span
ends when the response headers are in: reading the body is the caller's.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._urls import bounded, redact_url
from ._w3c import inject
from .spans import NonRecordingSpan, Span, SpanKind, StatusCode
from .tracer import internal_error, span

if TYPE_CHECKING:
    import httpx

__all__ = ["TracedAdapter", "async_httpx_transport", "httpx_transport", "trace_requests"]

_KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _client_span(method: Any, url: str) -> Span | NonRecordingSpan:
    """The CLIENT span of one outgoing request, not yet entered."""
    raw = str(method or "GET")
    name = raw.upper()
    attrs: dict[str, Any] = {}
    if name not in _KNOWN_METHODS:
        attrs["http.request.method_original"] = bounded(raw, 32)
        name = "_OTHER"
    parts = urllib.parse.urlsplit(url)
    attrs["http.request.method"] = name
    attrs["url.full"] = redact_url(url)
    attrs["server.address"] = parts.hostname or ""
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    if port:
        attrs["server.port"] = port
    return span(name, kind=SpanKind.CLIENT, attributes=attrs)


def _inject(set_header: Callable[[str, str], Any], s: Span | NonRecordingSpan) -> None:
    """Write the span's ``traceparent`` (and ``tracestate``) with ``set_header``, replacing any present."""
    try:
        carrier: dict[str, str] = {}
        for name, value in inject(carrier, s).items():
            set_header(name, value)
    except Exception as exc:
        internal_error("outgoing request (inject)", exc)


def _answered(s: Span | NonRecordingSpan, status: Any, version: Any) -> None:
    """Record the response status (ERROR from 400 up) and protocol version."""
    try:
        if isinstance(version, str) and version.upper().startswith("HTTP/"):
            s.set_attribute("network.protocol.version", version[5:])
        if isinstance(status, int):
            s.set_attribute("http.response.status_code", status)
            if status >= 400:
                s.set_attribute("error.type", str(status))
                s.set_status(StatusCode.ERROR, f"HTTP {status}")
    except Exception as exc:
        internal_error("outgoing request (response)", exc)


def _failed(s: Span | NonRecordingSpan, exc: BaseException) -> None:
    """``error.type`` for an exception; leaving the span records it and makes it ERROR."""
    try:
        cls = type(exc)
        module = cls.__module__
        s.set_attribute("error.type", cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}")
    except Exception as error:
        internal_error("outgoing request (exception)", error)


# -- httpx -------------------------------------------------------------------------------------


@functools.cache
def _httpx_classes() -> tuple[type[httpx.BaseTransport], type[httpx.AsyncBaseTransport]]:
    """The two transport classes, built on first use so that httpx is imported only then."""
    import httpx

    class TracingTransport(httpx.BaseTransport):
        """An httpx transport that sends each request through ``inner`` inside a CLIENT span."""

        def __init__(self, inner: httpx.BaseTransport) -> None:
            self.inner = inner

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            try:
                s = _client_span(request.method, str(request.url))
            except Exception as exc:
                internal_error("httpx transport (start)", exc)
                return self.inner.handle_request(request)
            with s:
                _inject(request.headers.__setitem__, s)
                try:
                    response = self.inner.handle_request(request)
                except BaseException as exc:
                    _failed(s, exc)
                    raise
                _answered(s, response.status_code, response.http_version)
                return response

        def close(self) -> None:
            self.inner.close()

    class AsyncTracingTransport(httpx.AsyncBaseTransport):
        """An async httpx transport that sends each request through ``inner`` inside a CLIENT span."""

        def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
            self.inner = inner

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            try:
                s = _client_span(request.method, str(request.url))
            except Exception as exc:
                internal_error("httpx transport (start)", exc)
                return await self.inner.handle_async_request(request)
            with s:
                _inject(request.headers.__setitem__, s)
                try:
                    response = await self.inner.handle_async_request(request)
                except BaseException as exc:
                    _failed(s, exc)
                    raise
                _answered(s, response.status_code, response.http_version)
                return response

        async def aclose(self) -> None:
            await self.inner.aclose()

    return TracingTransport, AsyncTracingTransport


def httpx_transport(transport: httpx.BaseTransport | None = None) -> httpx.BaseTransport:
    """A transport for ``httpx.Client(transport=...)``: each request a CLIENT span that propagates the trace.

    ``transport`` is the one that really sends (default ``httpx.HTTPTransport()``):
    pass your own for TLS, HTTP/2, retries or limits settings.
    """
    import httpx

    return _httpx_classes()[0](transport if transport is not None else httpx.HTTPTransport())  # type: ignore[call-arg]


def async_httpx_transport(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncBaseTransport:
    """A transport for ``httpx.AsyncClient(transport=...)``: each request a CLIENT span that propagates the trace.

    ``transport`` is the one that really sends (default ``httpx.AsyncHTTPTransport()``).
    """
    import httpx

    inner = transport if transport is not None else httpx.AsyncHTTPTransport()
    return _httpx_classes()[1](inner)  # type: ignore[call-arg]


# -- requests ----------------------------------------------------------------------------------


class TracedAdapter:
    """A requests transport adapter that sends through ``adapter`` inside a CLIENT span.

    ``session.mount("https://", TracedAdapter(HTTPAdapter(max_retries=3)))``;
    without an argument it wraps a default ``requests.adapters.HTTPAdapter``.
    Other attributes are the wrapped adapter's.
    """

    def __init__(self, adapter: Any = None) -> None:
        if adapter is None:
            import requests.adapters

            adapter = requests.adapters.HTTPAdapter()
        if not callable(getattr(adapter, "send", None)):
            raise TypeError(f"TracedAdapter wraps a requests adapter (with send()); got {type(adapter).__name__}")
        self.adapter = adapter

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        """Send a ``PreparedRequest`` as the wrapped adapter does, inside a CLIENT span."""
        try:
            s = _client_span(request.method, str(request.url))
        except Exception as exc:
            internal_error("requests adapter (start)", exc)
            return self.adapter.send(request, *args, **kwargs)
        with s:
            _inject(request.headers.__setitem__, s)
            try:
                response = self.adapter.send(request, *args, **kwargs)
            except BaseException as exc:
                _failed(s, exc)
                raise
            raw_version = getattr(getattr(response, "raw", None), "version", None)
            version = {10: "HTTP/1.0", 11: "HTTP/1.1", 20: "HTTP/2"}.get(raw_version) if raw_version else None
            _answered(s, getattr(response, "status_code", None), version)
            return response

    def close(self) -> None:
        """Close the wrapped adapter."""
        self.adapter.close()

    def __getattr__(self, name: str) -> Any:
        if name == "adapter":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.adapter, name)

    def __repr__(self) -> str:
        return f"TracedAdapter({self.adapter!r})"


def trace_requests(session: Any = None) -> Any:
    """``session`` (a new ``requests.Session`` by default) with every mounted adapter traced; returns it.

    Adapters mounted later are not wrapped: mount ``TracedAdapter(adapter)``.
    Calling it twice wraps nothing twice.
    """
    if session is None:
        import requests

        session = requests.Session()
    adapters = getattr(session, "adapters", None)
    if not isinstance(adapters, dict):
        raise TypeError(f"trace_requests needs a requests.Session; got {type(session).__name__}")
    for prefix, adapter in list(adapters.items()):
        if not isinstance(adapter, TracedAdapter):
            adapters[prefix] = TracedAdapter(adapter)
    return session
