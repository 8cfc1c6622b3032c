"""W3C Trace Context: carry a trace across processes in ``traceparent`` / ``tracestate``.

    headers = autotrace.propagation.inject({})          # outgoing call
    parent = autotrace.propagation.extract(request_headers)  # incoming call
    with autotrace.span("handle", kind="server", parent=parent): ...

``extract`` follows https://www.w3.org/TR/trace-context/ exactly and never
raises: anything invalid gives None (start a new trace), an invalid
``tracestate`` is dropped while the ``traceparent`` stands.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TypeVar, overload

from ._errors import reraise_foreign
from .context import current_span_context, use_span
from .redaction import redact_url
from .spans import NonRecordingSpan, Span, SpanContext, SpanKind, StatusCode
from .tracer import internal_error, span

__all__ = [
    "ENV_TRACEPARENT",
    "ENV_TRACESTATE",
    "TRACEPARENT",
    "TRACESTATE",
    "attach",
    "extract",
    "extract_env",
    "format_traceparent",
    "inject",
    "inject_env",
    "inject_request",
    "parse_traceparent",
    "parse_tracestate",
    "traced_urlopen",
]

TRACEPARENT = "traceparent"
"""The W3C header carrying the trace id, parent span id and sampled flag."""
TRACESTATE = "tracestate"
"""The W3C header carrying vendors' own trace state beside ``traceparent``."""

H = TypeVar("H", bound=MutableMapping[str, str])

# version-traceid-parentid-flags, lower-case hex only; a future version may
# append fields after a dash (checked against the version below).
_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL)
# W3C tracestate keys: a simple key, or tenant@system (multi-tenant vendors).
_KEY_RE = re.compile(r"[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13}")
# Values: printable ASCII except ',' and '=', at most 256, not ending in a space.
_VALUE_RE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_MAX_TRACESTATE_ENTRIES = 32
_OWS = " \t"

Contextish = Span | NonRecordingSpan | SpanContext | None


# -- parsing --------------------------------------------------------------------------------


def parse_traceparent(value: str) -> SpanContext | None:
    """The remote SpanContext in a ``traceparent`` value, or None when it is invalid."""
    if not isinstance(value, str):
        return None
    match = _TRACEPARENT_RE.fullmatch(value.strip(_OWS))
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = match.groups()
    if version == "ff":
        return None  # forbidden by the spec
    if version == "00" and rest is not None:
        return None  # version 00 is exactly 55 characters
    trace_id = int(trace_hex, 16)
    span_id = int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    # The flags W3C defines: sampled (0x01) and, in Level 2, random trace id
    # (0x02). Other bits are ignored, so they are not sent on either.
    flags = int(flags_hex, 16)
    return SpanContext(trace_id, span_id, bool(flags & 0x01), True, "", bool(flags & 0x02))


def parse_tracestate(value: str | Iterable[str]) -> str:
    """The normalised ``tracestate`` (members joined by ``,``), or "" when it is invalid.

    Several header values are joined first, as HTTP does. Empty members are
    allowed and dropped; more than 32 members, a duplicate key, or one bad
    member make the whole tracestate invalid.
    """
    try:
        text = value if isinstance(value, str) else ",".join(value)
        members: list[str] = []
        seen: set[str] = set()
        for raw in text.split(","):
            member = raw.strip(_OWS)
            if not member:
                continue
            key, eq, val = member.partition("=")
            if not eq or not _KEY_RE.fullmatch(key) or not _VALUE_RE.fullmatch(val) or key in seen:
                return ""
            seen.add(key)
            members.append(member)
            if len(members) > _MAX_TRACESTATE_ENTRIES:
                return ""
        return ",".join(members)
    except Exception as error:
        reraise_foreign(error)
        return ""


def _header_values(headers: Any) -> tuple[list[str], list[str]]:
    """All ``traceparent`` and ``tracestate`` values in a carrier, matching names case-insensitively.

    A carrier is a mapping (dict, WSGI environ with ``HTTP_TRACEPARENT``), an
    ``email.message.Message`` / ``http.client.HTTPMessage``, or an iterable of
    (name, value) pairs (str or bytes, as in ASGI scopes).
    """
    parents: list[str] = []
    states: list[str] = []
    items_of = getattr(headers, "items", None)
    items: Iterable[Any] = items_of() if callable(items_of) else headers
    for item in items:
        try:
            name, val = item
        except (TypeError, ValueError):
            continue
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if not isinstance(name, str):
            continue
        if isinstance(val, bytes):
            val = val.decode("latin-1")
        if not isinstance(val, str):
            continue
        lower = name.lower()
        if lower in ("traceparent", "http_traceparent"):
            parents.append(val)
        elif lower in ("tracestate", "http_tracestate"):
            states.append(val)
    return parents, states


def extract(headers: Any) -> SpanContext | None:
    """The caller's span context from W3C headers, or None when absent or invalid.

    Header names match case-insensitively; dicts, lists of pairs,
    ``http.client``/``email.message`` header objects and WSGI environs all
    work. The result has ``is_remote=True`` and carries ``trace_state``; pass
    it as ``span(..., parent=...)`` or make it current with ``attach``.
    Never raises.
    """
    try:
        if headers is None:
            return None
        parents, states = _header_values(headers)
        if len(parents) != 1:
            return None  # none, or duplicated: the spec says start a new trace
        ctx = parse_traceparent(parents[0])
        if ctx is None:
            return None
        if states:
            trace_state = parse_tracestate(states)
            if trace_state:
                ctx = ctx._replace(trace_state=trace_state)
        return ctx
    except Exception as exc:
        internal_error("propagation.extract", exc)
        return None


# -- injecting ------------------------------------------------------------------------------


def format_traceparent(context: SpanContext) -> str:
    """The version-00 ``traceparent`` value for a span context (flags: sampled, random trace id)."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def _resolve(context: Contextish) -> SpanContext | None:
    if context is None:
        return current_span_context()
    if isinstance(context, SpanContext):
        return context
    return context.get_span_context()


def _set_header(carrier: MutableMapping[str, str], name: str, value: str) -> None:
    """Set ``name`` once, removing any other spelling of it first (no duplicates)."""
    for key in list(carrier.keys()):
        if isinstance(key, str) and key.lower() == name:
            del carrier[key]  # email.message.Message deletes every spelling at once
    carrier[name] = value


@overload
def inject(headers: None = None, context: Contextish = None) -> dict[str, str]: ...


@overload
def inject(headers: H, context: Contextish = None) -> H: ...


def inject(headers: MutableMapping[str, str] | None = None, context: Contextish = None) -> MutableMapping[str, str]:
    """Write ``traceparent`` (and ``tracestate`` when there is one) into ``headers``; return them.

    The context is the current span's unless ``context`` (a span or a
    SpanContext) is given. Outside any span nothing is written. The flags
    say sampled (``01``) or not, so the callee samples the same way, plus
    random trace id (``02``) for the traces started here and for the ones
    continued with that flag. Never raises.
    """
    if headers is None:
        headers = {}
    try:
        ctx = _resolve(context)
        if ctx is None or not ctx.is_valid:
            return headers
        _set_header(headers, TRACEPARENT, format_traceparent(ctx))
        if ctx.trace_state:
            _set_header(headers, TRACESTATE, ctx.trace_state)
    except Exception as exc:
        internal_error("propagation.inject", exc)
    return headers


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
            s.set_attribute("error.type", type(exc).__qualname__)
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


# httpx and requests (imported only when used); at the end: _outgoing uses the names above.
from ._outgoing import TracedAdapter, async_httpx_transport, httpx_transport, trace_requests  # noqa: E402

__all__ += ["TracedAdapter", "async_httpx_transport", "httpx_transport", "trace_requests"]
