"""What ``capture_args`` / ``capture_result`` keep: redacted, truncated text.

Values whose key looks like a secret (api key, token, password, authorization,
secret, cookie...) are replaced by ``[REDACTED]``; everything else is kept as
an attribute value when it is one, else as its ``repr``, cut to
``capture_max_length`` characters. A ``redact(key, value)`` function in the
configuration runs first and may return a replacement.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .attributes import safe_str

__all__ = ["REDACTED", "capture_value", "looks_secret"]

REDACTED = "[REDACTED]"

_SECRET = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[-_ ]?key|apikey|auth(orization)?|credential|"
    r"private[-_ ]?key|session|cookie|bearer|signature|access[-_ ]?key)",
    re.IGNORECASE,
)


def looks_secret(key: str) -> bool:
    """True when a key names something that must not be stored (``api_key``, ``Authorization``...)."""
    return bool(_SECRET.search(key))


def _settings() -> tuple[int, Any]:
    from .tracer import get_config

    config = get_config()
    if config is None:
        return 1000, None
    return config.capture_max_length, config.redact


def _scrub(value: Any, depth: int = 0) -> Any:
    """Replace secret-looking keys inside mappings (and lists of mappings)."""
    if depth > 4:
        return value
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and looks_secret(k) else _scrub(v, depth + 1)) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return (
            type(value)(_scrub(v, depth + 1) for v in value)
            if isinstance(value, list)
            else tuple(_scrub(v, depth + 1) for v in value)
        )
    return value


def capture_value(key: str, value: Any) -> Any:
    """The attribute value kept for an argument or result named ``key``."""
    limit, redact = _settings()
    if looks_secret(key):
        return REDACTED
    if redact is not None:
        try:
            value = redact(key, value)
        except Exception:
            return REDACTED  # a failing redactor must not leak what it was meant to hide
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        text = value
    else:
        try:
            text = repr(_scrub(value))
        except Exception:
            text = safe_str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return text
