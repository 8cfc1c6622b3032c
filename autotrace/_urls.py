"""URLs as HTTP spans may record them: credentials and sensitive query values replaced, sizes bounded.

The one place the ASGI middleware and the outgoing-request hooks call. The rules
themselves live in ``redaction`` (``redact_url``, ``redact_query``, ``redact_path``),
shared with the WSGI middleware and ``traced_urlopen``; this module adds the size bound.
"""

from __future__ import annotations

from . import redaction
from .redaction import URL_REDACTED

__all__ = ["MAX_URL_LENGTH", "URL_REDACTED", "bounded", "redact_path", "redact_query", "redact_url"]

# A recorded path, query or URL is cut here: a hostile client must not make a span hold megabytes.
MAX_URL_LENGTH = 2048


def bounded(text: str, limit: int = MAX_URL_LENGTH) -> str:
    """``text`` cut to ``limit`` characters (plus ``…`` when cut)."""
    return text if len(text) <= limit else text[:limit] + "…"


def redact_query(query: str) -> str:
    """``a=1&api_key=x`` with the values of sensitive or secret-looking parameters replaced by ``REDACTED``."""
    return redaction.redact_query(query) if query else query


def redact_path(path: str) -> str:
    """A URL path, bounded, with its token-looking segments replaced by ``REDACTED`` (``redaction.redact_path``)."""
    return redaction.redact_path(bounded(path))


def redact_url(url: str) -> str:
    """``url`` for ``url.full``: ``user:password@``, sensitive query values and token-like path segments hidden.

    Anything that cannot be read is recorded as ``REDACTED``, never raw.
    """
    return bounded(redaction.redact_url(url))
