"""What ``capture_args`` / ``capture_result`` keep: redacted, truncated text.

Rules, in order, for an argument or result named ``key``:

1. A key that looks like a secret (api key, token, password, authorization,
   secret, cookie, credential, session, private/access key...) is stored as
   ``[REDACTED]``, whatever its value.
2. The configured ``TraceConfig(redact=fn)`` runs as ``fn(key, value)`` and
   returns the value to keep. If it raises, the value is stored as
   ``[REDACTED]``: a broken redactor must not leak what it was meant to hide.
3. bool, int and float are kept as they are; anything else becomes text: a
   str as itself, other values as a repr in which every secret-looking key of
   a nested mapping, dataclass, named tuple or plain object's attribute (an
   object whose class keeps ``object.__repr__``) is redacted, and so is the
   value of a ``(key, value)`` pair such as ``("Authorization", "Bearer x")``.
   An object with its own ``__repr__`` is shown by it (then masked as text).
4. The text is cut to ``capture_max_length`` characters (plus ``…``), and
   ``key=value`` / ``"key": value`` pairs with secret-looking keys,
   ``Bearer``/``Basic`` credentials, the password of ``scheme://user:password@host``
   URLs and well-known API key formats left in it are masked.

Rendering is bounded: only as much of a container as fits the length limit is
looked at, so capturing a huge list costs no more than capturing a short one.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ._errors import reraise_foreign
from .attributes import safe_str

__all__ = ["REDACTED", "capture_value", "looks_secret", "redact_text"]

REDACTED = "[REDACTED]"

_MAX_DEPTH = 6
_ELLIPSIS = "…"

# Words (after splitting snake_case, kebab-case, camelCase and dots) that mark a secret.
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "secret",
        "secrets",
        "token",
        "apikey",
        "auth",
        "authorization",
        "authentication",
        "credential",
        "credentials",
        "cookie",
        "cookies",
        "session",
        "sessionid",
        "bearer",
        "jwt",
        "otp",
        "privatekey",
        "accesskey",
        "secretkey",
        "signingkey",
        "clientsecret",
        "xsrf",
        "csrf",
    }
)
# Two-word secrets: "api key", "private key", "access key"...
_SECRET_PAIRS = frozenset(
    {
        ("api", "key"),
        ("private", "key"),
        ("access", "key"),
        ("secret", "key"),
        ("signing", "key"),
        ("encryption", "key"),
        ("set", "cookie"),
        ("session", "id"),
        ("connection", "string"),
    }
)
# "token" next to one of these is about LLM tokens, not credentials (max_tokens, token_count, eos_token);
# "id_token", "access_token", "refresh_token" stay secret.
_TOKEN_BEFORE = frozenset(
    {
        "max", "min", "num", "total", "next", "first", "last", "new", "prev", "eos", "bos", "pad", "stop",
        "start", "end", "unk", "sep", "cls", "mask", "special", "input", "output", "prompt", "completion",
        "generated", "sampled",
    }
)  # fmt: skip
_TOKEN_AFTER = frozenset(
    {
        "count", "counts", "id", "ids", "len", "length", "limit", "usage", "type", "index", "budget",
        "logprob", "logprobs", "str", "text", "position", "pos", "probability", "prob", "score",
    }
)  # fmt: skip

# "pass" is a secret as the last word of a key (DB_PASS), unless it counts passes (n_pass, num_pass).
_COUNT_BEFORE = frozenset({"n", "num", "number", "total", "max", "min", "first", "second", "last", "test", "tests"})

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SPLIT = re.compile(r"[^A-Za-z0-9]+")


def _words(key: str) -> list[str]:
    return [w.lower() for w in _SPLIT.split(_CAMEL.sub("_", key)) if w]


def looks_secret(key: str) -> bool:
    """True when a key names something that must not be stored (``api_key``, ``Authorization``...).

    Inference words that merely contain one of these stay visible:
    ``max_tokens``, ``token_count``, ``tokenizer``, ``author``.
    """
    if not isinstance(key, str):
        return False
    words = _words(key)
    if words and words[-1] == "pass" and (len(words) == 1 or words[-2] not in _COUNT_BEFORE):
        return True  # DB_PASS, smtpPass, user.pass; not pass_rate, pass_at_1 or n_pass (eval figures)
    for i, word in enumerate(words):
        if word in _SECRET_WORDS:
            if word == "token" and (
                (i and words[i - 1] in _TOKEN_BEFORE) or (i + 1 < len(words) and words[i + 1] in _TOKEN_AFTER)
            ):
                continue
            return True
        if i and (words[i - 1], word) in _SECRET_PAIRS:
            return True
    return False


# -- text patterns, applied to the final text ---------------------------------------------------

_KEY_CHARS = r"[A-Za-z0-9_.\-]*"
# key=value, key: value, "key": "value", 'key': 'value' (the key checked with looks_secret).
_PAIR = re.compile(r"""(?<![A-Za-z0-9_.\-])["']?(?P<name>[A-Za-z]""" + _KEY_CHARS + r""")["']?\s*[=:]\s*""")
# Where a value ends: the matching quote, or the first separator. Found only after a
# secret key, so scanning stays linear in the text.
_QUOTED = {q: re.compile(q + r"(?:[^" + q + r"\\]|\\.)*" + q + "?") for q in ("'", '"')}
_UNQUOTED_END = re.compile(r"[\s,;&)}\]]")
_SCHEME = re.compile(r"\b(?P<scheme>Bearer|Basic|Token|Digest)\s+[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE)
# A shorter credential after the capitalised scheme, when it looks like a token (a digit, a symbol or an
# inner capital): "Bearer ab12" is masked, prose such as "Bearer of bad news" or "Basic Income" is not.
_SHORT_SCHEME = re.compile(
    r"\b(?P<scheme>Bearer|Basic|Token|Digest)\s+(?=[A-Za-z0-9._~+/=\-]*[0-9._~+/=\-]|[A-Za-z0-9._~+/=\-]+[A-Z])[A-Za-z0-9._~+/=\-]{3,}"
)
# The scheme word of an unquoted header value ("Authorization: Bearer x"): masked with the credential.
_VALUE_SCHEME = re.compile(r"(?:Bearer|Basic|Token|Digest|Negotiate|NTLM|ApiKey)[ \t]+", re.IGNORECASE)
# scheme://user:password@host: the password is masked, user and host kept. The authority ends at / ? #,
# whitespace or a quote; the password runs to its last "@" (a raw "@" in a password is common). The
# look-behind starts a match only at the start of a scheme, so a long run of letters is scanned once.
_URL_USERINFO = re.compile(
    r"(?P<head>(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@'\"<>]*:)(?P<password>[^\s/?#'\"<>]+)(?=@)"
)
# A cut text ending inside "scheme://user:pass" (no "@" left): masked unless it is a port number.
_URL_TAIL = re.compile(
    r"(?P<head>(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@'\"<>]*:)(?P<password>[^\s/?#@'\"<>]*)$"
)
_KNOWN_FORMATS = re.compile(
    r"\b(?:sk-[A-Za-z0-9_\-]{16,}|sk-ant-[A-Za-z0-9_\-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{35}|hf_[A-Za-z0-9]{30,}"
    r"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,})"
)


def _mask_pairs(text: str) -> str:
    out: list[str] = []
    pos = 0
    for match in _PAIR.finditer(text):
        start = match.end()
        if match.start() < pos or not looks_secret(match.group("name")):
            continue  # inside a value already masked, or not a secret
        quoted = _QUOTED.get(text[start : start + 1])
        if quoted is not None:
            end = quoted.match(text, start).end()  # type: ignore[union-attr]
            masked = f"{text[start]}{REDACTED}{text[start]}"
        else:
            scheme = _VALUE_SCHEME.match(text, start)  # "Authorization: Bearer abc": the credential too
            found = _UNQUOTED_END.search(text, scheme.end() if scheme else start)
            end = found.start() if found else len(text)
            masked = REDACTED
        if end > start:
            out.append(text[pos:start])
            out.append(masked)
            pos = end
    out.append(text[pos:])
    return "".join(out)


def redact_text(text: str) -> str:
    """Mask secrets left in free text: secret-looking ``key=value`` pairs, auth schemes, URL passwords, key formats."""
    text = _URL_USERINFO.sub(lambda m: m.group("head") + REDACTED, text)
    text = _mask_pairs(text)  # first: "Authorization: Bearer x" is masked whole, scheme word included
    text = _SCHEME.sub(lambda m: f"{m.group('scheme')} {REDACTED}", text)
    text = _SHORT_SCHEME.sub(lambda m: f"{m.group('scheme')} {REDACTED}", text)
    return _KNOWN_FORMATS.sub(REDACTED, text)


# -- bounded, redacting repr ---------------------------------------------------------------------


class _Render:
    """A repr that redacts secret-looking keys and fields, and stops once ``budget`` characters are out."""

    __slots__ = ("budget", "parts", "path")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.parts: list[str] = []
        self.path: set[int] = set()

    def emit(self, text: str) -> bool:
        """Write text; False once the budget is spent (callers then stop)."""
        if self.budget <= 0:
            return False
        if len(text) > self.budget:
            text = text[: self.budget]
        self.parts.append(text)
        self.budget -= len(text)
        return self.budget > 0

    def leaf(self, value: Any) -> bool:
        if isinstance(value, (str, bytes, bytearray)):
            # Only the part that can be shown is repr'd: a 1 GB string costs what 1 kB does.
            cut = value[: self.budget + 1]
            return self.emit(_safe_repr(cut))
        return self.emit(_safe_repr(value))

    def value(self, value: Any, depth: int) -> bool:
        if value is _MASKED:
            return self.emit(repr(REDACTED))
        if isinstance(value, (str, bytes, bytearray, int, float, type(None))):
            return self.leaf(value)
        if depth >= _MAX_DEPTH:
            return self.emit(_ELLIPSIS)
        ident = id(value)
        if ident in self.path:
            return self.emit("<recursive>")
        self.path.add(ident)
        try:
            return self._container(value, depth)
        finally:
            self.path.discard(ident)

    def _container(self, value: Any, depth: int) -> bool:
        if isinstance(value, Mapping):
            return self.items("{", "}", _mapping_items(value, self.budget), depth, ": ")
        fields = _fields(value, self.budget)
        if fields is not None:
            return self.items(f"{_type_name(value)}(", ")", fields, depth, "=")
        if isinstance(value, (list, tuple)) and _is_secret_pair(value):
            # ("Authorization", "Bearer x") in a header list is a mapping item in disguise.
            value = [value[0], _MASKED] if isinstance(value, list) else (value[0], _MASKED)
        if isinstance(value, list):
            return self.seq("[", "]", value, depth)
        if isinstance(value, tuple):
            return self.seq("(", ")" if len(value) != 1 else ",)", value, depth)
        if isinstance(value, (set, frozenset)):
            return self.seq("{", "}", value, depth)
        return self.leaf(value)

    def seq(self, open_: str, close: str, items: Any, depth: int) -> bool:
        if not self.emit(open_):
            return False
        for i, item in enumerate(items):
            if (i and not self.emit(", ")) or not self.value(item, depth + 1):
                return False
        return self.emit(close)

    def items(self, open_: str, close: str, pairs: Any, depth: int, sep: str) -> bool:
        if not self.emit(open_):
            return False
        for i, (key, item) in enumerate(pairs):
            if i and not self.emit(", "):
                return False
            shown = key if sep == "=" else _safe_repr(key)
            if not self.emit(f"{shown}{sep}"):
                return False
            secret = _secret_key(key)
            if not (self.emit(repr(REDACTED)) if secret else self.value(item, depth + 1)):
                return False
        return self.emit(close)


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
        return text if type(text) is str else safe_str(text)
    except Exception as error:
        reraise_foreign(error)
        return safe_str(value)


def _type_name(value: Any) -> str:
    try:
        return type(value).__qualname__
    except Exception as error:
        reraise_foreign(error)
        return "object"


_MASKED = object()
"""Stands for a value rendered as ``'[REDACTED]'``."""


def _key_text(key: Any) -> str | None:
    """A mapping key or pair head as text: str, or bytes as in ASGI/WSGI header lists; None otherwise."""
    if isinstance(key, str):
        return key
    if isinstance(key, (bytes, bytearray)):
        return bytes(key[:200]).decode("latin-1")
    return None


def _secret_key(key: Any) -> bool:
    """looks_secret for a mapping key or pair head (see _key_text)."""
    text = _key_text(key)
    return text is not None and looks_secret(text)


def _is_secret_pair(value: list[Any] | tuple[Any, ...]) -> bool:
    """A two-item list or tuple whose first item is a secret-looking key: ``("password", "hunter2")``.

    A bare ``token`` does not count here: ``("token", "hello")`` and ``["token", "logprob"]`` are
    what LLM code passes around; header pairs name theirs (``X-Auth-Token``, ``Authorization``).
    """
    try:
        if len(value) != 2:
            return False
        key = _key_text(value[0])
        return key is not None and key.strip().lower() != "token" and looks_secret(key)
    except Exception as error:
        reraise_foreign(error)
        return False


def _bounded_items(pairs: Any, limit: int, unreadable: str) -> Iterator[tuple[Any, Any]]:
    """At most ``limit`` (key, value) pairs, read lazily; a failure mid-way ends them with a placeholder."""
    try:
        iterator = iter(pairs)
        for _ in range(limit):
            try:
                key, item = next(iterator)
            except StopIteration:
                return
            yield key, item
    except Exception as error:
        reraise_foreign(error)
        yield unreadable, ""


def _mapping_items(value: Mapping[Any, Any], limit: int) -> Iterator[tuple[Any, Any]]:
    """The items of a mapping, only as many as can be shown (each takes at least one character)."""
    try:
        items = value.items()
    except Exception as error:
        reraise_foreign(error)
        items = None
    return _bounded_items(items, limit, "<unreadable mapping>")


def _fields(value: Any, limit: int) -> Iterator[tuple[Any, Any]] | None:
    """Named fields of a dataclass, named tuple or plain object (``object.__repr__``); None for other values."""
    try:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = ((f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value) if f.repr)
            return _bounded_items(fields, limit, "<unreadable fields>")
        cls = type(value)
        names = getattr(cls, "_fields", None)
        if isinstance(value, tuple) and isinstance(names, tuple):
            pairs = list(zip(names, value, strict=False))
            if len(pairs) == 2 and _secret_key(pairs[0][1]):  # Header(name="Authorization", value=...)
                pairs[1] = (pairs[1][0], _MASKED)
            return _bounded_items(pairs, limit, "<unreadable fields>")
        # Only a class that kept object's repr: a custom __repr__ decides itself what it shows.
        if getattr(cls, "__repr__", None) is object.__repr__ and not isinstance(value, type):
            attrs = object.__getattribute__(value, "__dict__")
            if isinstance(attrs, dict):
                return _bounded_items(attrs.items(), limit, "<unreadable fields>")
    except AttributeError:
        return None  # no __dict__ (slots, builtins): the plain repr shows no attribute values
    except Exception as error:
        reraise_foreign(error)
        return iter([("<unreadable fields>", "")])
    return None


def render(value: Any, limit: int) -> str:
    """``repr(value)`` with secret-looking keys and fields redacted, cut to ``limit`` characters."""
    out = _Render(limit + 1)
    try:
        out.value(value, 0)
    except RecursionError:
        out.emit(_ELLIPSIS)
    return "".join(out.parts)


# -- the entry point ---------------------------------------------------------------------------


def _settings() -> tuple[int, Callable[[str, Any], Any] | None]:
    from .tracer import get_config

    config = get_config()
    if config is None:
        return 1000, None
    return config.capture_max_length, config.redact


def capture_value(key: str, value: Any) -> Any:
    """The attribute value kept for an argument or result named ``key`` (see the module docstring)."""
    limit, redact = _settings()
    if looks_secret(key):
        return REDACTED
    if redact is not None:
        try:
            value = redact(key, value)
        except Exception as error:
            reraise_foreign(error)
            return REDACTED  # a failing redactor must not leak what it was meant to hide
    if value is REDACTED:
        return REDACTED
    cls = type(value)
    if cls is bool or cls is int or cls is float:
        return value
    if isinstance(value, str):
        text = str.__getitem__(value, slice(0, limit + 1))  # no overridden method of a str subclass runs
    else:
        try:
            text = render(value, limit)
        except Exception as error:
            reraise_foreign(error)
            text = safe_str(value)[: limit + 1]
    if len(text) > limit:
        # A cut inside "scheme://user:pass" leaves no "@" for the URL rule to find. The "…" is added after
        # masking, so a value cut inside a quote ("password='[REDAC") still shows that it was cut.
        return redact_text(_URL_TAIL.sub(_mask_url_tail, text[:limit])) + _ELLIPSIS
    return redact_text(text)


def _mask_url_tail(match: re.Match[str]) -> str:
    password = match.group("password")
    return match.group(0) if not password or password.isdigit() else match.group("head") + REDACTED
