"""What ``capture_args`` / ``capture_result`` keep: redacted, truncated text; and the text rule used elsewhere.

The secret rules (names, text, URLs) are in ``_secrets`` and the bounded repr in
``_render``; this module is their public home and does the capturing itself.

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

import re
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import reraise_foreign
from ._render import _ELLIPSIS, _ArraySummary, render
from ._render import array_summary as array_summary
from ._secrets import _URL_TAIL
from ._secrets import REDACTED as REDACTED
from ._secrets import URL_REDACTED as URL_REDACTED
from ._secrets import looks_secret as looks_secret
from ._secrets import redact_exception_attributes as redact_exception_attributes
from ._secrets import redact_path as redact_path
from ._secrets import redact_query as redact_query
from ._secrets import redact_text as redact_text
from ._secrets import redact_url as redact_url
from ._secrets import redact_userinfo as redact_userinfo
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

# -- the entry point ---------------------------------------------------------------------------


def _settings() -> tuple[int, Callable[[str, Any], Any] | None]:
    from ._state import get_config

    config = get_config()
    if config is None:
        return 1000, None
    return config.capture_max_length, config.redact


def _budget() -> int:
    from ._state import get_config

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
