"""Redaction probes from an adversarial review: every secret below is masked, every inference name stays visible."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

import autotrace
from autotrace import traced
from autotrace.redaction import REDACTED, capture_value, looks_secret, redact_text

SECRET = "Zq8vN2xW7kLp4RtY9bHc"  # no key format of its own: only the name or the context can give it away

# Names the word splitter missed (run-together, digits) and names missing from the vocabulary.
SECRET_NAMES = [
    "PGPASSWORD", "dbpassword", "password1", "api_key2", "apitoken", "authtoken", "bearertoken",
    "key", "stripe_key", "subscription_key", "Ocp-Apim-Subscription-Key", "x-functions-key", "ssh_key",
    "hmac_key", "signature", "sig", "dsn", "creds", "conn_str", "pw", "passcode", "pin", "mfa_code",
    # what already worked, kept
    "apiKey", "X-Api-Key", "authorization", "Authorization", "openai_api_key", "hf_token", "client_secret",
    "password", "access_token", "AWS_SECRET_ACCESS_KEY", "AccountKey", "X-Amz-Signature", "AWSAccessKeyId",
    "X-Goog-Signature", "DB_PASS", "card_pin", "connection_string",
]  # fmt: skip

# LLM and training names that must stay visible.
VISIBLE_NAMES = [
    "max_tokens", "first_token", "input_tokens", "output_tokens", "token_count", "num_tokens", "tokens",
    "eos_token", "tokenizer", "pass_rate", "pass_at_1", "n_pass", "pin_memory", "key_len", "key_id", "keys",
    "cache_key", "sort_key", "public_key", "rng_key", "input_key", "author", "prompt", "model", "passage",
    "bypass_cache", "signal", "design", "code", "monkey", "hotkey",
]  # fmt: skip

SENTRY_KEY = "0123456789abcdef0123456789abcdef"

# (probe text, the secret it holds). Each secret must be gone from the captured value.
TEXT_PROBES = [
    (f"https://maps.example.com/api/geocode?key={SECRET}&q=paris", SECRET),
    (f"https://acct.blob.core.windows.net/c/blob.bin?sv=2022-11-02&sig={SECRET}&se=2030", SECRET),
    (f"https://b.s3.amazonaws.com/o?X-Amz-Algorithm=AWS4&X-Amz-Signature={SECRET}&X-Amz-Date=20260101", SECRET),
    (f"https://storage.googleapis.com/b/o?X-Goog-Signature={SECRET}", SECRET),
    (f"https://app.example.com/oauth/callback?code={SECRET}&state=abc", SECRET),
    (f"https://s3.amazonaws.com/b/o?AWSAccessKeyId=AKID&Signature={SECRET}&Expires=1", SECRET),
    (f"https://{SENTRY_KEY}@o1.ingest.sentry.io/1", SENTRY_KEY),
    (f"https://login.example.com/?next=%2Fcb%3Fapi_key%3D{SECRET}%26page%3D2", SECRET),
    (f"https://login.example.com/?next=%2Fcb%3Ftoken%3D{SECRET}", SECRET),
    (f"python train.py --api-key {SECRET} --epochs 3", SECRET),
    (f"psql --password {SECRET}", SECRET),
    (f"deploy --password={SECRET}", SECRET),
    (f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={SECRET}+/w==;EndpointSuffix=core.windows.net",
     SECRET),
    (f"-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA{SECRET}\n-----END RSA PRIVATE KEY-----", SECRET),
    (f"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA{SECRET}\n-----END OPENSSH PRIVATE KEY-----",
     SECRET),
    (f"key material: -----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkq{SECRET}", SECRET),  # repr'd, cut, no END
    ("stripe sk_live_51HxYzAbCdEfGhIjKlMnOpQr", "51HxYzAbCdEfGhIjKlMnOpQr"),
    ("stripe rk_test_51HxYzAbCdEfGhIjKlMnOpQr", "51HxYzAbCdEfGhIjKlMnOpQr"),
    ("openai sk-proj-AbCdEfGhIjKlMnOpQrStUvWx", "AbCdEfGhIjKlMnOpQrStUvWx"),
    ("gitlab glpat-AbCdEfGhIjKlMnOpQrSt", "AbCdEfGhIjKlMnOpQrSt"),
    ("sendgrid SG.AbCdEfGhIjKlMnOpQrStUv.WxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz012", "AbCdEfGhIjKlMnOpQrStUv"),
    ("npm npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    ("github ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    ("slack xoxb-1234567890-AbCdEfGhIjKl", "1234567890-AbCdEfGhIjKl"),
    ("aws AKIAABCDEFGHIJKLMNOP", "ABCDEFGHIJKLMNOP"),
    (f"api_key => {SECRET}", SECRET),
    (f"$password := {SECRET}", SECRET),
    (f"Authorization: Bearer {SECRET}", SECRET),
    (f"postgres://admin:{SECRET}@db/x", SECRET),
    (f"PGPASSWORD={SECRET} psql", SECRET),
    (f"{{'stripe_key': '{SECRET}'}}", SECRET),
    (f'{{"mfa_code": "{SECRET}"}}', SECRET),
]  # fmt: skip

# Text that holds no secret and must come back unchanged.
VISIBLE_TEXTS = [
    "max_tokens=16, first_token=0.2, token_count=5",
    "exit code=1 after 3 retries",
    "see http://host:8080/path and https://user@host/",
    "Bearer of bad news",
    "pin_memory=True key_len=32 pass_rate=0.9",
    "https://api.example.com/v1/chat?model=tiny&stream=true",
    "ftp://anonymous@ftp.example.com/pub",
    "a - b -- c",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names_are_redacted_as_arguments_keys_and_text(name: str) -> None:
    """A secret-looking name hides its value as an argument, as a dict key, as a field and in key=value text."""
    assert looks_secret(name)
    assert capture_value(name, SECRET) == REDACTED
    assert SECRET not in capture_value("options", {name: SECRET, "n": 1})
    assert SECRET not in capture_value("text", f"{name}={SECRET}")
    assert SECRET not in capture_value("text", f'{{"{name}": "{SECRET}"}}')


@pytest.mark.parametrize("name", VISIBLE_NAMES)
def test_inference_names_stay_visible(name: str) -> None:
    """LLM, eval and training names (token counts, pass rates, pin_memory, lookup keys) keep their values."""
    assert not looks_secret(name)
    assert capture_value(name, "value-7") == "value-7"
    assert capture_value("options", {name: 7}) == f"{{'{name}': 7}}"
    assert capture_value("text", f"{name}=7") == f"{name}=7"


@pytest.mark.parametrize(("text", "secret"), TEXT_PROBES)
def test_secrets_in_text_are_masked(text: str, secret: str) -> None:
    """Query keys and signatures, DSN keys, encoded pairs, CLI flags, connection strings, PEM keys, key formats."""
    shown = capture_value("text", text)
    assert secret not in shown
    assert REDACTED in shown
    assert secret not in redact_text(text)


@pytest.mark.parametrize("text", VISIBLE_TEXTS)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    """Text holding no secret (token counts, ports, plain users, prose) is kept as it is."""
    assert capture_value("text", text) == text


def test_arrow_pairs_mask_the_value_not_the_arrow() -> None:
    """``api_key => X`` becomes ``api_key => [REDACTED]`` (it was ``api_key =[REDACTED] X``)."""
    assert redact_text(f"api_key => {SECRET}") == f"api_key => {REDACTED}"


def test_a_query_code_is_masked_only_in_a_query() -> None:
    """``?code=`` / ``&code=`` (an OAuth code) is masked; ``code=`` in prose is not."""
    assert redact_text(f"/cb?code={SECRET}&state=1") == f"/cb?code={REDACTED}&state=1"
    assert redact_text("exit code=3") == "exit code=3"


@pytest.mark.parametrize(
    "key",
    [
        "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
        "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
        "AKIAABCDEFGHIJKLMNOP",
        "glpat-AbCdEfGhIjKlMnOpQrSt",
    ],
)
@pytest.mark.parametrize("offset", [0, 3, 12, 19])
def test_a_key_cut_by_capture_max_length_keeps_none_of_it(key: str, offset: int) -> None:
    """Text is masked before it is cut: a key crossing the length limit shows none of its characters."""
    autotrace.configure(sample_rate=1.0, capture_max_length=30)
    text = "x" * (30 - offset) + " " + key + " tail"
    shown = capture_value("text", text)
    assert len(shown) <= 31
    body = key[5:]
    assert not any(body[i : i + 4] in shown for i in range(len(body) - 3))


def test_a_key_longer_than_the_lookahead_cut_at_the_limit_is_masked() -> None:
    """A known-format key longer than the masking window, cut at the limit, is masked from its prefix on."""
    autotrace.configure(sample_rate=1.0, capture_max_length=30)
    shown = capture_value("text", "x" * 20 + " eyJ" + "a" * 5000)
    assert shown == "x" * 20 + " " + REDACTED + "…"


@dataclasses.dataclass
class HiddenField:
    user: str
    blob: str = dataclasses.field(repr=False)


@dataclasses.dataclass
class OwnRepr:
    user: str
    blob: str

    def __repr__(self) -> str:
        return f"OwnRepr(user={self.user!r})"


@dataclasses.dataclass(repr=False)
class OwnReprNoDefault:
    user: str
    blob: str

    def __repr__(self) -> str:
        return f"<{self.user}>"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (HiddenField("bob", SECRET), "HiddenField(user='bob')"),
        (OwnRepr("bob", SECRET), "OwnRepr(user='bob')"),
        (OwnReprNoDefault("bob", SECRET), "<bob>"),
        ([OwnRepr("bob", SECRET)], "[OwnRepr(user='bob')]"),
    ],
)
def test_a_dataclass_that_hides_a_field_keeps_it_hidden(value: Any, expected: str) -> None:
    """field(repr=False) and a dataclass's own __repr__ decide what is shown; fields are not rendered one by one."""
    assert capture_value("x", value) == expected


def test_probes_never_reach_the_export() -> None:
    """Through @traced capture, none of the probe secrets reaches the OTLP export."""

    @traced(capture_args=True)
    def call(text: str, options: dict[str, Any]) -> int:
        return 1

    for text, _ in TEXT_PROBES:
        call(text, {name: SECRET for name in SECRET_NAMES})
    exported = json.dumps(autotrace.export_traces())
    for text, secret in TEXT_PROBES:
        assert secret not in exported, text
    assert SECRET not in exported
