"""URLs as HTTP spans may record them: credentials and sensitive query values replaced, sizes bounded.

The one place the ASGI middleware and the outgoing-request hooks call, so the
rule is kept (and can be tightened) in one spot.
"""

from __future__ import annotations

import urllib.parse

from .redaction import looks_secret

__all__ = ["MAX_URL_LENGTH", "URL_REDACTED", "bounded", "redact_query", "redact_url"]

# The OpenTelemetry HTTP conventions' literal for a hidden URL part.
URL_REDACTED = "REDACTED"
# A recorded path, query or URL is cut here: a hostile client must not make a span hold megabytes.
MAX_URL_LENGTH = 2048
# Query parameters the OpenTelemetry HTTP conventions list as sensitive, plus OAuth's one-time ``code``.
_SENSITIVE = frozenset({"awsaccesskeyid", "signature", "sig", "x-goog-signature", "code"})


def bounded(text: str, limit: int = MAX_URL_LENGTH) -> str:
    """``text`` cut to ``limit`` characters (plus ``…`` when cut)."""
    return text if len(text) <= limit else text[:limit] + "…"


def _secret_param(name: str) -> bool:
    plain = urllib.parse.unquote_plus(name)
    return plain.lower() in _SENSITIVE or looks_secret(plain)


def redact_query(query: str) -> str:
    """``a=1&api_key=x`` with the values of sensitive or secret-looking parameters replaced by ``REDACTED``."""
    if not query:
        return query
    parts = []
    for pair in query.split("&"):
        name, eq, _value = pair.partition("=")
        parts.append(f"{name}={URL_REDACTED}" if eq and _secret_param(name) else pair)
    return "&".join(parts)


def redact_url(url: str) -> str:
    """``url`` for ``url.full``: ``user:password@`` and sensitive query values replaced by ``REDACTED``.

    Anything that cannot be read is recorded as ``REDACTED``, never raw.
    """
    try:
        head, hash_, fragment = url.partition("#")
        base, qmark, query = head.partition("?")
        scheme, sep, rest = base.partition("://")
        if sep:
            slash = rest.find("/")
            authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
            if "@" in authority:
                authority = f"{URL_REDACTED}:{URL_REDACTED}@" + authority.rpartition("@")[2]
            base = f"{scheme}://{authority}{path}"
        return bounded(base + qmark + redact_query(query) + hash_ + fragment)
    except Exception:
        return URL_REDACTED
