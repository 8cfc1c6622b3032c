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
from autotrace.redaction import _LOOKAHEAD, REDACTED, capture_value, looks_secret, redact_text
from tests.otlp_check import validate

SECRET = "hunter2-s3cr3t-value"


def _exported_text() -> str:
    doc = autotrace.export_traces()
    validate(doc)
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
    ["prompt", "max_tokens", "tokens", "token_count", "tokenizer", "eos_token", "author", "model", "keys", "n"],
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
    shape = draw(st.sampled_from(["dict", "list", "tuple", "dataclass", "namedtuple", "json", "pairs", "object"]))
    if shape == "dict":
        return {draw(_plain_keys): inner, "other": draw(_plain)}
    if shape == "list":
        return [draw(_plain), inner]
    if shape == "tuple":
        return (inner,)
    if shape == "dataclass":
        return ClientConfig(model="m", api_key=SECRET) if depth % 2 else Wrapper(inner)
    if shape == "pairs":
        return [(draw(_plain_keys), inner), (draw(_secret_keys), SECRET), (f"url{depth}", f"https://u:{SECRET}@h/")]
    if shape == "object":
        return PlainSettings()
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


def test_url_password_is_masked_in_a_real_capture() -> None:
    """The password of scheme://user:password@host in a captured argument is masked; user and host stay."""

    @traced(capture_args=True, capture_result=True)
    def connect(target: str, options: dict[str, Any]) -> str:
        return target

    dsn = f"postgres://admin:{SECRET}@db/x"
    assert connect(dsn, {"replica": f"redis://:{SECRET}@cache:6379/0"}) == dsn
    attrs = _args()
    assert attrs["code.function.args.target"] == f"postgres://admin:{REDACTED}@db/x"
    assert attrs["code.function.result"] == f"postgres://admin:{REDACTED}@db/x"
    assert attrs["code.function.args.options"] == f"{{'replica': 'redis://:{REDACTED}@cache:6379/0'}}"
    assert SECRET not in _exported_text()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgres://admin:s3cr3tpass@db/x", f"postgres://admin:{REDACTED}@db/x"),
        ("mysql://root:p@ss@host/db", f"mysql://root:{REDACTED}@host/db"),  # a raw "@" in the password
        ("see http://host:8080/path and https://user@host/", "see http://host:8080/path and https://user@host/"),
        ("ftp://anonymous@ftp.example.com/pub", "ftp://anonymous@ftp.example.com/pub"),
    ],
)
def test_url_userinfo_rule(text: str, expected: str) -> None:
    """Only a password in URL userinfo is masked: ports, users without password and hosts are kept."""
    assert capture_value("x", text) == expected


def test_url_password_cut_by_the_length_limit_is_masked() -> None:
    """A text cut inside scheme://user:password (before the "@") does not leak the start of the password."""
    autotrace.configure(sample_rate=1.0, capture_max_length=30)
    assert capture_value("x", f"postgres://admin:{SECRET}@db/x") == f"postgres://admin:{REDACTED}@db…"
    assert capture_value("x", "http://example.com:8080/" + "a" * 40) == "http://example.com:8080/" + "a" * 6 + "…"


def test_header_pairs_are_redacted_in_a_real_capture() -> None:
    """(key, value) pairs with a secret-looking key, as in header lists, have their value redacted."""

    @traced(capture_args=True)
    def call(headers: list[tuple[str, str]], pairs: list[Any], raw: list[tuple[bytes, bytes]]) -> int:
        return 1

    headers = [("Authorization", "Bearer abc"), ("Accept", "application/json")]
    raw = [(b"authorization", b"Basic " + SECRET.encode()), (b"host", b"x")]
    assert call(headers, [("password", "hunter2"), ["X-Api-Key", SECRET]], raw) == 1
    attrs = _args()
    assert attrs["code.function.args.headers"] == f"[('Authorization', '{REDACTED}'), ('Accept', 'application/json')]"
    assert attrs["code.function.args.pairs"] == f"[('password', '{REDACTED}'), ['X-Api-Key', '{REDACTED}']]"
    assert attrs["code.function.args.raw"] == f"[(b'authorization', '{REDACTED}'), (b'host', b'x')]"
    text = _exported_text()
    assert SECRET not in text and "hunter2" not in text and "Bearer abc" not in text


def test_header_pairs_nested_and_named() -> None:
    """Pairs inside mappings and two-field named tuples whose first field is a secret key are redacted too."""
    header = collections.namedtuple("header", "name value")
    assert capture_value("x", {"headers": [("Authorization", "Bearer abc")]}) == (
        f"{{'headers': [('Authorization', '{REDACTED}')]}}"
    )
    assert capture_value("x", [header("Authorization", "Bearer abc"), header("Accept", "*/*")]) == (
        f"[header(name='Authorization', value='{REDACTED}'), header(name='Accept', value='*/*')]"
    )
    # A pair whose first item is not a secret key, or a longer tuple, is shown as it is.
    shown = capture_value("x", [("model", "tiny"), ("password", "a", "b")])
    assert shown == "[('model', 'tiny'), ('password', 'a', 'b')]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc", f"Authorization: {REDACTED}"),
        ("Authorization: Bearer abc123abc123, next", f"Authorization: {REDACTED}, next"),
        ("auth=Basic zz&n=1", f"auth={REDACTED}&n=1"),
        ("Bearer ab12", f"Bearer {REDACTED}"),
        ("Token xyZ", f"Token {REDACTED}"),
        ("Bearer of bad news", "Bearer of bad news"),
        ("a Basic Income for all", "a Basic Income for all"),
        ("the bearer of the note", "the bearer of the note"),
    ],
)
def test_auth_scheme_credentials(text: str, expected: str) -> None:
    """A credential after an auth scheme is masked, short ones only when token-like; prose stays readable."""
    assert redact_text(text) == expected


@pytest.mark.parametrize("key", ["DB_PASS", "pass", "PASS", "passwd", "pwd", "smtpPass", "user.pass"])
def test_short_password_keys_are_secret(key: str) -> None:
    """pass, passwd and pwd as whole words mark a password."""
    assert looks_secret(key)
    assert capture_value(key, SECRET) == REDACTED
    assert capture_value("env", {key: SECRET}) == f"{{{key!r}: '{REDACTED}'}}"


@pytest.mark.parametrize("key", ["passage", "bypass_cache", "compass", "passenger_count"])
def test_words_containing_pass_are_not_secret(key: str) -> None:
    """A word that merely contains "pass" (passage, bypass_cache) stays visible."""
    assert not looks_secret(key)


class PlainSettings:
    """A plain object (object.__repr__) holding a secret attribute."""

    def __init__(self) -> None:
        self.model = "tiny"
        self.password = SECRET
        self.nested = {"api_key": SECRET}
        self.me = self


class Slotted:
    """An object without __dict__."""

    __slots__ = ("token",)

    def __init__(self) -> None:
        self.token = SECRET


def test_plain_object_attributes_are_rendered_and_redacted() -> None:
    """An object without its own __repr__ is shown as Class(attr=...) with secret attributes redacted."""

    @traced(capture_args=True)
    def call(settings: Any, slotted: Any) -> int:
        return 1

    assert call(PlainSettings(), Slotted()) == 1
    attrs = _args()
    assert attrs["code.function.args.settings"] == (
        f"PlainSettings(model='tiny', password='{REDACTED}', nested={{'api_key': '{REDACTED}'}}, me=<recursive>)"
    )
    assert attrs["code.function.args.slotted"].startswith("<tests.test_redaction.Slotted object at 0x")
    assert SECRET not in _exported_text()


def test_plain_object_rendering_is_bounded() -> None:
    """An object with very many attributes is cut at the length limit like a container."""
    autotrace.configure(sample_rate=1.0, capture_max_length=40)
    obj = PlainSettings()
    obj.__dict__.update({f"a{i}": i for i in range(100_000)})
    shown = capture_value("obj", obj)
    # Cut at 40 characters; masking the cut "password='[REDAC" may lengthen it a little, never more.
    assert shown == f"PlainSettings(model='tiny', password='{REDACTED}'…"
    assert SECRET not in shown and "a99999" not in shown


class CountingDict(dict):  # type: ignore[type-arg]
    """A dict that counts how many items are read through items()."""

    read = 0

    def items(self) -> Any:
        for pair in super().items():
            CountingDict.read += 1
            yield pair


def test_mapping_rendering_reads_only_what_fits() -> None:
    """A huge mapping is read lazily: only about as many items as fit the length limit are looked at."""
    autotrace.configure(sample_rate=1.0, capture_max_length=50)
    big = CountingDict((i, i) for i in range(100_000))
    CountingDict.read = 0
    shown = capture_value("big", big)
    assert shown.startswith("{0: 0, 1: 1") and shown.endswith("…")
    assert CountingDict.read <= 50 + _LOOKAHEAD + 1  # what fits, plus what is masked before the cut


def test_mapping_that_fails_mid_iteration_is_contained() -> None:
    """A mapping whose items() raises part-way shows a placeholder and never the raw repr of the rest."""

    class Failing(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            yield "password", SECRET
            raise RuntimeError(f"boom {SECRET}")

    shown = capture_value("m", Failing())
    assert shown == f"{{'password': '{REDACTED}', '<unreadable mapping>': ''}}"


@pytest.mark.parametrize("key", ["pass_rate", "pass_at_1", "pass@k", "n_pass", "num_pass", "total_pass"])
def test_evaluation_figures_named_pass_stay_visible(key: str) -> None:
    """pass@k and pass counts are what LLM evaluations report: not passwords."""
    assert not looks_secret(key)
    assert capture_value(key, 0.8) == 0.8


def test_llm_token_pairs_stay_visible_while_header_pairs_are_masked() -> None:
    """("token", "hello") pairs and ["token", "logprob"] are data; ("X-Auth-Token", ...) is a credential."""
    assert capture_value("x", ["token", "logprob"]) == "['token', 'logprob']"
    assert capture_value("x", [("token", "hello"), ("token", " world")]) == "[('token', 'hello'), ('token', ' world')]"
    assert "abc123" not in str(capture_value("x", [("X-Auth-Token", "abc123")]))
    assert "abc123" not in str(capture_value("x", [(b"authorization", b"Bearer abc123")]))
