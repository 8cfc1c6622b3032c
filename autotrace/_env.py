"""Reading settings from text: OTEL_*/AUTOTRACE_* variables and query parameters.

One set of true/false words for every switch, so ``OTEL_SDK_DISABLED=on`` and
``?clear=on`` mean the same. Each parser raises ValueError naming the setting
and the value it refused.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Mapping

__all__ = [
    "FALSE_WORDS",
    "TRUE_WORDS",
    "get",
    "parse_bool",
    "parse_count",
    "parse_float",
    "parse_int",
    "parse_kv_list",
    "parse_ms",
]

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
"""Words read as true (any case, surrounding spaces ignored)."""
FALSE_WORDS = frozenset({"false", "0", "no", "off"})
"""Words read as false (any case, surrounding spaces ignored)."""


def get(env: Mapping[str, str], name: str) -> str | None:
    """The stripped value of ``name``, or None when unset or blank."""
    raw = env.get(name)
    if raw is None:
        return None
    raw = raw.strip()
    return raw or None


def parse_bool(var: str, text: str) -> bool:
    """``text`` as a bool: one of TRUE_WORDS or FALSE_WORDS, any case."""
    low = text.strip().lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    raise ValueError(f"{var} must be one of true, false, 1, 0, yes, no, on, off; got {text[:40]!r}")


def parse_float(var: str, text: str, low: float, high: float) -> float:
    """A number between ``low`` and ``high`` inclusive."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{var} must be a number between {low:g} and {high:g}; got {text!r}") from None
    if math.isnan(value) or not low <= value <= high:
        raise ValueError(f"{var} must be a number between {low:g} and {high:g}; got {text!r}")
    return value


def parse_int(var: str, text: str, minimum: int) -> int:
    """A whole number of at least ``minimum``."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{var} must be a whole number; got {text!r}") from None
    if value < minimum:
        raise ValueError(f"{var} must be at least {minimum}; got {text!r}")
    return value


def parse_count(var: str, text: str) -> int:
    """A positive whole number."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{var} must be a positive whole number; got {text!r}") from None
    if value < 1:
        raise ValueError(f"{var} must be a positive whole number; got {text!r}")
    return value


def parse_ms(var: str, text: str, *, allow_zero: bool = False) -> float:
    """A duration in milliseconds (OpenTelemetry's unit) as seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or math.isinf(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{var} must be a positive number of milliseconds; got {text!r}")
    return value / 1000.0


def parse_kv_list(var: str, text: str) -> dict[str, str]:
    """Parse ``k1=v1,k2=v2`` with percent-decoded values (W3C Baggage style)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{var} must be a comma-separated list of key=value; got {part!r}")
        out[urllib.parse.unquote(key)] = urllib.parse.unquote(value.strip())
    return out
