"""Secrets: capture_args / capture_result redact secret-looking values, truncate, and honour a user redactor."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autotrace
from autotrace import TraceConfig, traced
from autotrace.redaction import REDACTED, capture_value, looks_secret, redact_text
from tests.stress.otlp_check import assert_valid_otlp

SECRET = "hunter2-s3cr3t-value"


def _exported_text() -> str:
    doc = autotrace.export_traces()
    assert_valid_otlp(doc)
    return json.dumps(doc)


def _args() -> dict[str, Any]:
    (trace,) = autotrace.get_trace_store().traces()
    return {k: v for k, v in trace[0].attributes.items() if k.startswith("code.function.")}


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "passwd",
        "api_key",
        "apiKey",
        "X-Api-Key",
        "openai_api_key",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "authToken",
        "Authorization",
        "auth",
        "proxy_authorization",
        "secret",
        "client_secret",
        "AWS_SECRET_ACCESS_KEY",
        "private_key",
        "cookie",
        "Set-Cookie",
        "session_id",
        "credentials",
        "db.password",
    ],
)
def test_secret_keys_are_recognised(key: str) -> None:
    """Keys naming credentials in any case or separator style look secret."""
    assert looks_secret(key)


@pytest.mark.parametrize(
    "key",
    ["prompt", "max_tokens", "tokens", "token_count", "tokenizer", "eos_token", "author", "model", "key", "n"],
)
def test_inference_words_are_not_secret(key: str) -> None:
    """Everyday inference argument names (max_tokens, tokenizer, author...) stay visible."""
    assert not looks_secret(key)


def test_secret_arguments_are_redacted_everywhere() -> None:
    """A secret passed by keyword, positionally or inside **kwargs never reaches the store or the export."""

    @traced(capture_args=True, capture_result=True)
    def call(prompt: str, api_key: str, max_tokens: int = 16, **extra: Any) -> str:
        return "ok"

    assert call("hi", SECRET, max_tokens=5, password=SECRET, headers={"Authorization": f"Bearer {SECRET}"}) == "ok"
    attrs = _args()
    assert attrs["code.function.args.prompt"] == "hi"
    assert attrs["code.function.args.api_key"] == REDACTED
    assert attrs["code.function.args.max_tokens"] == 5
    assert SECRET not in _exported_text()


@dataclasses.dataclass
class ClientConfig:
    """A dataclass with a secret field."""

    model: str
    api_key: str


Login = collections.namedtuple("Login", "user password")


class Client:
    """An object whose custom repr shows its fields."""

    def __init__(self) -> None:
        self.token = SECRET

    def __repr__(self) -> str:
        return f"Client(token={self.token!r}, url='http://x')"


@pytest.mark.parametrize(
    "value",
    [
        {"config": {"nested": {"password": SECRET}}},
        {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"password": SECRET}}}}}}}},  # deeper than rendered
        [{"api_key": SECRET}],
        ({"token": SECRET},),
        ClientConfig("tiny", SECRET),
        Login("bob", SECRET),
        [ClientConfig("tiny", SECRET)],
        Client(),
        f"Authorization: Bearer {SECRET}",
        f"https://api.example.com/v1?api_key={SECRET}&max_tokens=5",
        json.dumps({"password": SECRET, "n": 1}),
        "sk-" + "A" * 40,
        "ghp_" + "b" * 36,
        "AKIA" + "ABCDEFGHIJKLMNOP",
    ],
    ids=lambda v: type(v).__name__,
)
def test_secrets_nested_in_values_are_redacted(value: Any) -> None:
    """Secret-looking keys inside mappings, dataclasses, named tuples, object reprs and text are masked."""

    @traced(capture_args=True, capture_result=True)
    def call(payload: Any) -> Any:
        return payload

    assert call(value) is value
    attrs = _args()
    shown = attrs["code.function.args.payload"]
    assert REDACTED in shown or "…" in shown
    text = _exported_text()
    assert SECRET not in text
    for known in ("sk-" + "A" * 40, "ghp_" + "b" * 36, "AKIAABCDEFGHIJKLMNOP"):
        assert known not in text


def test_dataclass_fields_that_are_not_secret_stay_readable() -> None:
    """Redaction masks only the secret field of a dataclass; the rest is shown."""
    shown = capture_value("cfg", ClientConfig("tiny-llm", SECRET))
    assert shown == f"ClientConfig(model='tiny-llm', api_key='{REDACTED}')"
    assert capture_value("login", Login("bob", SECRET)) == f"Login(user='bob', password='{REDACTED}')"
    assert redact_text("token=abc&max_tokens=5") == f"token={REDACTED}&max_tokens=5"


def test_long_values_are_truncated_to_capture_max_length() -> None:
    """Captured text is cut to capture_max_length characters plus an ellipsis, even for huge containers."""
    autotrace.configure(sample_rate=1.0, capture_max_length=50)

    @traced(capture_args=True, capture_result=True)
    def call(text: str, items: list[int]) -> str:
        return text

    huge = list(range(2_000_000))
    assert call("y" * 10_000, huge) == "y" * 10_000
    attrs = _args()
    assert attrs["code.function.args.text"] == "y" * 50 + "…"
    assert attrs["code.function.result"] == "y" * 50 + "…"
    assert len(attrs["code.function.args.items"]) == 51
    assert attrs["code.function.args.items"].startswith("[0, 1, 2, 3")


def test_user_redactor_runs_and_can_replace_values() -> None:
    """TraceConfig(redact=fn) is called with (key, value) and its return value is what is kept."""
    seen: list[tuple[str, Any]] = []

    def redact(key: str, value: Any) -> Any:
        seen.append((key, value))
        if key == "email":
            return "<email>"
        return value

    autotrace.configure(TraceConfig(sample_rate=1.0, redact=redact))

    @traced(capture_args=True, capture_result=True)
    def register(email: str, plan: str, password: str) -> int:
        return 42

    assert register("a@b.c", "pro", SECRET) == 42
    attrs = _args()
    assert attrs["code.function.args.email"] == "<email>"
    assert attrs["code.function.args.plan"] == "pro"
    assert attrs["code.function.args.password"] == REDACTED
    assert attrs["code.function.result"] == 42
    # The built-in secret check runs first: the redactor never even sees the password.
    assert ("password", SECRET) not in seen
    assert ("email", "a@b.c") in seen and ("result", 42) in seen


def test_user_redactor_that_raises_redacts_instead_of_leaking(caplog: pytest.LogCaptureFixture) -> None:
    """A redactor that raises makes the value [REDACTED]; the call still returns and nothing leaks."""

    def broken(key: str, value: Any) -> Any:
        raise RuntimeError("redactor bug")

    autotrace.configure(sample_rate=1.0, redact=broken)

    @traced(capture_args=True, capture_result=True)
    def call(note: str) -> str:
        return SECRET

    assert call(SECRET) == SECRET
    attrs = _args()
    assert attrs["code.function.args.note"] == REDACTED
    assert attrs["code.function.result"] == REDACTED
    assert SECRET not in _exported_text()


def test_redactor_returning_unprintable_value_is_contained() -> None:
    """A redactor returning a value whose repr raises still yields a placeholder, not an exception."""

    class Opaque:
        def __repr__(self) -> str:
            raise RuntimeError("repr")

        def __str__(self) -> str:
            raise RuntimeError("str")

    autotrace.configure(sample_rate=1.0, redact=lambda key, value: Opaque())

    @traced(capture_args=True)
    def call(x: int) -> int:
        return x

    assert call(3) == 3
    assert "unprintable" in _args()["code.function.args.x"]


def test_capture_is_off_by_default() -> None:
    """Without capture_args/capture_result nothing about arguments or results is recorded."""

    @traced
    def call(password: str, prompt: str) -> str:
        return prompt

    assert call(SECRET, "hello") == "hello"
    assert _args() == {"code.function.name": _args()["code.function.name"]}
    assert SECRET not in _exported_text() and "hello" not in _exported_text()


def test_capture_on_async_and_generator_functions() -> None:
    """Async functions and generators redact their captured arguments too."""

    @traced(capture_args=True, capture_result=True)
    async def agen_call(token: str, q: str) -> str:
        return q

    @traced(capture_args=True)
    def stream(secret: str, n: int) -> Iterator[int]:
        yield from range(n)

    assert asyncio.run(agen_call(SECRET, "q")) == "q"
    assert list(stream(SECRET, 3)) == [0, 1, 2]
    spans = [s for t in autotrace.get_trace_store().traces() for s in t]
    assert len(spans) == 2
    assert SECRET not in _exported_text()


def test_capture_never_logs_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    """Even when capture fails internally, the secret does not appear in autotrace's log output."""
    caplog.set_level(logging.DEBUG, logger="autotrace")

    class Exploding(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            raise RuntimeError(f"boom {SECRET}")

    @traced(capture_args=True)
    def call(password: str, payload: Any) -> int:
        return 1

    assert call(SECRET, Exploding()) == 1
    assert SECRET not in caplog.text
    assert SECRET not in _exported_text()


_secret_keys = st.sampled_from(["password", "api_key", "Authorization", "x-api-key", "client_secret", "accessToken"])
_plain_keys = st.sampled_from(["prompt", "model", "max_tokens", "messages", "n", "user"])
_plain = st.one_of(st.integers(), st.text(max_size=20).filter(lambda s: "MARK" not in s), st.none())


@st.composite
def _payloads(draw: st.DrawFn, depth: int = 0) -> Any:
    """A nested structure (dicts, lists, tuples, dataclasses) with the secret under secret keys."""
    if depth >= 8 or draw(st.integers(0, 3)) == 0:
        return {draw(_secret_keys): SECRET, draw(_plain_keys): draw(_plain)}
    inner = draw(_payloads(depth + 1))
    shape = draw(st.sampled_from(["dict", "list", "tuple", "dataclass", "namedtuple", "json"]))
    if shape == "dict":
        return {draw(_plain_keys): inner, "other": draw(_plain)}
    if shape == "list":
        return [draw(_plain), inner]
    if shape == "tuple":
        return (inner,)
    if shape == "dataclass":
        return ClientConfig(model="m", api_key=SECRET) if depth % 2 else Wrapper(inner)
    if shape == "namedtuple":
        return Login(user=draw(_plain), password=SECRET)
    return json.dumps({"payload": draw(_plain), draw(_secret_keys): SECRET})


@dataclasses.dataclass
class Wrapper:
    """A dataclass holding any payload."""

    body: Any


@settings(max_examples=200, deadline=None)
@given(payload=_payloads(), limit=st.integers(1, 400))
def test_secret_under_a_secret_key_never_appears_in_captured_text(payload: Any, limit: int) -> None:
    """Whatever the nesting and length limit, a value under a secret-looking key is not in the captured text."""
    autotrace.configure(sample_rate=1.0, capture_max_length=limit)
    shown = capture_value("payload", payload)
    assert isinstance(shown, str)
    assert SECRET not in shown
    # A partly cut secret must not leak a useful prefix either.
    assert SECRET[:12] not in shown


def test_hostile_str_subclass_is_captured_as_its_text() -> None:
    """A str subclass whose __getitem__, __str__ and __repr__ raise is still captured, cut to the limit."""

    class Hostile(str):
        def __getitem__(self, index: Any) -> str:
            raise RuntimeError("getitem")

        def __str__(self) -> str:
            raise RuntimeError("str")

        def __repr__(self) -> str:
            raise RuntimeError("repr")

    autotrace.configure(sample_rate=1.0, capture_max_length=5)
    assert capture_value("text", Hostile("abcdefgh")) == "abcde…"
    assert type(capture_value("text", Hostile("abc"))) is str
