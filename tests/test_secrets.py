"""Secrets: names that look like one, masked text, URLs and paths, exception text, credentials in URLs."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import autotrace
from autotrace import traced
from autotrace.export import OTLPHttpExporter
from autotrace.propagation import traced_urlopen
from autotrace.redaction import (
    REDACTED,
    capture_value,
    looks_secret,
    redact_path,
    redact_text,
    redact_url,
    redact_userinfo,
)
from autotrace.spans import StatusCode
from autotrace.testing import capture_spans
from autotrace.wsgi import TracingMiddleware

from .test_wsgi import Server, wait_for

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


@pytest.fixture
def serve() -> Iterator[Callable[[Any], Server]]:
    """Start loopback WSGI servers for a test and stop them afterwards."""
    servers: list[Server] = []

    def start(app: Any) -> Server:
        servers.append(Server(app))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def echo_query(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers with the path and query it received."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{environ.get('PATH_INFO')}?{environ.get('QUERY_STRING')}".encode()]


def test_traced_urlopen_redacts_sensitive_query_values(serve: Callable[[Any], Server]) -> None:
    """url.full has the semconv and secret-looking query values as REDACTED; the request itself is untouched."""
    server = serve(echo_query)
    query = f"q=1&api_key={SECRET}&sig={SECRET}&X-Goog-Signature={SECRET}&AWSAccessKeyId=AK&Signature={SECRET}"
    with capture_spans() as spans, traced_urlopen(f"{server.url}/search?{query}", timeout=10) as resp:
        received = resp.read().decode()
    assert received == f"/search?{query}"  # the server got the real query
    url = spans.one("GET").attributes["url.full"]
    assert url == (
        f"{server.url}/search?q=1&api_key=REDACTED&sig=REDACTED&X-Goog-Signature=REDACTED"
        "&AWSAccessKeyId=REDACTED&Signature=REDACTED"
    )
    assert SECRET not in json.dumps(autotrace.export_traces())


def test_wsgi_span_redacts_a_path_token_by_default(serve: Callable[[Any], Server]) -> None:
    """A /reset-password/<token> path reaches neither the span name nor url.path; ordinary paths are kept."""
    server = serve(TracingMiddleware(echo_query))
    with capture_spans() as spans:
        assert server.get(f"/reset-password/{SECRET}")[0] == 200
        assert server.get("/reset-password/abc123")[0] == 200
        assert server.get("/users/42/items")[0] == 200
        redacted = wait_for(spans, "GET /reset-password/REDACTED", 2)
        (plain,) = wait_for(spans, "GET /users/42/items")
    assert [s.attributes["url.path"] for s in redacted] == ["/reset-password/REDACTED"] * 2
    assert plain.attributes["url.path"] == "/users/42/items"
    assert SECRET not in json.dumps(autotrace.export_traces())


@pytest.mark.parametrize(
    "template",
    [["/users/{id}", "/reset-password/<token>"], lambda path: "/reset-password/<token>" if "reset" in path else None],
)
def test_wsgi_path_template_names_the_span(serve: Callable[[Any], Server], template: Any) -> None:
    """path_template (patterns or a function) gives the span name, http.route and url.path."""
    server = serve(TracingMiddleware(echo_query, path_template=template))
    with capture_spans() as spans:
        status, _, body = server.get(f"/reset-password/{SECRET}")
        (s,) = wait_for(spans, "GET /reset-password/<token>")
    assert status == 200 and body == f"/reset-password/{SECRET}?".encode()  # the app sees the real path
    assert s.name == "GET /reset-password/<token>"
    assert s.attributes["url.path"] == "/reset-password/<token>"
    assert s.attributes["http.route"] == "/reset-password/<token>"
    assert SECRET not in json.dumps(autotrace.export_traces())


def test_path_template_patterns_are_checked() -> None:
    """A pattern that is not a path is refused when the middleware is made, naming it."""
    with pytest.raises(ValueError, match="'users/<id>'"):
        TracingMiddleware(echo_query, path_template=["users/<id>"])
    with pytest.raises(TypeError, match="not one string"):
        TracingMiddleware(echo_query, path_template="/users/<id>")


def test_exception_text_is_redacted_where_it_is_recorded(serve: Callable[[Any], Server]) -> None:
    """exception.message, exception.stacktrace and the status description never hold a key from the message."""

    @traced
    def fetch() -> None:
        raise ValueError(f"GET https://api.example.com/v1?api_key={SECRET} failed (password={SECRET})")

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError(f"upstream https://user:{SECRET}@db.example.com refused")

    with pytest.raises(ValueError, match=SECRET):  # the caller still gets the real exception
        fetch()
    server = serve(TracingMiddleware(app))
    with capture_spans() as spans:
        assert server.get("/x")[0] == 500
        (request,) = wait_for(spans, "GET /x")
    assert request.status.code == StatusCode.ERROR and "REDACTED" in (request.status.description or "")
    exported = json.dumps(autotrace.export_traces())
    assert SECRET not in exported
    (failed,) = [s for trace in autotrace.get_trace_store().traces() for s in trace if s.name.endswith("fetch")]
    (event,) = failed.events
    assert "api_key=[REDACTED]" in event.attributes["exception.message"]
    assert "api_key=[REDACTED]" in event.attributes["exception.stacktrace"]
    assert failed.status.code == StatusCode.ERROR and "api_key=[REDACTED]" in (failed.status.description or "")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "/"),
        ("/users/42/items", "/users/42/items"),
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/reset-password/abc", "/reset-password/REDACTED"),
        ("/verify/123456", "/verify/REDACTED"),
        ("/api-key/xyz/rotate", "/api-key/REDACTED/rotate"),
        ("/jobs/3fa85f64-5717-4562-b3fc-2c963f66afa6", "/jobs/REDACTED"),
        ("/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage", "/REDACTED/sendMessage"),
        ("/files/sk-abcdefghijklmnopqrstuvwx", "/files/REDACTED"),
        ("/docs/introduction-to-transformers", "/docs/introduction-to-transformers"),
    ],
)
def test_redact_path_rule(path: str, expected: str) -> None:
    """Token-looking segments and the segment after a secret or one-time-link word are REDACTED; the rest stays."""
    assert redact_path(path) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://h/p?q=1", "https://h/p?q=1"),
        ("http://u:p@h:8/a?x=1#access_token=t&y=2", "http://REDACTED:REDACTED@h:8/a?x=1#access_token=REDACTED&y=2"),
        ("https://h/cb?code=abc&state=s", "https://h/cb?code=REDACTED&state=s"),
        ("https://h/?max_tokens=5&token%3D=x", "https://h/?max_tokens=5&token%3D=REDACTED"),
    ],
)
def test_redact_url_rule(url: str, expected: str) -> None:
    """userinfo, the semconv query names and secret-looking names are REDACTED; other parameters stay."""
    assert redact_url(url) == expected


class ModelUnavailable(Exception):
    """An exception class outside builtins."""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "url",
    ["http://user:p%40ss@collector:4318/v1/traces", "https://u:pw@h/x?q=1", "http://:secret@proxy:3128"],
)
def test_url_credentials_are_hidden_the_same_way_everywhere(url: str) -> None:
    """url.full, an exporter's repr and redact_userinfo all show user:password as REDACTED:REDACTED."""
    hidden = redact_userinfo(url)
    assert hidden.split("://", 1)[1].startswith("REDACTED:REDACTED@")
    assert redact_url(url).startswith(hidden.split("?", 1)[0].rsplit("/", 1)[0])
    if url.startswith("http://user"):
        shown = repr(OTLPHttpExporter(url))
        assert "REDACTED:REDACTED@collector:4318" in shown and "p%40ss" not in shown and "user" not in shown


def test_proxy_password_is_hidden_in_the_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A refused proxy URL is logged with its credentials as REDACTED:REDACTED, never the password."""
    exporter = OTLPHttpExporter(
        "http://collector.invalid:4318/v1/traces", env={"http_proxy": "socks5://me:hunter2@127.0.0.1:1080"}
    )
    exporter.shutdown()
    text = caplog.text + repr(autotrace.tracer.errors())
    assert "hunter2" not in text
    assert "REDACTED:REDACTED@127.0.0.1:1080" in caplog.text


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers with the path it received."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(environ.get("PATH_INFO")).encode()]


@traced(capture_args=True)
def send(payload: Any) -> None:
    """Takes anything; its argument is captured."""


def captured(value: Any) -> str:
    """What capture_args keeps of ``value``."""
    with capture_spans() as spans:
        send(value)
    text = spans.one("send").attributes["code.function.args.payload"]
    assert isinstance(text, str)
    return text


def test_pgp_private_key_block_is_masked() -> None:
    """An ASCII-armoured PGP private key (``PRIVATE KEY BLOCK``) is masked like a PEM key."""
    armour = f"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF{SECRET}\n=ab12\n-----END PGP PRIVATE KEY BLOCK-----\n"
    text = captured(f"key file: {armour} done")
    assert SECRET not in text
    assert text == "key file: -----BEGIN PGP PRIVATE KEY BLOCK-----[REDACTED]\n done"


def test_items_view_of_headers_is_redacted() -> None:
    """``headers.items()`` passed as an argument has its secret values masked, as the dict itself would."""
    headers = {"Authorization": f"Bearer {SECRET}", "X-Auth-Token": SECRET, "token": SECRET, "Accept": "*/*"}
    text = captured(headers.items())
    assert SECRET not in text
    assert text == (
        "dict_items({'Authorization': '[REDACTED]', 'X-Auth-Token': '[REDACTED]', 'token': '[REDACTED]', "
        "'Accept': '*/*'})"
    )
    assert headers["token"] == SECRET  # the user's dict is untouched


@pytest.mark.parametrize("name", ["JSESSIONID", "PHPSESSID", "privkey", "pass_phrase", "code_verifier", "sessid"])
def test_more_secret_key_names(name: str) -> None:
    """Session-cookie names, ``privkey``, ``pass_phrase`` and a PKCE ``code_verifier`` are secret keys."""
    assert looks_secret(name)
    assert SECRET not in captured({name: SECRET})


@pytest.mark.parametrize(
    "name",
    ["max_tokens", "token_ids", "tokenizer", "keyboard", "monkey", "turkey", "passage", "compass", "bypass",
     "past_key_values", "key_cache", "num_keys", "keypoints", "pin_memory", "privacy", "token_probs",
     "token_embeddings", "decoded_token", "token_healing", "token_to_id", "id_to_token", "vocab_token",
     "attn_key", "session_len", "session_count"],
)  # fmt: skip
def test_llm_names_stay_visible(name: str) -> None:
    """Inference names that merely contain a secret word are captured as they are."""
    assert not looks_secret(name)
    assert captured({name: 7}) == f"{{'{name}': 7}}"


def test_matrix_session_id_in_a_url_path_is_masked(serve: Callable[[Any], Server]) -> None:
    """A ``;jsessionid=`` path parameter reaches neither url.full of traced_urlopen nor the WSGI span."""
    server = serve(TracingMiddleware(echo))
    with capture_spans() as spans:
        with traced_urlopen(f"{server.url}/cart;jsessionid={SECRET};lang=en?x=1", timeout=10) as resp:
            assert resp.read().decode() == f"/cart;jsessionid={SECRET};lang=en"  # the request is untouched
        (wsgi,) = wait_for(spans, "GET /cart;jsessionid=REDACTED;lang=en")
    assert spans.one("GET").attributes["url.full"] == f"{server.url}/cart;jsessionid=REDACTED;lang=en?x=1"
    assert wsgi.attributes["url.path"] == "/cart;jsessionid=REDACTED;lang=en"
    assert SECRET not in json.dumps(autotrace.export_traces())


def test_argv_list_flag_values_are_masked() -> None:
    """A secret flag's value in an argv list is masked in captures and in a CalledProcessError's message."""
    argv = [sys.executable, "-c", "raise SystemExit(3)", "--password", SECRET, "--max-tokens", "12"]
    text = captured(argv)
    assert SECRET not in text
    assert text.endswith("'--password', '[REDACTED]', '--max-tokens', '12']")

    @traced(name="run")
    def run() -> None:
        subprocess.run(argv, check=True)

    with capture_spans() as spans, pytest.raises(subprocess.CalledProcessError) as raised:
        run()
    assert SECRET in str(raised.value)  # the caller's exception is untouched
    (event,) = spans.one("run").events
    assert "'--password', '[REDACTED]'" in str(event.attributes["exception.message"])
    assert SECRET not in json.dumps(autotrace.export_traces())


def test_url_full_masks_semicolon_and_nested_url_parameters(serve: Callable[[Any], Server]) -> None:
    """url.full masks ``;api_key=`` parameters and a token inside a percent-encoded redirect URL."""
    server = serve(echo)
    query = f"a=1;api_key={SECRET}&next=https%3A%2F%2Fe.example%2Fcb%3Ftoken%3D{SECRET}%26x%3D1&q=a%3Db"
    with capture_spans() as spans, traced_urlopen(f"{server.url}/p?{query}", timeout=10) as resp:
        assert resp.status == 200
    assert spans.one("GET").attributes["url.full"] == (
        f"{server.url}/p?a=1;api_key=REDACTED&next=https%3A%2F%2Fe.example%2Fcb%3Ftoken%3DREDACTED%26x%3D1&q=a%3Db"
    )
    assert SECRET not in json.dumps(autotrace.export_traces())


@pytest.mark.parametrize(
    "name",
    ["hf_token", "access_token", "id_token", "session_token", "session_id", "session", "token", "auth_token",
     "session_key", "csrf_token"],
)  # fmt: skip
def test_credential_names_next_to_the_llm_exemptions_stay_secret(name: str) -> None:
    """Widening the LLM exemptions keeps credential names (hf_token, session_id, session...) redacted."""
    assert looks_secret(name)
    assert SECRET not in captured({name: SECRET})


def test_json_inside_a_json_string_is_masked() -> None:
    """An event whose body is JSON held in a JSON string (escaped quotes) has its secret values masked."""
    event = json.dumps({"body": json.dumps({"password": SECRET, "max_tokens": 5}), "path": "/login"})
    text = captured(event)
    assert SECRET not in text
    assert text == '{"body": "{\\"password\\": \\"[REDACTED]\\", \\"max_tokens\\": 5}", "path": "/login"}'

    @traced(name="handler")
    def handler() -> None:
        raise ValueError(f"rejected event {event}")

    with capture_spans() as spans, pytest.raises(ValueError):
        handler()
    (exception,) = spans.one("handler").events
    assert SECRET not in str(exception.attributes["exception.message"])


def test_xml_elements_with_secret_names_are_masked() -> None:
    """``<password>x</password>`` (a SOAP body, an XML config) keeps its tags and loses its value."""
    text = captured(
        f'<login><user>bob</user><ns:ApiKey id="1">{SECRET}</ns:ApiKey><password>{SECRET}</password></login>'
    )
    assert text == (
        '<login><user>bob</user><ns:ApiKey id="1">[REDACTED]</ns:ApiKey><password>[REDACTED]</password></login>'
    )
