"""What ``capture_args`` / ``capture_result`` keep: redacted, truncated text; and the text rule used elsewhere.

Rules, in order, for an argument or result named ``key``:

1. A key that looks like a secret is stored as ``[REDACTED]``, whatever its
   value. The key is split into words (snake_case, kebab-case, camelCase, dots;
   trailing digits dropped, so ``password1`` and ``api_key2`` count). It is a
   secret when a word is one of password, passwd, passphrase, passcode, pwd,
   pw, secret, token, apikey, auth, authorization, credential(s), creds,
   cookie, session, jsessionid, bearer, jwt, otp, totp, signature, dsn, csrf/xsrf...; when
   two words are api/private/access/secret/signing/encryption + key, mfa/pin/
   verification/security/recovery + code, pass + phrase, code + verifier, or
   conn/connection + str/string; when
   its LAST word is key, pin, sig or pass (``stripe_key``, ``card_pin``,
   ``DB_PASS``); or when one run-together word holds password, passwd,
   passphrase, passcode, secret, credential, apikey or privatekey
   (``PGPASSWORD``) or is a credential word + token/key (``apitoken``,
   ``bearertoken``, ``sshkey``). Kept visible: token next to an LLM word
   (``max_tokens``, ``first_token``, ``token_count``, ``eos_token``,
   ``token_probs``, ``id_to_token``); session before a size (``session_len``); key, pin,
   sig and pass before another word (``key_len``, ``pin_memory``,
   ``pass_rate``); a last-word key after a lookup word (``cache_key``,
   ``sort_key``, ``public_key``, ``rng_key``, ``input_key``, ``attn_key``); pass after a count
   (``n_pass``).
2. The configured ``TraceConfig(redact=fn)`` runs as ``fn(key, value)`` and
   returns the value to keep. If it raises, the value is stored as
   ``[REDACTED]``: a broken redactor must not leak what it was meant to hide.
3. bool, int and float are kept as they are; anything else becomes text: a
   str as itself, other values as a repr in which every secret-looking key of
   a nested mapping, items view (``headers.items()``), dataclass, named tuple
   or plain object's attribute (an object whose class keeps
   ``object.__repr__``) is redacted, and so is the
   value of a ``(key, value)`` pair such as ``("Authorization", "Bearer x")``.
   An object with its own ``__repr__`` is shown by it (then masked as text); so
   is a dataclass with its own ``__repr__``, and ``field(repr=False)`` is never shown.
4. The text (up to ``capture_max_length`` + 256 characters) goes through
   ``redact_text``: ``key=value``, ``key: value``, ``"key": value``,
   ``key => value``, ``--key value``, ``--key=value``, ``'--key', 'value'`` (an
   argv list), ``<key>value</key>``, escaped ``\\"key\\": \\"value\\"`` (JSON in a JSON
   string) and percent-encoded
   ``key%3Dvalue`` with secret-looking keys, ``?code=`` in a query, ``Bearer``/
   ``Basic`` credentials, the password of ``scheme://user:password@host``, a
   token-looking user of ``scheme://KEY@host`` (a Sentry DSN), PEM and PGP private key
   blocks and well-known key formats (``sk-``, ``sk_live_``, ``ghp_``,
   ``glpat-``, ``SG.``, ``npm_``, ``xox*-``, ``AKIA``, ``hf_``, JWTs...) are
   masked. Only then is the text cut to ``capture_max_length`` characters (plus
   ``…``), so a key crossing the limit leaves none of its characters behind.

Rendering is bounded: only as much of a container as fits the length limit is
looked at, so capturing a huge list costs no more than capturing a short one.

Arrays and tensors (anything with a ``shape`` and a ``dtype``: numpy, torch, jax...)
are summarised, never shown: ``<key>.shape``, ``<key>.dtype``, ``<key>.device`` and
``<key>.nbytes`` are read from their metadata only (no ``tolist()``, ``cpu()``, ``repr``
or iteration, so no copy and no device synchronisation; numpy and torch are never
imported). A 0-d array or a numpy scalar on the CPU becomes a plain int, float or bool.
All values captured on one span share ``TraceConfig.capture_max_bytes``: past it values
are cut (ending in ``…``) or left out, and ``autotrace.capture.dropped`` counts those
left out.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import urllib.parse
from collections.abc import Callable, ItemsView, Iterator, Mapping
from typing import Any

from ._errors import reraise_foreign
from .attributes import safe_str

__all__ = [
    "REDACTED",
    "array_summary",
    "capture_into",
    "capture_value",
    "looks_secret",
    "redact_exception_attributes",
    "redact_path",
    "redact_text",
    "redact_url",
]

REDACTED = "[REDACTED]"

_MAX_DEPTH = 6
_ELLIPSIS = "…"

# Words (after splitting snake_case, kebab-case, camelCase and dots, trailing digits dropped) that mark a secret.
_SECRET_WORDS = frozenset(
    {
        "password", "passwd", "passphrase", "passcode", "pwd", "pw", "secret", "secrets", "token", "apikey",
        "auth", "authorization", "authentication", "credential", "credentials", "creds", "cookie", "cookies",
        "session", "sessionid", "bearer", "jwt", "otp", "totp", "privatekey", "accesskey", "secretkey",
        "signingkey", "clientsecret", "xsrf", "csrf", "signature", "dsn", "sessid", "jsessionid", "phpsessid",
    }
)  # fmt: skip
# Two-word secrets: "api key", "private key", "access key", "mfa code", "conn str"...
_SECRET_PAIRS = frozenset(
    {
        ("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key"), ("signing", "key"),
        ("encryption", "key"), ("set", "cookie"), ("session", "id"), ("connection", "string"),
        ("connection", "str"), ("conn", "str"), ("conn", "string"), ("mfa", "code"), ("verification", "code"),
        ("security", "code"), ("pin", "code"), ("recovery", "code"), ("backup", "code"),
        ("pass", "phrase"), ("code", "verifier"),
    }
)  # fmt: skip
# Inside one run-together word (PGPASSWORD, dbpassword, mysecretvalue): these stems are secret anywhere.
_SECRET_STEMS = ("password", "passwd", "passphrase", "passcode", "secret", "credential", "apikey", "privatekey")
# A run-together word ending in "token" or "key" is secret when it starts with one of these
# (apitoken, authtoken, bearertoken, accesskey, sshkey); maxtoken or hotkey stay visible.
_CREDENTIAL_PREFIXES = frozenset(
    {
        "api", "auth", "bearer", "access", "refresh", "id", "session", "csrf", "xsrf", "oauth", "bot", "app",
        "client", "secret", "private", "master", "admin", "account", "subscription", "ssh", "hmac", "stripe",
        "github", "gh", "gitlab", "slack", "hf", "pg", "db", "personal", "service", "signing", "encryption",
        "license", "functions", "function", "webhook", "security", "sas", "deploy", "jwt", "user", "aws",
        "priv",
    }
)  # fmt: skip
# "token" next to one of these is about LLM tokens, not credentials (max_tokens, token_count, eos_token);
# "id_token", "access_token", "refresh_token" stay secret.
_TOKEN_BEFORE = frozenset(
    {
        "max", "min", "num", "total", "next", "first", "last", "new", "prev", "eos", "bos", "pad", "stop",
        "start", "end", "unk", "sep", "cls", "mask", "special", "input", "output", "prompt", "completion",
        "generated", "sampled", "decoded", "vocab", "draft", "accepted", "to",
    }
)  # fmt: skip
_TOKEN_AFTER = frozenset(
    {
        "count", "counts", "id", "ids", "len", "length", "limit", "usage", "type", "index", "budget",
        "logprob", "logprobs", "str", "text", "position", "pos", "probability", "prob", "score", "probs",
        "logits", "embedding", "embeddings", "embeds", "healing", "to",
    }
)  # fmt: skip
# "session" followed by one of these measures a session (session_len, session_count), it is not one.
_SESSION_AFTER = frozenset({"count", "counts", "len", "length", "timeout", "ttl", "duration", "limit", "index"})

# "pass", "pin", "sig" and "key" are secrets only as the last word of a name: DB_PASS, card_pin, url_sig,
# stripe_key; pass_rate, pin_memory, sig_level and key_len stay visible.
_LAST_WORD_SECRETS = frozenset({"pass", "pin", "sig", "key"})
# ...and not after a word saying what they count or look up: n_pass, cache_key, public_key, rng_key.
_COUNT_BEFORE = frozenset({"n", "num", "number", "total", "max", "min", "first", "second", "last", "test", "tests"})
_LOOKUP_BEFORE = frozenset(
    {
        "public", "primary", "foreign", "sort", "cache", "partition", "hash", "range", "row", "column", "dict",
        "map", "lookup", "group", "index", "unique", "composite", "shard", "routing", "order", "rng", "prng",
        "random", "seed", "idempotency", "dedup", "dedupe", "object", "s3", "redis", "label", "field", "attr",
        "attribute", "config", "metric", "feature", "batch", "input", "output", "prompt", "memory", "text",
        "image", "result", "response", "question", "answer", "context", "doc", "document", "message", "event",
        "name", "id", "node", "item", "record", "state", "dataset", "sample", "join", "bucket", "hot", "short",
        "next", "prev", "parent", "child", "root", "top", "kv", "sub", "attn", "attention", "cross",
    }
)  # fmt: skip
_NOT_SECRET_BEFORE = {"pass": _COUNT_BEFORE, "key": _LOOKUP_BEFORE}

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SPLIT = re.compile(r"[^A-Za-z0-9]+")


def _words(key: str) -> list[str]:
    out = []
    for word in _SPLIT.split(_CAMEL.sub("_", key)):
        if word:
            word = word.lower()
            out.append(word.rstrip("0123456789") or word)  # password1, api_key2
    return out


def looks_secret(key: str) -> bool:
    """True when a key names something that must not be stored (``api_key``, ``Authorization``...).

    Inference words that merely contain one of these stay visible:
    ``max_tokens``, ``token_count``, ``tokenizer``, ``author``, ``pin_memory``, ``key_len``.
    """
    return isinstance(key, str) and _looks_secret(str.__str__(key)[:200])


@functools.lru_cache(maxsize=4096)  # the same few names come back on every call
def _looks_secret(key: str) -> bool:
    words = _words(key)
    if not words:
        return False
    last = words[-1]
    if last in _LAST_WORD_SECRETS and (len(words) == 1 or words[-2] not in _NOT_SECRET_BEFORE.get(last, ())):
        return True
    for i, word in enumerate(words):
        if word in _SECRET_WORDS:
            if word == "token" and (
                (i and words[i - 1] in _TOKEN_BEFORE) or (i + 1 < len(words) and words[i + 1] in _TOKEN_AFTER)
            ):
                continue
            if word == "session" and i + 1 < len(words) and words[i + 1] in _SESSION_AFTER:
                continue  # session_len, session_count: sizes, not the session's key
            return True
        if i and (words[i - 1], word) in _SECRET_PAIRS:
            return True
        if len(word) > 5 and _run_together_secret(word):
            return True
    return False


def _run_together_secret(word: str) -> bool:
    """A word of several run together: PGPASSWORD, dbpassword, apitoken, bearertoken, sshkey."""
    if any(stem in word for stem in _SECRET_STEMS):
        return True
    return (word.endswith("token") and word[:-5] in _CREDENTIAL_PREFIXES) or (
        word.endswith("key") and word[:-3] in _CREDENTIAL_PREFIXES
    )


# -- text patterns, applied to the final text ---------------------------------------------------

_KEY_CHARS = r"[A-Za-z0-9_.\-]*"
# key=value, key: value, "key": "value", 'key': 'value' (the key checked with looks_secret).
# "=>" (Ruby, PHP, Perl) and ":=" too: "api_key => X" masks X, not the ">".
# The quotes may be escaped: JSON held in a JSON string ({"body": "{\"password\": \"x\"}"}).
_PAIR = re.compile(
    r"""(?<![A-Za-z0-9_.\-])(?:\\?["'])?(?P<name>[A-Za-z]""" + _KEY_CHARS + r""")(?:\\?["'])?\s*(?:=>|:=|==|[=:])\s*"""
)
# Names secret only in a URL query: "?code=" is an OAuth authorization code; "code=" elsewhere is prose.
_QUERY_SECRETS = frozenset({"code"})
# A pair inside a percent-encoded URL ("%3Fapi_key%3DX%26"): the name starts after %3F, %26 or a non-name
# character, the value runs to the next %26 or separator.
_ENCODED_PAIR = re.compile(
    r"(?:(?<=%3F)|(?<=%3f)|(?<=%26)|(?<![A-Za-z0-9_.\-%]))(?P<name>[A-Za-z]"
    + _KEY_CHARS
    + r")%3[Dd](?P<value>(?:(?!%26)[^\s&;,\"'<>])+)"
)
# Command-line flags: "--api-key X", "--password=X" (a value starting with "-" is the next flag).
_FLAG = re.compile(
    r"""(?<![\w-])--(?P<name>[A-Za-z][A-Za-z0-9_\-]*)(?:=|[ \t]+)(?P<value>"[^"]*"|'[^']*'|[^\s"'-]\S*)"""
)
# A flag and its value as items of a repr'd argv list: "['tool', '--password', 'x']" (a CalledProcessError).
_LIST_FLAG = re.compile(
    r"""(?P<q>['"])--(?P<name>[A-Za-z][A-Za-z0-9_\-]*)(?P=q),[ \t]*(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
)
# An XML element with a secret-looking name: <password>x</password>, <ns:ApiKey>x</ns:ApiKey>.
_XML_ELEMENT = re.compile(
    r"<(?P<tag>(?:[A-Za-z_][\w.\-]*:)?(?P<name>[A-Za-z_][\w.\-]*))(?:\s[^<>]*)?>(?P<value>[^<]*)</(?P=tag)\s*>"
)
# A PEM private key block, to its END line or to the end of a cut text.
# PGP armour says "PRIVATE KEY BLOCK".
_PEM = re.compile(
    r"-----BEGIN (?P<kind>[A-Z0-9 ]{0,40})PRIVATE KEY(?P<block> BLOCK)?-----.*?"
    r"(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.S,
)
# scheme://KEY@host with no password: a token-looking user (16+ characters, a digit) is a key, as in a Sentry DSN.
_URL_USER_KEY = re.compile(
    r"(?P<head>(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://)(?=[A-Za-z_\-]*[0-9])(?P<user>[A-Za-z0-9_\-]{16,})(?=@)"
)
# Where a value ends: the matching quote, or the first separator. Found only after a
# secret key, so scanning stays linear in the text.
_QUOTED = {q: re.compile(q + r"(?:[^" + q + r"\\]|\\.)*" + q + "?") for q in ("'", '"')}
_UNQUOTED_END = re.compile(r"[\s,;&)}\]]|%26")
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
    r"|xox[abposre]-[A-Za-z0-9\-]{10,}|(?:AKIA|ASIA)[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{35}|hf_[A-Za-z0-9]{30,}"
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{10,}|glpat-[A-Za-z0-9_\-]{16,}|SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}"
    r"|npm_[A-Za-z0-9]{30,}"
    r"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,})"
)


def _mask_pairs(text: str) -> str:
    out: list[str] = []
    pos = 0
    for match in _PAIR.finditer(text):
        start = match.end()
        if match.start() < pos:
            continue  # inside a value already masked
        name = match.group("name")
        if not looks_secret(name) and not (
            name.lower() in _QUERY_SECRETS and match.start() and text[match.start() - 1] in "?&"
        ):
            continue
        quoted = _QUOTED.get(text[start : start + 1])
        if text[start : start + 1] == "\\" and text[start + 1 : start + 2] in ("'", '"'):  # an escaped quote
            quote = text[start : start + 2]
            close = text.find(quote, start + 2)
            end = close + 2 if close >= 0 else len(text)
            masked = f"{quote}{REDACTED}{quote}"
        elif quoted is not None:
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


def _mask_named(match: re.Match[str]) -> str:
    """The match with its ``value`` group masked when its ``name`` looks secret."""
    if not looks_secret(match.group("name")):
        return match.group(0)
    head = match.group(0)[: match.start("value") - match.start()]
    return head + REDACTED


def _mask_list_flag(match: re.Match[str]) -> str:
    """The next list item after a secret-looking flag item, masked (its quotes kept)."""
    if not looks_secret(match.group("name")):
        return match.group(0)
    quote = match.group("value")[0]
    return match.group(0)[: match.start("value") - match.start()] + f"{quote}{REDACTED}{quote}"


def _mask_xml(match: re.Match[str]) -> str:
    """An XML element's text masked when its name looks secret."""
    if not match.group("value") or not looks_secret(match.group("name")):
        return match.group(0)
    whole = match.group(0)
    start, end = match.start("value") - match.start(), match.end("value") - match.start()
    return whole[:start] + REDACTED + whole[end:]


def redact_text(text: str) -> str:
    """Mask secrets left in free text (see the module docstring, rule 4); the rest is kept as it is."""
    if "PRIVATE KEY" in text:
        text = _PEM.sub(
            lambda m: f"-----BEGIN {m.group('kind')}PRIVATE KEY{m.group('block') or ''}-----{REDACTED}", text
        )
    text = _URL_USERINFO.sub(lambda m: m.group("head") + REDACTED, text)
    text = _URL_USER_KEY.sub(lambda m: m.group("head") + REDACTED, text)
    if "--" in text:
        text = _FLAG.sub(_mask_named, text)
        text = _LIST_FLAG.sub(_mask_list_flag, text)
    if "%3" in text:
        text = _ENCODED_PAIR.sub(_mask_named, text)
    if "</" in text:
        text = _XML_ELEMENT.sub(_mask_xml, text)
    text = _mask_pairs(text)  # after the URL rules: "Authorization: Bearer x" is masked whole, scheme word included
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
        summary = array_summary(value)
        if summary is not None:  # an array or tensor inside a container: its metadata, never its values
            return self.emit(repr(summary.scalar) if summary.scalar is not None else summary.text())
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
        if isinstance(value, ItemsView):  # headers.items(): a mapping's pairs, its secret keys masked alike
            pairs = _bounded_items(value, self.budget, "<unreadable mapping>")
            return self.emit(f"{_type_name(value)}(") and self.items("{", "}", pairs, depth, ": ") and self.emit(")")
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
            if not _generated_repr(type(value)):
                return None  # its own __repr__ decides what it shows (then masked as text)
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


def _generated_repr(cls: type) -> bool:
    """Whether a dataclass's ``__repr__`` is the one @dataclass wrote (fields with repr=True, in order).

    That one is built from source text with exec() and wrapped against recursion, so it has a
    ``__wrapped__`` whose code comes from ``<string>``; a __repr__ written in a class body does not.
    """
    wrapped = getattr(getattr(cls, "__repr__", None), "__wrapped__", None)
    code = getattr(wrapped, "__code__", None)
    return code is not None and code.co_filename == "<string>" and code.co_name == "__repr__"


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


def _budget() -> int:
    from .tracer import get_config

    config = get_config()
    return DEFAULT_CAPTURE_MAX_BYTES if config is None else config.capture_max_bytes


def capture_value(key: str, value: Any, *, max_length: int | None = None) -> Any:
    """The attribute value kept for an argument or result named ``key`` (see the module docstring).

    An array-like becomes a one-line summary here (``capture_into`` writes its parts as
    attributes of their own); ``max_length`` lowers ``capture_max_length`` for this value.
    """
    limit, redact = _settings()
    if max_length is not None:
        limit = max(1, min(limit, max_length))
    value = _prepared(key, value, redact)
    if value is REDACTED:
        return REDACTED
    cls = type(value)
    if cls is bool or cls is int or cls is float:
        return value
    if cls is _ArraySummary:
        return _cut(value.text(), limit)
    return _text(value, limit)


def _prepared(key: str, value: Any, redact: Callable[[str, Any], Any] | None) -> Any:
    """``value`` after the name rule and the user's redactor, with numbers as numbers and arrays summarised."""
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
    if cls is bool or cls is int or cls is float or cls is str:
        return value
    summary = array_summary(value)
    if summary is not None:
        return summary.scalar if summary.scalar is not None else summary
    return value


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + _ELLIPSIS


def _text(value: Any, limit: int) -> str:
    """``value`` as redacted text cut to ``limit`` characters (rules 3 and 4)."""
    # Redacted before it is cut: a key cut at the limit is no longer recognisable (its first characters
    # would be kept), so a window _LOOKAHEAD characters past the limit is masked first, then cut.
    window = limit + _LOOKAHEAD
    if isinstance(value, str):
        text = str.__getitem__(value, slice(0, window + 1))  # no overridden method of a str subclass runs
    else:
        try:
            text = render(value, window)
        except Exception as error:
            reraise_foreign(error)
            text = safe_str(value)[: window + 1]
    cut = len(text) > window
    if cut:
        text = _drop_trailing_token(text[:window], limit)  # a secret cut by the window itself
    text = redact_text(text)
    if cut or len(text) > limit:
        # A cut inside "scheme://user:pass" leaves no "@" for the URL rule to find, and a key longer than
        # the window cut at the limit keeps only its prefix. The "…" is added after masking, so a value cut
        # inside a quote ("password='[REDAC") still shows that it was cut.
        return _mask_cut_key(redact_text(_URL_TAIL.sub(_mask_url_tail, text[:limit]))) + _ELLIPSIS
    return text


# -- arrays and tensors: metadata only ------------------------------------------------------------

_NOT_ARRAYS = (str, bytes, bytearray, list, tuple, dict, set, frozenset, type(None), type)
_MAX_DIMS = 64


class _ArraySummary:
    """What is kept of an array-like: its shape, dtype, device and size, or its value when it is a CPU scalar."""

    __slots__ = ("device", "dtype", "nbytes", "scalar", "shape", "type_name")

    def __init__(self) -> None:
        self.shape: list[int] = []
        self.dtype = ""
        self.device: str | None = None
        self.nbytes: int | None = None
        self.scalar: bool | int | float | None = None
        self.type_name = ""

    def attributes(self, prefix: str) -> dict[str, Any]:
        """``prefix.shape``, ``prefix.dtype``, ``prefix.device``, ``prefix.nbytes`` (those known)."""
        out: dict[str, Any] = {f"{prefix}.shape": self.shape, f"{prefix}.dtype": self.dtype}
        if self.device is not None:
            out[f"{prefix}.device"] = self.device
        if self.nbytes is not None:
            out[f"{prefix}.nbytes"] = self.nbytes
        return out

    def text(self) -> str:
        """One line for a value shown inside text: ``Tensor(shape=[1, 512], dtype=float16, device=cuda:0)``."""
        shape = ", ".join(str(d) for d in self.shape)
        device = f", device={self.device}" if self.device is not None else ""
        return f"{self.type_name}(shape=[{shape}], dtype={self.dtype}{device})"


def _metadata_text(value: Any) -> str:
    text = safe_str(value)[:64]
    return text[6:] if text.startswith("torch.") else text  # torch.float16 -> float16, as numpy names it


def array_summary(value: Any) -> _ArraySummary | None:
    """The summary of an array-like (``shape`` and ``dtype``: numpy, torch, jax...); None for other values.

    Only metadata is read: never the data (no ``tolist``, ``cpu``, ``numpy``, ``repr``
    or iteration), so a 10^8-element array or a CUDA tensor costs what a small one
    does and no device is synchronised. A 0-d array on the CPU (a numpy scalar is
    one) is read with ``item()``: that copies one number and syncs nothing.
    """
    if isinstance(value, _NOT_ARRAYS):
        return None
    try:
        shape = getattr(value, "shape", None)
        if not isinstance(shape, (tuple, list)) or len(shape) > _MAX_DIMS:
            return None  # a shape is a tuple (torch.Size is one); a Mock's or a DataFrame's attribute is not
        dtype = getattr(value, "dtype", None)
        if dtype is None:
            return None
        summary = _ArraySummary()
        summary.shape = [_dim(d) for d in shape]
        summary.dtype = _metadata_text(dtype)
        summary.type_name = _type_name(value)
        device = getattr(value, "device", None)
        if device is not None:
            summary.device = _metadata_text(device)
        nbytes = getattr(value, "nbytes", None)
        if isinstance(nbytes, int) and not isinstance(nbytes, bool):
            summary.nbytes = int(nbytes)
        else:
            itemsize = getattr(dtype, "itemsize", None)
            if isinstance(itemsize, int) and all(d >= 0 for d in summary.shape):
                size = itemsize
                for d in summary.shape:
                    size *= d
                summary.nbytes = size
    except Exception:
        return None
    if not summary.shape and summary.device in (None, "cpu"):
        # Only on the CPU: item() on a CUDA tensor waits for the device.
        try:
            item = value.item()
        except Exception:
            item = None
        if type(item) in (bool, int, float):
            summary.scalar = item
    return summary


def _dim(d: Any) -> int:
    if type(d) is int:
        return d
    try:
        return int(d)  # a numpy integer; an unknown (None) or NaN dimension is -1
    except Exception:
        return -1


# -- the per-span budget -----------------------------------------------------------------------

DEFAULT_CAPTURE_MAX_BYTES = 4096
"""TraceConfig.capture_max_bytes by default: all values captured on one span together."""

CAPTURED_PREFIXES = (
    "code.function.args.",
    "code.function.result",
    "input.value",
    "output.value",
    "gen_ai.input.",
    "gen_ai.output.",
    "llm.input_messages.",
    "llm.output_messages.",
)
"""Attribute keys whose values count against a span's capture budget."""

DROPPED_KEY = "autotrace.capture.dropped"
"""How many captured values a span left out because its byte budget was spent."""

_NUMBER_COST = 8
_MIN_TEXT = 16  # less room than this left: the value is left out rather than cut to a stub


def _cost(value: Any) -> int:
    if type(value) is str:
        return len(value.encode("utf-8", "replace")) if not value.isascii() else len(value)
    if isinstance(value, (list, tuple)):
        return sum(_cost(v) for v in value)
    return _NUMBER_COST


def captured_bytes(attributes: Mapping[str, Any]) -> int:
    """Bytes a span's captured values take already (keys under ``CAPTURED_PREFIXES``)."""
    return sum(_cost(v) for k, v in attributes.items() if k.startswith(CAPTURED_PREFIXES))


def capture_into(span: Any, items: Any) -> None:
    """Write ``(attribute key, name, value)`` items on ``span``, redacted, summarised and within its byte budget.

    The budget (``TraceConfig.capture_max_bytes``) covers every value captured on the
    span, those written before included: past it a text is cut (``…``) and then left
    out; ``autotrace.capture.dropped`` counts the values left out.
    """
    limit, redact = _settings()
    attributes = span.attributes
    left = _budget() - captured_bytes(attributes)
    dropped = 0
    for attr_key, name, raw in items:
        value = _prepared(name, raw, redact)
        if type(value) is _ArraySummary:
            parts = value.attributes(attr_key)
            cost = sum(_cost(v) for v in parts.values())
            if cost > left:
                dropped += 1
                continue
            span.set_attributes(parts)
            left -= cost
            continue
        cls = type(value)
        if cls is bool or cls is int or cls is float:
            if left < _NUMBER_COST:
                dropped += 1
                continue
            span.set_attribute(attr_key, value)
            left -= _NUMBER_COST
            continue
        room = min(limit, left - len(_ELLIPSIS.encode()))
        if room < _MIN_TEXT and left < limit:
            dropped += 1
            continue
        text = value if value is REDACTED else _text(value, max(1, room))
        cost = _cost(text)
        while cost > left and len(text) > _MIN_TEXT:  # multi-byte characters: cut again until it fits
            text = text[: max(_MIN_TEXT, len(text) * left // cost - 1)] + _ELLIPSIS
            cost = _cost(text)
        if cost > left:
            dropped += 1
            continue
        span.set_attribute(attr_key, text)
        left -= cost
    if dropped:
        span.set_attribute(DROPPED_KEY, int(attributes.get(DROPPED_KEY, 0) or 0) + dropped)


_LOOKAHEAD = 256
"""Characters past capture_max_length masked before the cut: longer than the key formats recognised."""

# The start of a well-known key format: a text cut inside such a key masks what is left of it.
_KEY_PREFIX = re.compile(
    r"(?:sk-|[sr]k_(?:live|test)_|gh[pousr]_|github_pat_|xox[abposre]-|AKIA|ASIA|AIza|hf_|glpat-|SG\.|npm_|eyJ)"
)

_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-+/=.~%")


def _mask_cut_key(text: str) -> str:
    """``text`` with the run of key characters it ends with masked when that run starts like a known key."""
    start = len(text)
    while start and text[start - 1] in _TOKEN_CHARS:
        start -= 1
    if start < len(text) and _KEY_PREFIX.match(text, start) and (start == 0 or not text[start - 1].isalnum()):
        return text[:start] + REDACTED
    return text


def _drop_trailing_token(text: str, keep: int) -> str:
    """``text`` without the run of key characters it ends with (a key the window cut in two), down to ``keep``."""
    end = len(text)
    while end > keep and text[end - 1] in _TOKEN_CHARS:
        end -= 1
    return text[:end]


def _mask_url_tail(match: re.Match[str]) -> str:
    password = match.group("password")
    return match.group(0) if not password or password.isdigit() else match.group("head") + REDACTED


# -- URLs, paths and exception text outside capture ---------------------------------------------

URL_REDACTED = "REDACTED"
"""What replaces a credential in ``url.full`` / ``url.path`` (the OpenTelemetry HTTP conventions' word)."""

# The semantic conventions' list (AWSAccessKeyId, Signature, sig, X-Goog-Signature) is covered by looks_secret;
# "code" is an OAuth authorization code only in a query.
_URL_SECRET_PARAMS = frozenset({"awsaccesskeyid", "signature", "sig", "x-goog-signature", "code"})


def _secret_param(name: str) -> bool:
    try:
        name = urllib.parse.unquote_plus(name)
    except Exception as error:
        reraise_foreign(error)
    return name.lower() in _URL_SECRET_PARAMS or looks_secret(name)


def redact_query(text: str) -> str:
    """``a=1&key=x`` with the values of secret-looking names replaced by REDACTED.

    ``;`` separates parameters too for some servers (``a=1;key=x``): a secret-looking
    name after one has the rest of its parameter replaced. A value that is itself a
    percent-encoded URL (``?next=https%3A%2F%2Fh%2F%3Ftoken%3Dx``) has its
    secret-looking parameters replaced too.
    """
    out = []
    for item in text.split("&"):
        name, eq, value = item.partition("=")
        if eq and value and _secret_param(name):
            item = f"{name}={URL_REDACTED}"
        else:
            if ";" in value:
                parts = value.split(";")
                for j in range(1, len(parts)):
                    inner, inner_eq, inner_value = parts[j].partition("=")
                    if inner_eq and inner_value and _secret_param(inner):
                        value = ";".join(parts[:j]) + f";{inner}={URL_REDACTED}"
                        break
            if "%3" in value:
                value = _ENCODED_PAIR.sub(_mask_encoded_param, value)
            item = name + eq + value
        out.append(item)
    return "&".join(out)


def _mask_encoded_param(match: re.Match[str]) -> str:
    """A percent-encoded ``name%3Dvalue`` with its value replaced by REDACTED when the name looks secret."""
    if not _secret_param(match.group("name")):
        return match.group(0)
    return match.group(0)[: match.start("value") - match.start()] + URL_REDACTED


def redact_url(url: str) -> str:
    """``url`` as ``url.full`` may record it: credentials and sensitive query values replaced by ``REDACTED``.

    As the OpenTelemetry HTTP conventions ask: ``user:password@`` becomes
    ``REDACTED:REDACTED@``, and the value of every query (or fragment) parameter
    named in their list (AWSAccessKeyId, Signature, sig, X-Goog-Signature), named
    ``code``, or with a name ``looks_secret`` accepts becomes ``REDACTED`` (also after a
    ``;`` separator, and inside a percent-encoded URL given as a value). The
    path goes through ``redact_path``. Everything else is kept as written.
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
            base = f"{scheme}://{authority}{redact_path(path)}"
        else:
            base = redact_path(base)
        return base + qmark + redact_query(query) + hash_ + (redact_query(fragment) if "=" in fragment else fragment)
    except Exception as error:
        reraise_foreign(error)
        return URL_REDACTED  # never the raw URL when it cannot be read


# A path segment that looks like a token: 16+ characters of a key's alphabet with letters and digits.
_TOKEN_SEGMENT = re.compile(r"(?=[^/]*[0-9])(?=[^/]*[A-Za-z])[A-Za-z0-9_\-.~=+%:]{16,}")
# A segment after one of these carries a one-time secret: /reset-password/<token>, /verify/<code>.
_SECRET_BEFORE_WORDS = frozenset(
    {
        "reset", "verify", "verification", "confirm", "confirmation", "activate", "activation", "invite",
        "invitation", "magic", "unsubscribe", "recover", "recovery", "otp", "share", "download",
    }
)  # fmt: skip


def _secret_segment_before(segment: str) -> bool:
    if not segment:
        return False
    if looks_secret(segment):
        return True
    return any(word in _SECRET_BEFORE_WORDS for word in _words(segment[:100]))


def redact_path(path: str) -> str:
    """A URL path with its secret-looking segments replaced by ``REDACTED``.

    A segment is replaced when it looks like a token (16 or more characters of
    letters, digits and ``_-.~=+%:``, with at least one letter and one digit:
    random tokens, and also hex ids and UUIDs), when the segment before it names a
    secret or a one-time link (``/reset-password/<token>``, ``/api-key/<key>``,
    ``/verify/<code>``, ``/invite/<code>``), or when it holds a well-known key format;
    the value of a secret-looking ``;name=value`` parameter (``;jsessionid=``) is replaced too.
    """
    if not path or path == "/":
        return path
    segments = path.split("/")
    changed = False
    for i, segment in enumerate(segments):
        if not segment:
            continue
        if (
            _TOKEN_SEGMENT.fullmatch(segment)
            or (i and _secret_segment_before(segments[i - 1]))
            or _KNOWN_FORMATS.search(segment)
        ):
            segments[i] = URL_REDACTED
            changed = True
        elif ";" in segment:  # matrix parameters: /cart;jsessionid=<id>
            masked = _redact_matrix(segment)
            changed = changed or masked is not segment
            segments[i] = masked
    return "/".join(segments) if changed else path


def _redact_matrix(segment: str) -> str:
    """A path segment's ``;name=value`` parameters with the values of secret-looking names replaced."""
    head, *params = segment.split(";")
    masked = [
        f"{name}={URL_REDACTED}" if eq and value and _secret_param(name) else f"{name}{eq}{value}"
        for name, eq, value in (param.partition("=") for param in params)
    ]
    return segment if masked == params else ";".join([head, *masked])


def redact_exception_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    """``exception.message`` and ``exception.stacktrace`` of an exception event passed through ``redact_text``.

    Messages often carry a URL with a key, or a connection string; the stack text
    repeats them and shows source lines. Changed in place; returns ``attrs``.
    """
    for key in ("exception.message", "exception.stacktrace"):
        value = attrs.get(key)
        if type(value) is str:
            try:
                attrs[key] = redact_text(value)
            except Exception as error:
                reraise_foreign(error)
                attrs[key] = REDACTED  # never the raw text when it cannot be masked
    return attrs
