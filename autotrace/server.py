"""The /traces server: a Bottle app over the trace store, and ``start_in_background`` to run it.

    import autotrace.server

    handle = autotrace.server.start_in_background(port=8080)   # from inside your process
    # curl http://127.0.0.1:8080/traces?limit=1
    handle.stop()

``create_app()`` is a plain WSGI application, so gunicorn or waitress can host it
too (``gunicorn 'autotrace.server:create_app()'``). Every answer is JSON except
the viewer page at ``/``; bad input is a 400 that names the parameter, never a 500.
Requests to routes you add to it are traced (one SERVER span each, see
``autotrace.wsgi.TracingMiddleware``); the server's own routes, requests to no
route and requests the checks refuse are not. The checks themselves (token,
Host, browser requests) are ``_guard``'s; the threaded server is ``_serving``'s.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import logging
import os
import re
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import bottle

from . import _inflight, _otlp_json, _receiver, _serving, _summary
from . import metrics as _metrics_api
from ._env import parse_bool
from ._guard import _COMMON_HEADERS, _JSON, _dumps, _refuse_browser_clear, _set_headers
from ._guard import LOOPBACK_HOSTS as LOOPBACK_HOSTS
from ._guard import TOKEN_ENV as TOKEN_ENV
from ._guard import Guard as Guard
from ._guard import Problem as Problem
from ._guard import is_loopback as is_loopback
from ._guard import loopback_hosts as loopback_hosts
from ._serving import DEFAULT_BACKLOG as DEFAULT_BACKLOG
from ._serving import DEFAULT_IDLE_TIMEOUT as DEFAULT_IDLE_TIMEOUT
from ._serving import DEFAULT_MAX_CONNECTIONS as DEFAULT_MAX_CONNECTIONS
from ._serving import DEFAULT_REQUEST_TIMEOUT as DEFAULT_REQUEST_TIMEOUT
from ._serving import ServerHandle as ServerHandle
from ._serving import WSGIApp as WSGIApp
from .store import TraceStore
from .tracer import get_config, get_trace_store, internal_error, resource_attributes
from .wsgi import TracingMiddleware

__all__ = [
    "Guard",
    "Problem",
    "ServerHandle",
    "create_app",
    "install",
    "is_loopback",
    "loopback_hosts",
    "page_policy",
    "start_in_background",
]

logger = logging.getLogger("autotrace")


_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only (str.isdigit() also accepts "²"); 18 digits fit any store
_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")
_TRACES_PARAMS = ("limit", "clear", "trace_id")

# The viewer is one self-contained file: its script and style are inline, and it
# only talks to this origin. script-src and style-src allow exactly the inline
# blocks the page ships, by their sha256 (computed when the page is read), not
# 'unsafe-inline': a script injected into the page would not run.
_PAGE_POLICY = (
    "default-src 'self'; script-src {script}; style-src {style}; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)
_INLINE_STYLE = re.compile(r"<style>(.*?)</style>", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
# The server's own routes: TracingMiddleware leaves them out (the viewer polls /traces).
INFLIGHT_LIMIT = 1000  # roots GET /inflight lists by default (the oldest); ?limit= up to INFLIGHT_MAX
INFLIGHT_MAX = 100_000
OWN_PATHS = ("/", "/traces", "/traces/summary", "/stats", "/metrics", "/inflight", "/health", "/ready", "/v1/traces")
_OWN_PREFIX = "/traces/"  # GET /traces/{trace_id}: not traced either

_PLACEHOLDER_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>autotrace</title></head>
<body>
<h1>autotrace</h1>
<p>The trace viewer is not installed in this build. The traces are at
<a href="traces">/traces</a> (OTLP/JSON; <code>?limit=N</code>, <code>?clear=true</code>).</p>
</body>
</html>
"""


def _single(name: str) -> str | None:
    """The one value of query parameter ``name``, None when absent; 400 when repeated."""
    values = bottle.request.query.getall(name)
    if not values:
        return None
    if len(values) > 1:
        raise Problem(400, f"query parameter {name!r} is given {len(values)} times; give it once")
    value: str = values[0]
    return value


def parse_limit(text: str | None) -> int | None:
    """``limit`` as a non-negative integer, None when absent; ValueError naming it otherwise."""
    if text is None:
        return None
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"limit must be a non-negative integer (at most 18 digits); got {text[:40]!r}")
    return int(text)


def parse_clear(text: str | None) -> bool:
    """``clear`` as a bool (the words of the environment variables, any case), False when absent."""
    if text is None:
        return False
    return parse_bool("clear", text)


def parse_trace_id(text: str | None) -> str | None:
    """``trace_id`` as 32 lower-case hex digits (not all zero), None when absent."""
    if text is None:
        return None
    if not _TRACE_ID.fullmatch(text) or int(text, 16) == 0:
        raise ValueError(f"trace_id must be 32 hex digits, not all zero; got {text[:40]!r}")
    return text.lower()


def _etag_matches(header: str, etag: str) -> bool:
    """True when an If-None-Match header names ``etag`` (weak comparison, as RFC 9110 asks) or is ``*``."""
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def _error_page(err: bottle.HTTPError) -> bytes:
    """Errors raised by Bottle itself (no route, wrong method, a crash), answered as JSON."""
    status = err.status_code
    body = err.body if isinstance(err.body, str) else ""
    if status >= 500:
        internal_error("the /traces server", err.exception)
        message = "internal error; see the server log"
    elif status == 404:
        message = f"not found: {bottle.request.path[:200]}"
    elif status == 405:
        allowed = bottle.response.get_header("Allow", "")
        message = f"method {bottle.request.method} not allowed on {bottle.request.path[:200]}; use {allowed}"
    else:
        message = body or bottle.HTTP_CODES.get(status, "error")
    bottle.response.content_type = _JSON
    _set_headers(_COMMON_HEADERS)
    return _dumps({"error": message, "status": status})


def _csp_sources(blocks: list[str]) -> str:
    """A CSP source list allowing exactly these inline blocks by hash ('none' when there are none)."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(b.encode("utf-8")).digest()).decode("ascii") + "'" for b in blocks
    ]
    return " ".join(hashes) or "'none'"


def page_policy(html: str) -> str:
    """The Content-Security-Policy for ``html``: its inline <script> and <style> blocks allowed by sha256."""
    html = _COMMENT.sub("", html)
    return _PAGE_POLICY.format(
        script=_csp_sources(_INLINE_SCRIPT.findall(html)), style=_csp_sources(_INLINE_STYLE.findall(html))
    )


@functools.lru_cache(maxsize=1)
def _viewer_page() -> tuple[str, dict[str, str]]:
    """The viewer page (read once) and its headers, with the CSP hashes of its inline blocks."""
    html = _PLACEHOLDER_PAGE
    try:
        resource = importlib.resources.files("autotrace").joinpath("viewer.html")
        if resource.is_file():
            html = resource.read_text(encoding="utf-8")
    except Exception as exc:
        internal_error("reading viewer.html", exc)
    return html, {"Content-Security-Policy": page_policy(html), "X-Frame-Options": "DENY"}


DEFAULT_MAX_ANSWER_SPANS = 50_000
"""Spans one GET /traces answer holds at most (whole traces, newest first); the rest wait for the next read."""
DEFAULT_MAX_CONCURRENT_ENCODES = 2
"""GET /traces answers being sent at once; one more waits DEFAULT_ENCODE_WAIT seconds, then is a 503."""
DEFAULT_ENCODE_WAIT = 10.0
_OMITTED = "X-Autotrace-Omitted-Traces"  # traces left out of an answer by max_answer_spans
_CHUNK_SPANS = 256  # spans encoded per piece of a streamed answer (about 85 KB of JSON at 330 bytes each)


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


def _within(traces: list[list[Any]], max_spans: int) -> int:
    """How many of the newest ``traces`` fit in ``max_spans`` spans (at least one, when there is one)."""
    room = max_spans
    count = 0
    for trace in reversed(traces):
        room -= len(trace)
        if room < 0 and count:
            break
        count += 1
    return count


def _etag(traces: list[list[Any]], resource: dict[str, Any], extra: str = "") -> str:
    """An ETag for an answer made of ``traces``: from each trace's id, span count and last span, not the body.

    Ended spans do not change, so a trace with the same id, count and last
    span holds the same spans; O(traces), no encoding.
    """
    key = (
        tuple((t[0]._trace_id, len(t), t[-1]._span_id) for t in traces if t),
        repr(sorted(resource.items())),
        extra,
    )
    return f'"{hash(key) & 0xFFFFFFFFFFFFFFFF:016x}-{len(traces)}"'


class _Answer:
    """A GET /traces answer as one OTLP/JSON ExportTraceServiceRequest, encoded piece by piece as it is sent.

    A reader costs a list of references to the spans it sends plus one piece
    (``_CHUNK_SPANS`` spans) at a time, not the whole document three times
    over; between pieces the server thread writes to the socket, so other
    threads get the GIL. ``close()`` (the server calls it, sent or not)
    gives back the encode slot.
    """

    def __init__(self, traces: list[list[Any]], resource: dict[str, Any], release: Callable[[], None]) -> None:
        self._traces = traces
        self._resource = resource
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        return self._pieces()

    def _pieces(self) -> Iterator[bytes]:
        # Received spans keep their own resource and scope (otlp.Origin): one resourceSpans entry each.
        yield from _otlp_json.stream([t for t in self._traces if t], self._resource, _CHUNK_SPANS)

    def close(self) -> None:
        """Give back the encode slot (once)."""
        release, self._release = self._release, None
        self._traces = []
        if release is not None:
            release()


def _sample_rate() -> float | None:
    """The share of new traces recorded, as configured; None under a custom sampler with no fixed rate."""
    config = get_config()
    if config is None or not config.enabled:
        return 0.0 if config is not None else None
    if config.sampler is None:
        return float(config.sample_rate)
    bound = getattr(config.sampler, "root_bound", None)
    return bound / float(1 << 64) if isinstance(bound, int) else None


def install(
    app: bottle.Bottle,
    store: TraceStore | None = None,
    *,
    token: str | None = None,
    allowed_hosts: Iterable[str] | None = None,
    guard: Guard | None = None,
    max_answer_spans: int = DEFAULT_MAX_ANSWER_SPANS,
    max_concurrent_encodes: int = DEFAULT_MAX_CONCURRENT_ENCODES,
    encode_wait: float = DEFAULT_ENCODE_WAIT,
    max_receive_bytes: int = _receiver.DEFAULT_MAX_RECEIVE_BYTES,
) -> bottle.Bottle:
    """Add the server's routes (/traces..., /stats, /metrics, /inflight, the viewer...) and JSON errors to a Bottle app.

    ``create_app()`` is this on a fresh app. Pass ``guard`` (a ``Guard``) instead
    of ``token`` to protect routes of your own with the same token.
    ``max_receive_bytes`` bounds an OTLP request body, before and after gzip.
    Returns the app.
    """
    _positive("max_receive_bytes", max_receive_bytes)
    _positive("max_answer_spans", max_answer_spans)
    _positive("max_concurrent_encodes", max_concurrent_encodes)
    if isinstance(encode_wait, bool) or not isinstance(encode_wait, (int, float)) or not 0 <= encode_wait < 1e6:
        raise ValueError(f"encode_wait must be a number of seconds >= 0; got {encode_wait!r}")
    if guard is None:
        guard = Guard(token, allowed_hosts=allowed_hosts)
    elif token is not None or allowed_hosts is not None:
        raise ValueError("give either guard or token/allowed_hosts, not both")

    def current_store() -> TraceStore:
        # Looked up per request: configure() replaces the global store.
        return store if store is not None else get_trace_store()

    app.default_error_handler = _error_page  # instance attribute: wins over Bottle's HTML pages

    encodes = threading.BoundedSemaphore(max_concurrent_encodes)

    def traces() -> Any:
        """The stored traces as OTLP/JSON: ?limit=N, ?clear=true, ?trace_id=<32 hex>; ETag and 304 unless clearing."""
        unknown = sorted(set(bottle.request.query.keys()) - set(_TRACES_PARAMS))
        if unknown:
            raise Problem(
                400, f"unknown query parameter {unknown[0][:40]!r}; /traces takes {', '.join(_TRACES_PARAMS)}"
            )
        try:
            limit = parse_limit(_single("limit"))
            clear = parse_clear(_single("clear"))
            trace_id = parse_trace_id(_single("trace_id"))
        except ValueError as exc:
            raise Problem(400, str(exc))
        environ = bottle.request.environ
        if clear and bottle.request.method == "HEAD":
            clear = False  # HEAD sends no body: clearing would lose the traces
        if clear:
            _refuse_browser_clear(environ)
        if trace_id is not None and (limit is not None or clear):
            raise Problem(400, "trace_id cannot be combined with limit or clear")
        # At most max_concurrent_encodes readers select and send at once: each holds references
        # to the spans it answers with. One past the cap waits its turn (a collector and the
        # viewer polling together is normal); one still waiting after encode_wait gets the 503.
        if not (encodes.acquire(timeout=encode_wait) if encode_wait > 0 else encodes.acquire(blocking=False)):
            raise Problem(
                503,
                f"{max_concurrent_encodes} /traces answers are being sent already; try again shortly",
                {"Retry-After": "1"},
            )
        try:
            return _traces_answer(current_store(), limit, clear, trace_id, environ)
        except BaseException:
            encodes.release()
            raise

    def _traces_answer(
        s: TraceStore, limit: int | None, clear: bool, trace_id: str | None, environ: dict[str, Any]
    ) -> Any:
        """The answer of GET /traces, with an encode slot held: a 304 gives it back, an _Answer when sent."""
        if trace_id is not None:
            spans = s.get_trace(trace_id)
            if spans is None:
                raise Problem(404, f"no trace with trace_id {trace_id}")  # the caller gives the slot back
            selected = [spans]
        else:
            selected = s.traces(limit)
        total = len(selected)
        if trace_id is None:
            # At most max_answer_spans spans (whole traces, the newest first): the rest are
            # left for the next read, and the answer says how many (see _OMITTED).
            count = _within(selected, max_answer_spans)
            selected = selected[total - count :]
            if count < total:
                bottle.response.set_header(_OMITTED, str(total - count))
        resource = resource_attributes()
        if clear:
            # take() removes exactly the traces it returns, under the store's lock, so spans
            # that arrive while this answer is sent stay for the next read. Under the cap
            # everything asked for goes; past it the newest that fit, and the rest stay.
            selected = s.take(limit if len(selected) == total else len(selected))
        else:
            # The viewer polls every 3 s: an unchanged answer is a bodiless 304 for its If-None-Match.
            # The tag comes from what was selected (ids and span counts), not from a hash of the body.
            etag = _etag(selected, resource)
            bottle.response.set_header("ETag", etag)
            if _etag_matches(environ.get("HTTP_IF_NONE_MATCH", ""), etag):
                encodes.release()
                bottle.response.status = 304
                return b""
        bottle.response.content_type = _JSON
        return _Answer(selected, resource, encodes.release)

    def delete_traces() -> bytes:
        """Empty the store; answers how many traces were removed."""
        if bottle.request.query.keys():
            raise Problem(400, "DELETE /traces takes no query parameters")
        bottle.response.content_type = _JSON
        return _dumps({"cleared": current_store().clear()})

    def health() -> bytes:
        """Liveness: the process answers."""
        bottle.response.content_type = _JSON
        return _dumps({"status": "ok"})

    def ready() -> bytes:
        """Readiness, with the store's counters and the OTLP receiver's (``received``)."""
        bottle.response.content_type = _JSON
        return _dumps(
            {"status": "ready", **current_store().stats(), "sample_rate": _sample_rate(), "received": _receiver.stats()}
        )

    def page() -> str:
        """The trace viewer (a placeholder page when viewer.html is not installed)."""
        html, headers = _viewer_page()
        bottle.response.content_type = "text/html; charset=utf-8"
        _set_headers(headers)
        return html

    summaries = _summary.SummaryCache()

    def _cached(selected: list[list[Any]], extra: str) -> tuple[dict[str, Any], bool]:
        """The resource, with the ETag header set; True when the client's If-None-Match names it (a 304)."""
        resource = resource_attributes()
        etag = _etag(selected, resource, extra)
        bottle.response.set_header("ETag", etag)
        if _etag_matches(bottle.request.environ.get("HTTP_IF_NONE_MATCH", ""), etag):
            bottle.response.status = 304
            return resource, True
        return resource, False

    def traces_summary() -> Any:
        """One small record per stored trace, newest first; ?limit and the filters of _summary.parse_filters."""
        query = bottle.request.query
        unknown = sorted(set(query.keys()) - set(_summary.SUMMARY_PARAMS))
        if unknown:
            raise Problem(
                400,
                f"unknown query parameter {unknown[0][:40]!r}; "
                f"/traces/summary takes {', '.join(_summary.SUMMARY_PARAMS)}",
            )
        try:
            limit = parse_limit(_single("limit"))
            filters = _summary.parse_filters(
                _single("q"),
                query.getall("attr"),
                _single("min_duration"),
                _single("max_duration"),
                _single("status"),
                _single("service"),
            )
        except ValueError as exc:
            raise Problem(400, str(exc))
        stored = current_store().traces()
        resource, unchanged = _cached(stored, "summary?" + repr((limit, filters)))
        if unchanged:
            return b""
        made = summaries.summaries(stored, str(resource.get("service.name", "unknown")))
        chosen, matched = _summary.select(made, filters, limit)
        bottle.response.content_type = _JSON
        return _dumps({"traces": [t.record() for t in chosen], "matched": matched, "stored": len(made)})

    def one_trace(trace_id: str) -> Any:
        """One stored trace as OTLP/JSON; 404 when the store does not hold it."""
        if bottle.request.query.keys():
            raise Problem(400, "GET /traces/{trace_id} takes no query parameters")
        try:
            wanted = parse_trace_id(trace_id)
        except ValueError as exc:
            raise Problem(400, str(exc))
        spans = current_store().get_trace(str(wanted))
        if spans is None:
            raise Problem(404, f"no trace with trace_id {wanted}")
        resource, unchanged = _cached([spans], "one")
        if unchanged:
            return b""
        if not (encodes.acquire(timeout=encode_wait) if encode_wait > 0 else encodes.acquire(blocking=False)):
            raise Problem(503, "too many trace answers are being sent already; try again shortly", {"Retry-After": "1"})
        bottle.response.content_type = _JSON
        return _Answer([spans], resource, encodes.release)

    def stats() -> Any:
        """Per span name: count, errors, p50/p95/p99/max over every call; self time over the stored traces."""
        if bottle.request.query.keys():
            raise Problem(400, "GET /stats takes no query parameters")
        stored = current_store().traces()
        every = _metrics_api.stats_by_name()
        # The ETag covers the metrics too: they change with every call, stored or not.
        _, unchanged = _cached(stored, "stats" + repr(sorted((k, r["count"]) for k, r in every.items())))
        if unchanged:
            return b""
        bottle.response.content_type = _JSON
        return _dumps(_summary.merge_stats(_summary.span_stats(stored), every))

    def metrics() -> Any:
        """Every metric in the Prometheus text exposition format 0.0.4."""
        if bottle.request.query.keys():
            raise Problem(400, "GET /metrics takes no query parameters")
        bottle.response.content_type = "text/plain; version=0.0.4; charset=utf-8"
        return _metrics_api.prometheus_text().encode("utf-8")

    def inflight() -> Any:
        """The local root spans still open, oldest first; ?min_age=SECONDS keeps older ones, ?limit=N the N oldest."""
        query = bottle.request.query
        unknown = sorted(set(query.keys()) - {"min_age", "limit"})
        if unknown:
            raise Problem(400, f"unknown query parameter {unknown[0][:40]!r}; /inflight takes min_age and limit")
        limit = INFLIGHT_LIMIT
        text = _single("limit")
        if text is not None:
            if not (text.isascii() and text.isdigit() and 1 <= len(text) <= 6 and 1 <= int(text) <= INFLIGHT_MAX):
                raise Problem(400, f"limit must be a whole number from 1 to {INFLIGHT_MAX}; got {text[:40]!r}")
            limit = int(text)
        min_age = 0.0
        text = _single("min_age")
        if text is not None:
            try:
                min_age = float(text)
                if not min_age >= 0 or min_age == float("inf"):
                    raise ValueError
            except ValueError:
                raise Problem(400, f"min_age must be a number of seconds >= 0; got {text[:40]!r}") from None
        shown, count = _inflight.oldest(min_age, limit)
        bottle.response.content_type = _JSON
        # Every open root is counted; the answer lists the oldest `limit`, and only their chains
        # are followed (leaked roots by the thousand would otherwise make it megabytes).
        return _dumps(
            {
                "inflight": shown,
                "count": count,
                "truncated": count > limit,
                "min_age": min_age,
            }
        )

    def receive_traces() -> bottle.HTTPResponse:
        """The OTLP/HTTP trace receiver: an ExportTraceServiceRequest (JSON or protobuf, gzip or not) into the store."""
        environ = bottle.request.environ
        origin = environ.get("HTTP_ORIGIN")
        if (
            origin is not None
            and urllib.parse.urlsplit(origin.strip()).netloc.lower() != (environ.get("HTTP_HOST") or "").strip().lower()
        ):
            raise Problem(403, "spans from a web page of another site are refused")
        status, content_type, body = _receiver.receive(current_store(), environ, max_receive_bytes)
        answer = bottle.HTTPResponse(body, status)
        answer.content_type = content_type
        for name, value in _COMMON_HEADERS.items():
            answer.set_header(name, value)
        return answer

    app.route("/v1/traces", "POST", guard(receive_traces))
    app.route("/traces", "GET", guard(traces))
    app.route("/traces/summary", "GET", guard(traces_summary))
    app.route("/traces/<trace_id>", "GET", guard(one_trace))
    app.route("/stats", "GET", guard(stats))
    app.route("/metrics", "GET", guard(metrics))
    app.route("/inflight", "GET", guard(inflight))
    app.route("/traces", "DELETE", guard(delete_traces))
    app.route("/health", "GET", guard(health, public=True))
    app.route("/ready", "GET", guard(ready))
    # The page holds no data; it asks for the token and sends it with its own requests.
    app.route("/", "GET", guard(page, public=True))
    return app


class _TracedBottle(bottle.Bottle):  # type: ignore[misc]  # bottle has no type hints
    """A Bottle app that runs each request through ``TracingMiddleware``, except the server's own routes.

    Still a ``bottle.Bottle`` (routes, plugins, ``mount`` all work); only its
    WSGI entry point, ``app(environ, start_response)``, adds the SERVER span.
    Mounted into another Bottle app, its routes join that app and its
    middleware does not run (wrap the outer app instead).
    """

    def __init__(self, *, trace_requests: bool = True, **kwargs: Any) -> None:
        if not isinstance(trace_requests, bool):
            raise ValueError(f"trace_requests must be True or False; got {trace_requests!r}")
        super().__init__(**kwargs)
        self._tracing = TracingMiddleware(self.wsgi, excluded_paths=OWN_PATHS) if trace_requests else None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        tracing = self._tracing
        if tracing is None or not self._traceable(environ):
            return self.wsgi(environ, start_response)  # type: ignore[no-any-return]
        return tracing(environ, start_response)

    def _traceable(self, environ: dict[str, Any]) -> bool:
        """True for a request to one of the app's routes that its guard (if any) lets through.

        Decided before any span starts: a new trace takes a place in the store
        the moment its root span starts, so traced 404s or refused requests
        would let anyone evict the real traces (``/x1`` ... ``/x1000``, or a
        DNS-rebinding page with a foreign Host), and their ``traceparent``
        could force sampling.
        """
        try:
            path_info = str(environ.get("PATH_INFO") or "")
            if path_info in OWN_PATHS or path_info.startswith(_OWN_PREFIX):
                return False
            # Matched as Bottle will match it: on the path decoded as UTF-8, an empty path as "/".
            path = str(environ.get("PATH_INFO") or "/")
            try:
                path = path.encode("latin-1").decode("utf-8")
            except UnicodeEncodeError:  # a server that handed over decoded text, against PEP 3333
                pass
            except UnicodeDecodeError:
                # Bottle would route it with the bad bytes dropped (/%FF as /); the guarded
                # routes answer it 404. Untraced either way: it names no route as sent.
                return False
            route, _ = self.router.match({"PATH_INFO": path, "REQUEST_METHOD": environ.get("REQUEST_METHOD", "GET")})
            if route.rule in OWN_PATHS:
                return False  # another spelling of the server's own routes ("GET ?x" is "/")
            guard = getattr(route.callback, "autotrace_guard", None)
            if guard is not None:
                guard[0].check_environ(environ, token=not guard[1])
            return True
        except (bottle.HTTPError, Problem):  # no such route (404), wrong method (405), refused
            return False
        except Exception as exc:
            internal_error("deciding whether to trace a request", exc)
            return False


def create_app(
    store: TraceStore | None = None,
    *,
    token: str | None = None,
    allowed_hosts: Iterable[str] | None = None,
    trace_requests: bool = True,
    max_answer_spans: int = DEFAULT_MAX_ANSWER_SPANS,
    max_concurrent_encodes: int = DEFAULT_MAX_CONCURRENT_ENCODES,
    encode_wait: float = DEFAULT_ENCODE_WAIT,
    max_receive_bytes: int = _receiver.DEFAULT_MAX_RECEIVE_BYTES,
) -> bottle.Bottle:
    """A Bottle (WSGI) app serving ``store`` (the global store by default) at /traces.

    ``token`` (default: ``$AUTOTRACE_TOKEN``) makes every route but /health and
    the viewer page ask for ``Authorization: Bearer <token>``; ``allowed_hosts``
    limits the ``Host`` headers answered (see ``Guard``). With
    ``trace_requests`` (the default) every request but those to /, /traces,
    /health and /ready is one SERVER span (``autotrace.wsgi.TracingMiddleware``)
    that continues an incoming ``traceparent`` and answers one, so routes you
    add (``app.route("/predict", ...)``) are traced. Requests to no route, and
    requests the checks refuse, are not. One GET /traces answer holds at most
    ``max_answer_spans`` spans (whole traces, newest first; a header
    ``X-Autotrace-Omitted-Traces`` says how many were left out, and
    ``?clear=true`` or a smaller ``?limit`` pages through them), and at most
    ``max_concurrent_encodes`` answers are sent at once (one more waits up to
    ``encode_wait`` seconds for its turn, then is a 503 with Retry-After).
    ``POST /v1/traces`` is an OTLP/HTTP trace receiver: other processes'
    exporters send their spans there, into the same store (bodies up to
    ``max_receive_bytes``, before and after gzip).
    """
    app = _TracedBottle(trace_requests=trace_requests, catchall=True)
    return install(
        app,
        store,
        token=token,
        allowed_hosts=allowed_hosts,
        max_answer_spans=max_answer_spans,
        max_concurrent_encodes=max_concurrent_encodes,
        encode_wait=encode_wait,
        max_receive_bytes=max_receive_bytes,
    )


# -- running in the background (the threaded server itself is _serving's) -----------------


def start_in_background(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    app: WSGIApp | None = None,
    store: TraceStore | None = None,
    token: str | None = None,
    access_log: bool = False,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_connections_per_client: int | None = None,
    backlog: int = DEFAULT_BACKLOG,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
) -> ServerHandle:
    """Serve ``app`` (default ``create_app(store, token=token)``) on a daemon thread; port 0 picks a free port.

    Raises ``OSError`` when the address cannot be bound and ``ValueError`` for a
    bad argument. ``max_connections``: connections served at once (more get a
    503 with Retry-After; ``GET /health`` is still answered);
    ``max_connections_per_client``: from one client address (default half of
    ``max_connections``); ``backlog``: connections the kernel queues;
    ``request_timeout``: seconds to send the whole request (then 408);
    ``idle_timeout``: seconds one read or write may wait. Serving the default
    app on an address other machines can reach (``0.0.0.0``) without a token
    logs a warning on the ``autotrace`` logger.
    """
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a non-empty string; got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535; got {port!r}")
    _positive("max_connections", max_connections)
    if max_connections_per_client is None:
        max_connections_per_client = max(1, max_connections // 2)
    _positive("max_connections_per_client", max_connections_per_client)
    _positive("backlog", backlog)
    for name, seconds in (("request_timeout", request_timeout), ("idle_timeout", idle_timeout)):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < 1e6:
            raise ValueError(f"{name} must be a positive number of seconds; got {seconds!r}")
    exposed = False
    if app is None:
        app = create_app(store, token=token, allowed_hosts=loopback_hosts(host))
        exposed = not is_loopback(host) and not (token or os.environ.get(TOKEN_ENV))
    elif store is not None or token is not None:
        raise ValueError("give either app or store/token, not both")
    handle = _serving.serve(
        app,
        host,
        port,
        access_log=access_log,
        max_connections=max_connections,
        max_connections_per_client=max_connections_per_client,
        backlog=backlog,
        request_timeout=float(request_timeout),
        idle_timeout=float(idle_timeout),
    )
    if exposed:
        _warn(
            f"autotrace server: {handle.url} is reachable from other machines and no token is set; anyone "
            f"who can connect can read and delete the traces (pass token= or set {TOKEN_ENV})"
        )
    return handle


def _warn(message: str) -> None:
    """Log ``message`` as a warning; on stderr as well when logging is not set up to show it.

    The ``autotrace`` logger carries a NullHandler (the library convention), so
    without a handler of the application's the warning would go nowhere, not
    even to ``logging.lastResort``.
    """
    logger.warning("%s", message)
    if not logger.isEnabledFor(logging.WARNING):
        return
    node: logging.Logger | None = logger
    while node is not None:
        if any(not isinstance(h, logging.NullHandler) for h in node.handlers):
            return
        node = node.parent if node.propagate else None
    print(message, file=sys.stderr, flush=True)
