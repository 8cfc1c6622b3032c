"""Who the /traces server answers: the bearer token, Host and browser checks, and its JSON error answers.

``Guard`` wraps each route callback with the checks (so they travel with the
routes when merged into another Bottle app) and turns every failure into a
JSON answer; ``is_loopback`` and ``loopback_hosts`` decide which Host names a
server bound to an address answers to.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import socket
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

import bottle

from ._errors import internal_error

__all__ = ["LOOPBACK_HOSTS", "TOKEN_ENV", "Guard", "Problem", "is_loopback", "loopback_hosts"]


TOKEN_ENV = "AUTOTRACE_TOKEN"


_JSON = "application/json"


_COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


def _dumps(obj: Any) -> bytes:
    # A lone surrogate (a str attribute made from undecodable bytes) cannot be UTF-8;
    # backslashreplace writes it as the JSON escape "\udc80", so the answer stays valid JSON.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace")


def _set_headers(headers: dict[str, str]) -> None:
    for name, value in headers.items():
        bottle.response.set_header(name, value)


class Problem(Exception):
    """A client error raised inside a route: answered as ``{"error": message, "status": status}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _json_answer(status: int, obj: Any, headers: dict[str, str] | None = None) -> bottle.HTTPResponse:
    answer = bottle.HTTPResponse(_dumps(obj), status)
    answer.content_type = _JSON
    for name, value in {**_COMMON_HEADERS, **(headers or {})}.items():
        answer.set_header(name, value)
    return answer


def _authorized(header: str, expected: bytes) -> bool:
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # WSGI hands headers over as latin-1 decoded text: encoding back gives the bytes sent.
    try:
        given = credentials.strip().encode("latin-1")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(given, expected)


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _host_name(header: str) -> str:
    """The host part of a Host header, lower case, without port or brackets."""
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def loopback_hosts(bind_host: str) -> frozenset[str] | None:
    """The Host names to accept for a server bound to ``bind_host``: loopback names, or None (any).

    Any loopback bind counts, however it is spelled (``127.0.0.2``,
    ``0:0:0:0:0:0:0:1``, ``localhost``): it answers to the loopback names and
    to the bind address itself, so a DNS-rebinding page cannot read it.
    """
    if not is_loopback(bind_host):
        return None
    name = _host_name(bind_host)
    names = {name}
    try:
        names.add(str(ipaddress.ip_address(name.partition("%")[0])))
    except ValueError:
        names.update(str(address) for address in _resolved(name))  # 127.1, or this machine's own name
    return LOOPBACK_HOSTS | frozenset(names)


def _resolved(name: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses ``name`` stands for when bound (``127.1``, ``0x7f.1``, a name in /etc/hosts); [] if none."""
    try:
        infos = socket.getaddrinfo(name, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        return []
    out = []
    for info in infos:
        try:
            out.append(ipaddress.ip_address(str(info[4][0]).partition("%")[0]))
        except ValueError:
            return []
    return out


class Guard:
    """Wraps route callbacks: the request checks, JSON error answers, no exception escaping.

    The checks: the bearer token when one is set; no cross-site browser requests
    (``Sec-Fetch-Site``), so another web page cannot make your browser clear the
    store; and, when ``allowed_hosts`` is given, a ``Host`` header from that set,
    so a DNS-rebinding page cannot read a loopback server. They travel with each
    callback rather than living in app hooks, so the routes keep them when
    merged or mounted into another Bottle app.
    """

    def __init__(self, token: str | None = None, *, allowed_hosts: Iterable[str] | None = None) -> None:
        if token is None:
            token = os.environ.get(TOKEN_ENV) or None
        elif not isinstance(token, str) or not token:
            raise ValueError(f"token must be a non-empty string; got {token!r}")
        if isinstance(allowed_hosts, str):
            raise ValueError(f"allowed_hosts must be a collection of host names, not a string; got {allowed_hosts!r}")
        self.token = token
        self.allowed_hosts = None if allowed_hosts is None else frozenset(_host_name(h) for h in allowed_hosts)
        self._expected = token.encode("utf-8") if token is not None else None

    def check(self) -> None:
        """Raise a 400, 403 or 401 Problem unless the current request passes the checks."""
        self.check_environ(bottle.request.environ)

    def check_environ(self, environ: dict[str, Any], *, token: bool = True) -> None:
        """Raise a 400, 403 or 401 Problem unless the request in ``environ`` passes (the token too, if ``token``)."""
        # Raw WSGI (latin-1) header values: Bottle's get_header() raises on bytes that are not UTF-8.
        if environ.get("HTTP_SEC_FETCH_SITE", "") in ("cross-site", "same-site"):
            raise Problem(403, "cross-site browser requests are refused; open the viewer from this server")
        allowed = self.allowed_hosts
        if allowed is not None:
            host = environ.get("HTTP_HOST")
            if host is None:
                # HTTP/1.1 requires Host (RFC 9112): without one the allow-list could not apply.
                # A header line "Host : x" (space before the colon) arrives as no Host at all.
                if str(environ.get("SERVER_PROTOCOL", "")).upper() not in ("HTTP/1.0", "HTTP/0.9"):
                    raise Problem(400, "a Host header is required (HTTP/1.1); this server checks it")
            elif _host_name(host) not in allowed:
                raise Problem(
                    403, f"Host {host[:100]!r} is refused; this server answers to {', '.join(sorted(allowed))}"
                )
        expected = self._expected
        if token and expected is not None and not _authorized(environ.get("HTTP_AUTHORIZATION", ""), expected):
            raise Problem(
                401,
                "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": 'Bearer realm="autotrace"'},
            )

    def __call__(self, callback: Callable[..., Any], *, public: bool = False) -> Callable[..., Any]:
        """``callback`` behind the token check (unless ``public``), answering JSON on any failure."""

        def route(*args: Any, **kwargs: Any) -> Any:
            try:
                _check_path()
                if not public:
                    self.check()
                out = callback(*args, **kwargs)
            except Problem as p:
                return _json_answer(p.status, {"error": p.message, "status": p.status}, p.headers)
            except bottle.HTTPResponse:
                raise
            except Exception as exc:
                internal_error(f"the route {bottle.request.path[:100]}", exc)
                return _json_answer(500, {"error": "internal error; see the server log", "status": 500})
            _set_headers(_COMMON_HEADERS)
            return out

        route.__name__ = getattr(callback, "__name__", "route")
        route.__doc__ = callback.__doc__
        # Read by _TracedBottle: a request this guard would refuse is not traced.
        route.autotrace_guard = (self, public)  # type: ignore[attr-defined]
        return route


def _check_path() -> None:
    """A 404 Problem for a path that is not UTF-8.

    Bottle routes such a path with the bad bytes silently dropped, so
    ``/tr%FFaces`` would reach /traces (and ``/%FF`` the page): a path that
    names no route must not be answered as if it did.
    """
    raw = bottle.request.environ.get("bottle.raw_path")
    if raw is not None:
        try:
            raw.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise Problem(404, f"not found: {raw[:200]!r} (the path is not UTF-8)") from None


def _refuse_browser_clear(environ: dict[str, Any]) -> None:
    """A 403 Problem for ``GET /traces?clear=true`` sent by a browser: a link or a page must not empty the store.

    Collectors send none of these headers; the viewer clears with DELETE.
    Browsers with Fetch Metadata mark a navigation (a clicked link, even from
    a chat client: ``Sec-Fetch-Site: none``); older ones still send ``Accept:
    text/html`` or ``Upgrade-Insecure-Requests`` when navigating, and an
    ``Origin`` naming another site on a cross-origin fetch.
    """
    site = environ.get("HTTP_SEC_FETCH_SITE", "")
    navigation = (
        site not in ("", "same-origin")
        or environ.get("HTTP_SEC_FETCH_MODE", "") == "navigate"
        or environ.get("HTTP_SEC_FETCH_DEST", "") not in ("", "empty")
        or "HTTP_SEC_FETCH_USER" in environ
        or "HTTP_UPGRADE_INSECURE_REQUESTS" in environ
        or "text/html" in environ.get("HTTP_ACCEPT", "")
    )
    origin = environ.get("HTTP_ORIGIN")
    foreign = (
        origin is not None
        and urllib.parse.urlsplit(origin.strip()).netloc.lower() != (environ.get("HTTP_HOST") or "").strip().lower()
    )
    if navigation or foreign:
        raise Problem(
            403,
            "GET /traces?clear=true is refused from a browser (a link or another page must not empty the store); "
            "use DELETE /traces, as the viewer does",
        )


def is_loopback(host: str) -> bool:
    """True when ``host`` (a bind address or name) only accepts connections from this machine."""
    name = _host_name(host)
    if name == "localhost":
        return True
    try:
        addresses = [ipaddress.ip_address(name.partition("%")[0])]
    except ValueError:
        # Spelled otherwise (127.1, 2130706433, this machine's name): what bind() will resolve it to.
        addresses = _resolved(name)
    mapped = [a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped else a for a in addresses]
    return bool(mapped) and all(a.is_loopback for a in mapped)
