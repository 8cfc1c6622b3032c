"""Which argument, attribute or parameter names look like a secret (rule 1 of ``redaction``).

A name is split into words (snake_case, kebab-case, camelCase, dots; trailing
digits dropped) and matched against the word lists below; the redaction module
docstring lists the rule in prose.
"""

from __future__ import annotations

import functools
import re

__all__ = ["looks_secret"]

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
