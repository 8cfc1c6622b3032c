"""WSGI middleware: one SERVER span per request, continuing the caller's trace.

    from autotrace.wsgi import TracingMiddleware
    app = TracingMiddleware(bottle_app)          # any WSGI app

Each request gets a span named ``{method} {route}`` (the Bottle route once it
is known, a ``path_template`` match, or the path with its token-looking segments
replaced by ``REDACTED``) with the HTTP semantic-convention attributes,
a remote parent from ``traceparent``, status ERROR on 5xx and on exceptions,
and a ``traceparent`` response header naming the span. The span stays current
while the response body is produced, so streaming handlers are traced whole.
Tracing failures never reach the app or the server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import tracer as _tracer
from ._stacktrace import error_type
from .attributes import safe_str
from .context import CURRENT
from .propagation import TRACEPARENT, extract, format_traceparent
from .redaction import redact_path, redact_text
from .spans import INVALID_SPAN_CONTEXT, NonRecordingSpan, Span, SpanKind, StatusCode
from .tracer import internal_error

__all__ = ["TracingMiddleware"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

# What a request can make the span hold is bounded: a client sends up to 64 KB per
# header line, and 1,000 requests with 60 KB paths and agents grew a process by 180 MB.
MAX_PATH = 2048
"""Characters of the path kept in ``url.path`` and the span name; longer ones end in an ellipsis."""
MAX_HEADER = 512
"""Characters kept of a header-derived attribute (``user_agent.original``, ``server.address``)."""


def _bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


_KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"})


class TracingMiddleware:
    """Wrap a WSGI app so every request is a SERVER span in the caller's trace.

    ``name`` fixes the span name (a string, or a function of the environ);
    by default it is ``{method} {route or path}``. Requests whose path is in
    ``excluded_paths`` (health checks) pass through untraced.
    ``propagate_response`` adds ``traceparent`` to the response headers.

    ``path_template`` keeps secrets in paths out of the span: route patterns
    (``"/reset-password/<token>"``, ``"/users/{id}"``, ``"/files/<rest:path>"``)
    or a function of the path returning its template (or None). The first
    pattern that matches the whole path becomes the span name's route,
    ``http.route`` and ``url.path``. A path no template matches is recorded
    with ``redaction.redact_path``: token-looking segments (16+ characters with
    letters and digits, such as tokens, hex ids and UUIDs) and a segment after
    one naming a secret or one-time link (``/reset-password/x``,
    ``/verify/x``) become ``REDACTED``.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        name: str | Callable[[Environ], str] | None = None,
        excluded_paths: Iterable[str] = ("/health", "/ready"),
        propagate_response: bool = True,
        path_template: Callable[[str], str | None] | Iterable[str] | None = None,
    ) -> None:
        if not callable(app):
            raise TypeError(f"TracingMiddleware needs a WSGI application (a callable); got {type(app).__name__}")
        if name is not None and not isinstance(name, str) and not callable(name):
            raise TypeError(f"name must be a str or a function of the environ; got {type(name).__name__}")
        if isinstance(excluded_paths, str):
            raise TypeError("excluded_paths must be a collection of paths, not one string")
        self.app = app
        self.name = name
        self.excluded_paths = frozenset(excluded_paths)
        self.propagate_response = propagate_response
        self._template = _path_templates(path_template)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            if environ.get("PATH_INFO") in self.excluded_paths:
                return self.app(environ, start_response)
            request = _Request(self, environ, start_response)
        except Exception as exc:
            internal_error("wsgi middleware (start)", exc)
            return self.app(environ, start_response)
        return request.run()


class _Request:
    """One traced request: the span, the status seen, and the body wrapper."""

    __slots__ = ("environ", "fixed_name", "method", "middleware", "span", "start_response", "status")

    def __init__(self, middleware: TracingMiddleware, environ: Environ, start_response: StartResponse) -> None:
        self.middleware = middleware
        self.environ = environ
        self.start_response = start_response
        self.status: int | None = None
        raw_method = str(environ.get("REQUEST_METHOD") or "GET")
        method = raw_method.upper()
        attrs: dict[str, Any] = {}
        if method not in _KNOWN_METHODS:
            attrs["http.request.method_original"] = _bounded(raw_method, MAX_HEADER)
            method = "_OTHER"
        self.method = method
        path = _bounded((environ.get("SCRIPT_NAME") or "") + (environ.get("PATH_INFO") or "") or "/", MAX_PATH)
        path, route = _shown_path(middleware._template, path)  # no token of the path reaches the span
        attrs.update(_request_attributes(environ, method, path))
        if route is not None:
            attrs["http.route"] = route
        name = middleware.name
        self.fixed_name = name is not None
        if name is None:
            span_name = f"{method} {path}"
        elif isinstance(name, str):
            span_name = name
        else:
            span_name = str(name(environ))
        # Only the two headers, not the whole environ, are handed to extract().
        # No (valid) traceparent: a new trace, not a child of whatever the server thread has current.
        carrier = [(k, environ[k]) for k in ("HTTP_TRACEPARENT", "HTTP_TRACESTATE") if k in environ]
        parent = (extract(carrier) if carrier else None) or INVALID_SPAN_CONTEXT
        self.span: Span | NonRecordingSpan = _tracer.span(
            span_name, kind=SpanKind.SERVER, attributes=attrs, parent=parent
        )

    def run(self) -> Iterable[bytes]:
        s = self.span
        token = CURRENT.set(s)
        try:
            result = self.middleware.app(self.environ, self._start_response)
        except BaseException as exc:
            self._fail(exc)
            self.finish()
            raise
        finally:
            CURRENT.reset(token)
        self._route()
        # A list keeps its length visible, so servers still set Content-Length from it.
        return _SizedBody(self, result) if isinstance(result, (list, tuple)) else _Body(self, result)

    def _start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        try:
            self.status = int(str(status).split(None, 1)[0])
            ctx = self.span.get_span_context()
            if (
                self.middleware.propagate_response
                and ctx.is_valid
                and not any(k.lower() == TRACEPARENT for k, _ in headers)
            ):
                headers = [*headers, (TRACEPARENT, format_traceparent(ctx))]
        except Exception as exc:
            internal_error("wsgi middleware (start_response)", exc)
        if exc_info is None:
            return self.start_response(status, headers)
        return self.start_response(status, headers, exc_info)

    def _route(self) -> None:
        """Name the span after the Bottle route once the app has matched one."""
        try:
            route = getattr(self.environ.get("bottle.route"), "rule", None)
            if isinstance(route, str) and route:
                self.span.set_attribute("http.route", route)
                if not self.fixed_name:
                    self.span.update_name(f"{self.method} {route}")
        except Exception as exc:
            internal_error("wsgi middleware (route)", exc)

    def _fail(self, exc: BaseException) -> None:
        try:
            self.span.record_exception(exc, escaped=True)
            # error.type: the fully qualified class name, as exception.type on the event.
            self.span.set_attribute("error.type", error_type(exc))
            self.span.set_status(StatusCode.ERROR, redact_text(f"{type(exc).__qualname__}: {safe_str(exc)}"))
        except Exception as error:
            internal_error("wsgi middleware (exception)", error)

    def finish(self) -> None:
        """Write the status and end the span (idempotent)."""
        s = self.span
        try:
            if not s.is_recording:
                return
            self._route()
            code = self.status
            if code is not None:
                s.set_attribute("http.response.status_code", code)
                if code >= 500:
                    if "error.type" not in s.attributes:
                        s.set_attribute("error.type", str(code))
                    s.set_status(StatusCode.ERROR, f"HTTP {code}")
            s.end()
        except Exception as exc:
            internal_error("wsgi middleware (end)", exc)


class _Body:
    """The app's response iterable, with the span current around each item and ended at the end.

    The span ends when the body is exhausted or closed, whichever comes first
    (a server must call ``close()``; ending at exhaustion as well keeps the
    span when a caller forgets to).
    """

    __slots__ = ("iterator", "request", "result")

    def __init__(self, request: _Request, result: Iterable[bytes]) -> None:
        self.request = request
        self.result = result
        self.iterator: Iterator[bytes] | None = None

    def __iter__(self) -> _Body:
        return self

    def __next__(self) -> bytes:
        request = self.request
        token = CURRENT.set(request.span)
        try:
            if self.iterator is None:
                self.iterator = iter(self.result)
            return next(self.iterator)
        except StopIteration:
            request.finish()
            raise
        except BaseException as exc:
            request._fail(exc)
            request.finish()
            raise
        finally:
            CURRENT.reset(token)

    def close(self) -> None:
        request = self.request
        close = getattr(self.result, "close", None)
        try:
            if close is not None:
                token = CURRENT.set(request.span)
                try:
                    close()
                except BaseException as exc:
                    request._fail(exc)
                    raise
                finally:
                    CURRENT.reset(token)
        finally:
            request.finish()


class _SizedBody(_Body):
    """A _Body over a list or tuple, with its length (wsgiref sets Content-Length from it)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self.result)  # type: ignore[arg-type]


_PATH_PARAM = re.compile(r"<(?P<a>[^<>/]*)>|\{(?P<b>[^{}/]*)\}")


def _path_templates(
    templates: Callable[[str], str | None] | Iterable[str] | None,
) -> Callable[[str], str | None] | None:
    """A function from a path to its template, from route patterns or a function (checked here, once)."""
    if templates is None or callable(templates):
        return templates
    if isinstance(templates, str):
        raise TypeError("path_template must be a function or a collection of route patterns, not one string")
    compiled = []
    for pattern in templates:
        if not isinstance(pattern, str) or not pattern.startswith("/"):
            raise ValueError(f"path_template patterns must be paths starting with '/'; got {pattern!r}")
        regex, pos = [], 0
        for match in _PATH_PARAM.finditer(pattern):
            regex.append(re.escape(pattern[pos : match.start()]))
            spec = match.group("a") if match.group("a") is not None else match.group("b")
            regex.append(".+" if spec.partition(":")[2].strip() == "path" else "[^/]+")
            pos = match.end()
        regex.append(re.escape(pattern[pos:]))
        compiled.append((re.compile("".join(regex)), pattern))

    def template(path: str) -> str | None:
        for regex, pattern in compiled:
            if regex.fullmatch(path):
                return pattern
        return None

    return template


def _shown_path(template: Callable[[str], str | None] | None, path: str) -> tuple[str, str | None]:
    """(url.path, http.route or None): the path's template when one matches, else the redacted path."""
    if template is not None:
        try:
            route = template(path)
        except Exception as exc:
            internal_error("wsgi middleware (path_template)", exc)
            route = None
        if isinstance(route, str) and route:
            return route, route
    return redact_path(path), None


def _request_attributes(environ: Environ, method: str, path: str) -> dict[str, Any]:
    """HTTP server semantic-convention attributes known before the app runs."""
    attrs: dict[str, Any] = {"http.request.method": method, "url.path": path}
    scheme = environ.get("wsgi.url_scheme")
    if scheme:
        attrs["url.scheme"] = scheme
    agent = environ.get("HTTP_USER_AGENT")
    if agent:
        attrs["user_agent.original"] = _bounded(str(agent), MAX_HEADER)
    host, port = _host_port(environ, scheme)
    if host:
        attrs["server.address"] = _bounded(host, MAX_HEADER)
    if port is not None:
        attrs["server.port"] = port
    client = environ.get("REMOTE_ADDR")
    if client:
        attrs["client.address"] = client
    protocol = str(environ.get("SERVER_PROTOCOL") or "")
    if protocol.upper().startswith("HTTP/"):
        attrs["network.protocol.version"] = protocol[5:]
    # url.query is left out on purpose: query strings often carry tokens.
    return attrs


def _host_port(environ: Environ, scheme: str | None) -> tuple[str, int | None]:
    """server.address/port from the Host header (what the client asked for), else the server's."""
    host = str(environ.get("HTTP_HOST") or "")
    port_text = ""
    if host:
        if host.startswith("[") and "]" in host:  # [ipv6]:port
            inside, _, after = host[1:].partition("]")
            host, port_text = inside, after[1:]
        elif ":" in host:
            host, _, port_text = host.rpartition(":")
    else:
        host = str(environ.get("SERVER_NAME") or "")
        port_text = str(environ.get("SERVER_PORT") or "")
    port: int | None = None
    if port_text.isdigit():
        port = int(port_text)
    elif scheme in ("http", "https"):
        port = 80 if scheme == "http" else 443
    return host, port
