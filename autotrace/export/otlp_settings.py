"""OTLP/HTTP exporter settings: endpoint, headers, timeout, compression, encoding, proxy and TLS.

Each is read from the argument when given, else from the ``OTEL_EXPORTER_OTLP_TRACES_*``
then ``OTEL_EXPORTER_OTLP_*`` variables, with OpenTelemetry's defaults; a bad
value raises ValueError naming the argument or the variable.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import os
import re
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import NamedTuple

from .._env import get, parse_kv_list, parse_ms
from .._errors import internal_error
from ..redaction import redact_userinfo

__all__ = ["DEFAULT_ENDPOINT", "ExportError"]

DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
"""Where spans go when neither an endpoint nor ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` is given."""


class ExportError(Exception):
    """Why a batch could not be delivered (logged once per kind, never raised to user code)."""


def _resolve_endpoint(endpoint: str | None, env: Mapping[str, str]) -> str:
    if endpoint is not None:
        source, url = "endpoint", endpoint
    elif get(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") is not None:
        source, url = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", get(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or ""
    elif get(env, "OTEL_EXPORTER_OTLP_ENDPOINT") is not None:
        base = get(env, "OTEL_EXPORTER_OTLP_ENDPOINT") or ""
        source, url = "OTEL_EXPORTER_OTLP_ENDPOINT", _traces_url(base)
        given = base  # errors show what was set, not the URL made from it
    else:
        return DEFAULT_ENDPOINT
    # An error shows the value as it was set, not with the /v1/traces appended to a base URL.
    given = base if source == "OTEL_EXPORTER_OTLP_ENDPOINT" else url
    if not isinstance(url, str):
        raise ValueError(f"{source} must be a URL string; got {url!r}")
    url = url.strip()
    if source != "OTEL_EXPORTER_OTLP_ENDPOINT":
        given = url
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"{source} must be an http:// or https:// URL; got {given!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        hint = " (the scheme is required: http://host:4318)" if "://" not in given else ""
        raise ValueError(f"{source} must be an http:// or https:// URL with a host; got {given!r}{hint}")
    return url


def _traces_url(base: str) -> str:
    """The traces URL under a base endpoint: ``v1/traces`` appended to its path, its query kept."""
    try:
        parts = urllib.parse.urlsplit(base.strip())
    except ValueError:
        return base.rstrip("/") + "/v1/traces"  # refused with the reason by the caller
    if not parts.scheme or not parts.netloc:
        return base.rstrip("/") + "/v1/traces"
    path = parts.path.rstrip("/") + "/v1/traces"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


class _Proxy(NamedTuple):
    """An HTTP proxy from the environment: where it listens and its Proxy-Authorization, if any."""

    host: str
    port: int
    headers: dict[str, str]


def _resolve_proxy(scheme: str, host: str, env: Mapping[str, str]) -> _Proxy | None:
    """The proxy ``http_proxy``/``https_proxy`` name for the collector, unless ``no_proxy`` covers it.

    The lower-case name wins over the upper-case one, as in curl, urllib and
    requests. ``HTTP_PROXY`` is ignored when ``REQUEST_METHOD`` is set: in a CGI
    process any client can set it with a ``Proxy:`` header ("httpoxy").
    """
    names = [f"{scheme}_proxy"]
    if scheme != "http" or "REQUEST_METHOD" not in env:
        names.append(f"{scheme.upper()}_PROXY")
    var = next((n for n in names if get(env, n) is not None), None)
    if var is None:
        return None
    no_proxy = get(env, "no_proxy") or get(env, "NO_PROXY")
    if no_proxy and _no_proxy_covers(no_proxy, host):
        return None
    url = get(env, var) or ""
    if "://" not in url:
        url = "http://" + url  # "proxy:3128", as curl reads it
    shown = redact_userinfo(url)  # never log the proxy's password
    problem = None
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        problem = f"{var}={shown!r} is not a proxy URL ({exc})"
    else:
        if parts.scheme != "http" or not parts.hostname:
            problem = f"{var}={shown!r} is not an http:// proxy with a host, the only kind autotrace speaks"
    if problem is not None or not parts.hostname:
        # The variable is shared with every other program (a socks5:// one is common): not
        # a reason to refuse the whole configuration. Said once, then exports go direct.
        internal_error(f"OTLP export proxy setting {var}", ExportError(f"{problem}; exporting directly to {host}"))
        return None
    headers = {}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Proxy-Authorization"] = f"Basic {token}"
    return _Proxy(parts.hostname, port or 80, headers)


def _no_proxy_covers(no_proxy: str, host: str) -> bool:
    """Whether ``no_proxy`` (``*``, names, ``.suffixes``, IPs, CIDR blocks; ports ignored) names ``host``."""
    host = host.lower().strip("[]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in no_proxy.lower().split(","):
        entry = entry.strip()
        if entry == "*":
            return True
        if entry.startswith("[") and "]" in entry:  # [::1] or [::1]:4318
            entry = entry[1 : entry.index("]")]
        elif entry.count(":") == 1:  # name:port
            entry = entry.partition(":")[0]
        if not entry:
            continue
        if address is not None and ("/" in entry or entry[0].isdigit() or ":" in entry):
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        entry = entry.lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
    return False


def _resolve_headers(headers: Mapping[str, str] | str | None, env: Mapping[str, str]) -> dict[str, str]:
    if headers is None:
        for var in ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"):
            text = get(env, var)
            if text is not None:
                return _check_headers(var, parse_kv_list(var, text))
        return {}
    if isinstance(headers, str):
        return _check_headers("headers", parse_kv_list("headers", headers))
    if not isinstance(headers, Mapping):
        raise ValueError(f"headers must be a mapping or a 'k=v,k2=v2' string; got {headers!r}")
    return _check_headers("headers", {str(k): str(v) for k, v in headers.items()})


def _check_headers(source: str, headers: dict[str, str]) -> dict[str, str]:
    """``headers`` when every name is an HTTP token and every value can go on the wire (RFC 9110 5.1, 5.5)."""
    for key, value in headers.items():
        if not _HEADER_NAME.fullmatch(key):
            # http.client would refuse a non-ASCII name at every export; other odd names break collectors.
            raise ValueError(f"{source} has an invalid HTTP header name {key!r} (letters, digits and !#$%&'*+-.^_`|~)")
        if _HEADER_VALUE_BAD.search(value):
            # Control characters (NUL, CR, LF...) or text outside Latin-1 (which http.client cannot send):
            # collectors answer 400 to the first, the second would fail every export.
            raise ValueError(
                f"{source} has an invalid value for HTTP header {key!r} (control characters or text outside Latin-1)"
            )
    return headers


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")


def _resolve_timeout(timeout: float | None, env: Mapping[str, str]) -> float:
    if timeout is None:
        for var in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
            text = get(env, var)
            if text is not None:
                return parse_ms(var, text)
        return 10.0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}")
    return float(timeout)


def _resolve_compression(compression: str | None, env: Mapping[str, str]) -> str:
    source = "compression"
    if compression is None:
        for var in ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"):
            text = get(env, var)
            if text is not None:
                source, compression = var, text
                break
        else:
            return "none"
    value = compression.strip().lower() if isinstance(compression, str) else compression
    if value not in ("gzip", "none"):
        raise ValueError(f"{source} must be gzip or none; got {compression!r}")
    return str(value)


def _resolve_encoding(encoding: str | None, env: Mapping[str, str]) -> str:
    if encoding is not None:
        value = encoding.strip().lower() if isinstance(encoding, str) else encoding
        if value not in ("json", "protobuf"):
            raise ValueError(f"encoding must be json or protobuf; got {encoding!r}")
        return str(value)
    for var in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        text = get(env, var)
        if text is None:
            continue
        protocol = text.lower()
        if protocol == "http/json":
            return "json"
        if protocol == "http/protobuf":
            return "protobuf"
        if protocol == "grpc":
            raise ValueError(f"{var}=grpc is not supported by autotrace; use http/protobuf or http/json")
        raise ValueError(f"{var} must be http/protobuf or http/json; got {text!r}")
    return "json"


def _tls_setting(value: str | None, name: str, signal_var: str, var: str, env: Mapping[str, str]) -> tuple[str, str]:
    """(where it came from, path) for one TLS file setting, or ("", "") when unset."""
    if value is not None:
        return name, value
    for source in (signal_var, var):
        text = get(env, source)
        if text is not None:
            return source, text
    return "", ""


def _tls_context(
    https: bool,
    certificate_file: str | None,
    client_certificate_file: str | None,
    client_key_file: str | None,
    env: Mapping[str, str],
) -> ssl.SSLContext | None:
    """The TLS context for an https endpoint: system CAs, or the given CA bundle, plus a client certificate."""
    ca = _tls_setting(
        certificate_file,
        "certificate_file",
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        env,
    )
    cert = _tls_setting(
        client_certificate_file,
        "client_certificate_file",
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        env,
    )
    key = _tls_setting(
        client_key_file, "client_key_file", "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY", env
    )
    for source, path in (ca, cert, key):
        if source and not os.path.isfile(path):
            raise ValueError(f"{source}: no such file {path!r}")
    if not https:
        return None
    if key[0] and not cert[0]:
        raise ValueError(f"{key[0]} needs a client certificate as well")
    try:
        context = ssl.create_default_context(cafile=ca[1] or None)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"{ca[0]}: not a usable CA bundle ({exc})") from None
    if cert[0]:
        try:
            context.load_cert_chain(cert[1], key[1] or None)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"{cert[0]}: not a usable client certificate and key ({exc})") from None
    return context
