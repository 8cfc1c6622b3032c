"""ASGI middleware: one SERVER span per request, continuing the caller's trace.

    from autotrace.asgi import TracingMiddleware
    app = TracingMiddleware(fastapi_app)         # any ASGI 3 app: FastAPI, Starlette, ...

Each HTTP request gets a span named ``{method} {route}`` once the framework
has matched a route (Starlette and FastAPI put it in ``scope["route"]``),
``{method}`` otherwise, with the HTTP semantic-convention attributes, the
caller's ``traceparent`` as parent, status ERROR on 5xx, on exceptions and when
the client goes away mid-response, and a ``traceparent`` response header
naming the span. The span is current while the app runs, so the handler's own
spans (in tasks and in ``asyncio.to_thread`` / Starlette's threadpool, which
copy the context) are its children. A streamed response keeps the span open
until its last chunk, recording the time to the first chunk and the chunk
count. ``lifespan`` passes through untouched, ``websocket`` too unless
``trace_websockets=True``. Tracing failures never reach the app or the server.
No dependency on Starlette: plain ASGI 3.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from . import tracer as _tracer
from ._limits import LIMITS
from ._urls import bounded, redact_path, redact_query
from .attributes import clean, safe_str
from .context import CURRENT, unsampled_context
from .propagation import TRACEPARENT, extract
from .redaction import redact_text
from .spans import NonRecordingSpan, Span, SpanKind, StatusCode, _UnsampledRoot
from .tracer import internal_error

__all__ = ["TracingMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"})
_TRACEPARENT_BYTES = TRACEPARENT.encode()
# Recorded header values are cut here: a hostile client may send kilobytes of User-Agent.
_MAX_HEADER_LENGTH = 512
# Our own names (OTLP.md: not gen_ai.*, the server span is not a model call), documented in the README.
TIME_TO_FIRST_CHUNK = "autotrace.response.time_to_first_chunk_s"
CHUNKS = "autotrace.response.chunks"
DISCONNECTED = "http.request.disconnected"


class TracingMiddleware:
    """Wrap an ASGI 3 app so every HTTP request is a SERVER span in the caller's trace.

    ``name`` fixes the span name (a string, or a function of the scope); by
    default it is ``{method} {route}``, or ``{method}`` when no route matched.
    Requests whose path is in ``excluded_paths`` (health checks) pass through
    untraced. ``propagate_response`` adds ``traceparent`` to the response
    headers. ``trace_websockets`` gives each WebSocket connection a span too.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str | Callable[[Scope], str] | None = None,
        excluded_paths: Iterable[str] = ("/health", "/ready"),
        propagate_response: bool = True,
        trace_websockets: bool = False,
    ) -> None:
        if not callable(app):
            raise TypeError(f"TracingMiddleware needs an ASGI application (a callable); got {type(app).__name__}")
        if name is not None and not isinstance(name, str) and not callable(name):
            raise TypeError(f"name must be a str or a function of the scope; got {type(name).__name__}")
        if isinstance(excluded_paths, str):
            raise TypeError("excluded_paths must be a collection of paths, not one string")
        self.app = app
        self.name = name
        self.excluded_paths = frozenset(excluded_paths)
        self.propagate_response = propagate_response
        self.trace_websockets = trace_websockets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request: _Request | None = None
        try:
            kind = scope["type"]
            if (kind == "http" or (kind == "websocket" and self.trace_websockets)) and (
                scope.get("path") not in self.excluded_paths
            ):
                request = _Request(self, scope, receive, send, kind == "websocket")
        except Exception as exc:
            internal_error("asgi middleware (start)", exc)
        if request is None:
            await self.app(scope, receive, send)
            return
        s = request.span
        if s.__class__ is not Span:  # not recording: current while the app runs, nothing to end
            token = CURRENT.set(s)
            try:
                await self.app(scope, request._receive, request._send)
            except BaseException as exc:
                request._fail(exc)
                raise
            finally:
                CURRENT.reset(token)
            return
        # Entered and left as a `with span()` block: current while the app runs, listed by
        # /inflight while open, and ended on the span's own inline path to the store and the
        # metrics (a handful of calls less per request than end()).
        s.__enter__()
        # Run here rather than in a method of the request: one coroutine less per request.
        try:
            await self.app(scope, request._receive, request._send)
        except BaseException as exc:
            request._fail(exc)
            raise
        finally:
            try:
                # The common end inline (one call less per request): a status below 500, nothing
                # streamed, no disconnect, limits that allow setting straight into the span's dict
                # (its slot, not the _attrs property: a call less; a dict only while the span is open).
                code = request.status
                attrs = s._attr_data
                if (
                    code is not None
                    and code < 500
                    and not request.streaming
                    and not request.disconnected
                    and not request.websocket
                    and attrs.__class__ is dict
                    and len(attrs) < LIMITS.max_attributes
                ):
                    attrs["http.response.status_code"] = code
                else:
                    request.finish()
            except Exception as exc:
                internal_error("asgi middleware (end)", exc)
            finally:  # ended and no longer current whatever a signal handler raised above
                s.__exit__(None, None, None)


class _Request:
    """One traced request or connection: its span and what was seen of the response."""

    __slots__ = (
        "chunks",
        "complete",
        "disconnected",
        "first_chunk",
        "fixed_name",
        "method",
        "middleware",
        "receive",
        "root_path",
        "scope",
        "send",
        "span",
        "status",
        "streaming",
        "websocket",
    )

    def __init__(
        self, middleware: TracingMiddleware, scope: Scope, receive: Receive, send: Send, websocket: bool
    ) -> None:
        self.middleware = middleware
        self.scope = scope
        self.receive = receive
        self.send = send
        self.websocket = websocket
        self.status: int | None = None
        self.chunks = 0
        self.first_chunk: int | None = None  # time_ns() when the first chunk was sent
        self.streaming = False
        self.complete = False
        self.disconnected = False
        self.root_path = scope.get("root_path") or ""
        # One pass over the headers, inline (this runs per request); only these four are
        # looked at, whatever else a client sends. The carrier list is made only when needed.
        carrier: list[tuple[bytes, bytes]] | None = None
        host = agent = b""
        for key, value in scope.get("headers") or ():
            if key == b"host":
                host = value
            elif key == b"user-agent":
                agent = value
            elif key == b"traceparent" or key == b"tracestate":
                if carrier is None:
                    carrier = []
                carrier.append((key, value))
        # (method, Host, User-Agent, scheme, HTTP version, the server's socket address when no Host)
        bases_key = (
            "WEBSOCKET" if websocket else scope.get("method"),
            host,
            agent,
            scope.get("scheme"),
            scope.get("http_version"),
            None if host else scope.get("server"),
        )
        known = _BASES.get(bases_key)
        if known is None:
            known = _base_attributes(*bases_key, websocket)
            if len(_BASES) >= _MAX_BASES:
                _BASES.clear()  # a flood of distinct clients only costs building them again
            _BASES[bases_key] = known
        method, base = known
        self.method = method
        name = middleware.name
        self.fixed_name = name is not None
        if name is None:
            span_name = method
        elif isinstance(name, str):
            span_name = name
        else:
            span_name = str(name(scope))
        # No (valid) traceparent: a new trace (parent None), whatever the server task has current.
        parent = extract(carrier) if carrier else None
        # Sampling first: an unsampled request (90% at the default rate) builds no attributes.
        started = _tracer.start(span_name, SpanKind.SERVER, _tracer._NO_ATTRS, parent)
        if started.__class__ is Span:
            # The request's own attributes on a copy of the shared ones (inline: this runs per request).
            attrs = base.copy()
            path = scope.get("path") or "/"
            # "/" has nothing to redact or cut: the common case skips the calls.
            attrs["url.path"] = path if path == "/" else redact_path(str(path))  # no token of the path reaches the span
            query = scope.get("query_string")
            if query:
                attrs["url.query"] = _query(query)
            client = scope.get("client")
            if client:
                address = client[0]
                attrs["client.address"] = address if address.__class__ is str else str(address)
            if LIMITS.max_attribute_length is not None or len(attrs) > LIMITS.max_attributes:
                attrs = clean(attrs, LIMITS)[0]  # limits configured below what is built here: apply them
            # The values are already str and int: the span takes the dict as its own, saving a
            # coercion per attribute (a third of the middleware's cost with span(attributes=...)).
            started._attr_data = attrs  # type: ignore[union-attr]
            self.span: Span | NonRecordingSpan = started  # type: ignore[assignment]
        else:
            self.span = _tracer._non_recording(parent, started)

    async def _receive(self) -> Message:
        message: Message = await self.receive()
        try:
            kind = message["type"]
            # The server also answers http.disconnect once the response is complete: not a failure then.
            # (A WebSocket client closing is how a connection normally ends: not one either.)
            if kind == "http.disconnect" and not self.complete:
                self._went_away()
        except Exception as exc:
            internal_error("asgi middleware (receive)", exc)
        return message

    def _send(self, message: Message) -> Awaitable[None]:
        # A plain function returning the awaitable: the response start and a response sent
        # whole (one body message) go straight to the server's send, no coroutine of ours
        # around them; only a streamed body is awaited here, to count what was really sent.
        try:
            kind = message["type"]
            if kind == "http.response.body":
                if self.first_chunk is None and not self.disconnected and not message.get("more_body", False):
                    # The whole body at once (or the end of an empty stream): nothing to time, and it
                    # completes the response. A send that fails with it reaches __call__ as the app's
                    # exception (recorded there, status ERROR).
                    if message.get("body"):
                        self.chunks += 1
                    self.complete = True
                    return self.send(message)
                return self._body(message)
            if kind == "http.response.start":
                return self.send(self._start(message))
            if kind == "websocket.accept":
                message = self._start(message)
            elif kind == "websocket.close":
                self.complete = True
        except Exception as exc:
            internal_error("asgi middleware (send)", exc)
        return self._other(message)

    async def _other(self, message: Message) -> None:
        """Send a message that is not a body chunk; a failing send is a client gone away."""
        try:
            await self.send(message)
        except OSError:
            # ASGI 2.4 servers raise OSError (or a subclass) on a send to a client that went away.
            if not self.complete:
                self._went_away()
            raise

    async def _body(self, message: Message) -> None:
        """Send one chunk of a streamed body, counted once sent (a chunk the client never got is not one)."""
        try:
            await self.send(message)
        except OSError:
            if not self.complete:
                self._went_away()
            raise
        if not self.disconnected:
            try:
                more = message.get("more_body", False)
                if message.get("body"):
                    self.chunks += 1
                    if self.first_chunk is None:
                        # On the span's clock: measured from its start, no clock read per request for it.
                        self.first_chunk = time.time_ns()
                        self.streaming = bool(more)
                if not more:
                    self.complete = True
            except Exception as exc:
                internal_error("asgi middleware (send)", exc)

    def _start(self, message: Message) -> Message:
        """Note the status and the route; add ``traceparent`` to the headers (in a new message)."""
        status = message.get("status")
        if isinstance(status, int):
            self.status = status
        scope = self.scope
        s = self.span
        # Not recording: no route to name it after (an unsampled request skips the lookup).
        if s.__class__ is Span and (matched := scope.get("route")) is not None:
            known = _ROUTES.get(id(matched))
            # The common case inline: the route seen before, limits that allow it
            # (the span's own dict read from its slot: the _attrs property is a call).
            if (
                known is not None
                and known[0] is matched
                and not self.fixed_name
                and known[1] == (scope.get("root_path") or "")
                and known[2] == self.root_path
                and (name := known[4].get(self.method)) is not None
                and (attrs := s._attr_data).__class__ is dict  # type: ignore[union-attr]
                and len(attrs) < LIMITS.max_attributes
                and LIMITS.max_attribute_length is None
            ):
                attrs["http.route"] = known[3]
                s._name = name  # type: ignore[union-attr]
            else:
                self._route()
        if not self.middleware.propagate_response:
            return message
        headers = message.get("headers") or ()
        if headers.__class__ is not list and headers.__class__ is not tuple:
            headers = list(headers)  # any other iterable is read once, here
        for key, _ in headers:
            if len(key) == 11 and key.lower() == _TRACEPARENT_BYTES:
                return message  # the app set its own
        if s.__class__ is Span:  # sampled: the ids as they are, no SpanContext built
            # The span id from its slot while open (the _span_id property, a call, decodes an ended span's).
            value = b"00-%032x-%016x-01" % (s._trace_id, s._sid or s._span_id)  # type: ignore[union-attr]
        else:
            # An unsampled new trace: its ids straight from its seed (no property, no import per call).
            ctx = unsampled_context(s._seed) if s.__class__ is _UnsampledRoot else s.get_span_context()  # type: ignore[union-attr]
            if not ctx.is_valid:
                return message
            value = b"00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, ctx.trace_flags)  # format_traceparent's
        # A new message and a new list: the app's are not changed.
        return {**message, "headers": [*headers, (_TRACEPARENT_BYTES, value)]}

    def _went_away(self) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        self.span.add_event(DISCONNECTED, {CHUNKS: self.chunks})

    def _route(self) -> None:
        """Name the span after the matched route (Starlette/FastAPI set ``scope["route"]`` while routing)."""
        scope = self.scope
        matched = scope.get("route")
        if matched is None:
            return
        root = scope.get("root_path") or ""
        # By id: route objects need not be hashable; the entry keeps the object, so its id stays its own.
        known = _ROUTES.get(id(matched))
        if known is None or known[0] is not matched or known[1] != root or known[2] != self.root_path:
            route = _route_template(matched, root, self.root_path)
            if route is None:
                return
            if len(_ROUTES) >= _MAX_ROUTES:
                _ROUTES.clear()  # routes are few; a flood of distinct ones only costs re-computing
            known = _ROUTES[id(matched)] = (matched, root, self.root_path, route, {})
        span = self.span
        if span.__class__ is not Span:
            return  # not recording: nothing to name
        route = known[3]
        _set(span, "http.route", route)  # type: ignore[arg-type]
        if not self.fixed_name:
            # The span name for each method, made once per route (methods are few: _OTHER stands for the rest).
            names = known[4]
            name = names.get(self.method)
            if name is None:
                name = names[self.method] = f"{self.method} {route}"
            span._name = name  # type: ignore[union-attr]  # a str: update_name's check done

    def _fail(self, exc: BaseException) -> None:
        try:
            self.span.record_exception(exc, escaped=True)
            cls = type(exc)
            module = cls.__module__
            qualname = cls.__qualname__
            # error.type: the fully qualified class name, as exception.type on the event.
            self.span.set_attribute("error.type", qualname if module == "builtins" else f"{module}.{qualname}")
            self.span.set_status(StatusCode.ERROR, redact_text(f"{qualname}: {safe_str(exc)}"))
        except Exception as error:
            internal_error("asgi middleware (exception)", error)

    def finish(self) -> None:
        """Write the status and the stream figures on the span (the caller ends it)."""
        s = self.span
        try:
            if s.__class__ is not Span or s._end is not None:  # type: ignore[union-attr]
                return  # not recording, or ended by the app itself
            if self.status is None and self.websocket is False:
                self._route()  # no response started (an exception before it): the route may still be known
            code = self.status
            if code is not None and not self.websocket:
                attrs = s._attrs  # type: ignore[union-attr]
                if attrs.__class__ is dict and len(attrs) < LIMITS.max_attributes:  # _set, inline
                    attrs["http.response.status_code"] = code
                else:
                    _set(s, "http.response.status_code", code)  # type: ignore[arg-type]
                if code >= 500 and s.status.code != StatusCode.ERROR:  # an exception's description is kept
                    if "error.type" not in s.attributes:
                        s.set_attribute("error.type", str(code))
                    s.set_status(StatusCode.ERROR, f"HTTP {code}")
            first = self.first_chunk
            if self.streaming and first is not None:
                s.set_attribute(TIME_TO_FIRST_CHUNK, max(0, first - s._start) / 1e9)  # type: ignore[union-attr]
                s.set_attribute(CHUNKS, self.chunks)
            if self.disconnected and not self.complete and s.status.code != StatusCode.ERROR:
                s.set_status(StatusCode.ERROR, "the client disconnected before the response was complete")
        except Exception as exc:
            internal_error("asgi middleware (end)", exc)


def _set(span: Span, key: str, value: str | int) -> None:
    """Set an attribute whose value is already clean (a str or an int the middleware made).

    Straight into the span's own dict when the limits allow it (a third of the
    cost of set_attribute, which coerces and checks each value); else through it.
    """
    attrs = span._attrs
    if (
        attrs.__class__ is dict
        and (key in attrs or len(attrs) < LIMITS.max_attributes)
        and (LIMITS.max_attribute_length is None or value.__class__ is int)
    ):
        attrs[key] = value
    else:
        span.set_attribute(key, value)


# id(route object) -> (route object, root_path now, root_path at the start, route template,
# {method: span name}).
_ROUTES: dict[int, tuple[Any, Any, str, str, dict[str, str]]] = {}
_MAX_ROUTES = 4096


def _route_template(matched: Any, root: Any, initial_root: str) -> str | None:
    """The full route template of a Starlette/FastAPI route object (its ``path``), or None."""
    route = getattr(matched, "path", None)
    if not isinstance(route, str) or not route:
        return None
    # Inside a Mount the route is relative to it; the mount prefix is what root_path grew by.
    if isinstance(root, str) and root.startswith(initial_root) and len(root) > len(initial_root):
        route = root[len(initial_root) :] + route
    return bounded(route)


# What is the same for every request of one client (method, Host, User-Agent, scheme, HTTP
# version) -> the attributes it gives: built once, copied per request (a dict copy is one C call).
_BASES: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}
_MAX_BASES = 512


def _query(query: Any) -> str:
    """``url.query`` from the raw query string: bounded, sensitive values replaced."""
    text = bounded(bytes(query).decode("latin-1"))
    # Without "=" no parameter has a value: nothing for redact_query to replace.
    return redact_query(text) if "=" in text else text


def _base_attributes(
    raw_method: Any, host: bytes, agent: bytes, scheme: Any, version: Any, server: Any, websocket: bool
) -> tuple[str, dict[str, Any]]:
    """The span-name method and the attributes shared by requests with these values."""
    attrs: dict[str, Any] = {}
    if websocket:
        method = "WEBSOCKET"  # not an HTTP method: the span name only
    else:
        raw = str(raw_method or "GET")
        method = raw.upper()
        if method not in _KNOWN_METHODS:
            attrs["http.request.method_original"] = bounded(raw, 32)
            method = "_OTHER"
        attrs["http.request.method"] = method
    if scheme:
        attrs["url.scheme"] = str(scheme)
    if version:
        attrs["network.protocol.version"] = str(version)
    if agent:
        attrs["user_agent.original"] = bounded(bytes(agent).decode("latin-1"), _MAX_HEADER_LENGTH)
    address, port = _host_port(bytes(host).decode("latin-1"), server, scheme)
    if address:
        attrs["server.address"] = address
    if port is not None:
        attrs["server.port"] = port
    return method, attrs


def _host_port(host: str, server: Any, scheme: Any) -> tuple[str, int | None]:
    """server.address/port from the Host header (what the client asked for), else the server's socket."""
    port_text = ""
    if host:
        if host.startswith("[") and "]" in host:  # [ipv6]:port
            inside, _, after = host[1:].partition("]")
            host, port_text = inside, after[1:]
        elif ":" in host:
            host, _, port_text = host.rpartition(":")
    elif server:
        host = str(server[0])
        port_text = str(server[1]) if len(server) > 1 and server[1] is not None else ""
    port: int | None = None
    if port_text.isdigit() and len(port_text) <= 5:
        port = int(port_text)
    elif scheme in ("http", "https", "ws", "wss"):
        port = 443 if scheme in ("https", "wss") else 80
    return bounded(host, 256), port
