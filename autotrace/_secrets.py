"""Secrets in text: masking them in free text (rule 4 of ``redaction``), in URLs and paths, in exception text.

Which names look like a secret (rule 1) is ``_secret_names``; this module holds
the text rules so that capture (``redaction``), the repr renderer (``_render``)
and the HTTP middlewares share one copy.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from ._errors import reraise_foreign
from ._secret_names import _words
from ._secret_names import looks_secret as looks_secret

__all__ = [
    "REDACTED",
    "URL_REDACTED",
    "looks_secret",
    "redact_exception_attributes",
    "redact_path",
    "redact_query",
    "redact_text",
    "redact_url",
    "redact_userinfo",
]

REDACTED = "[REDACTED]"
"""What a captured secret is stored as."""

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


def redact_userinfo(url: str) -> str:
    """``url`` with its ``user:password@`` (if any) as ``REDACTED:REDACTED@``: the one rule for URL credentials.

    Used for ``url.full`` (``redact_url``) and wherever a URL is logged or shown
    (exporter endpoints, proxies). Everything else is kept as written.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    ends = [i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0]
    end = min(ends) if ends else len(rest)
    authority = rest[:end]
    if "@" not in authority:
        return url
    return f"{scheme}://{URL_REDACTED}:{URL_REDACTED}@{authority.rpartition('@')[2]}{rest[end:]}"


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
            base = redact_userinfo(f"{scheme}://{authority}") + redact_path(path)
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
