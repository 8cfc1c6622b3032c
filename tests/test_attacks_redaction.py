"""Secrets that slipped past capture and URL redaction in an outside review, and LLM names that must stay visible."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import autotrace
from autotrace import traced
from autotrace.propagation import traced_urlopen
from autotrace.redaction import looks_secret
from autotrace.testing import capture_spans
from autotrace.wsgi import TracingMiddleware

from .test_wsgi import Server, wait_for

SECRET = "Zq8vN2xW7kLp4RtY9bHc"


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
