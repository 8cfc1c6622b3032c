"""One rule each, wherever it applies: error.type from an exception, credentials in a URL."""

from __future__ import annotations

import socket
import urllib.error

import pytest

import autotrace
from autotrace import llm, span
from autotrace.export import OTLPHttpExporter
from autotrace.propagation import traced_urlopen
from autotrace.redaction import redact_url, redact_userinfo

from .conftest import all_spans


class ModelUnavailable(Exception):
    """An exception class outside builtins."""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_error_type_is_the_exception_type_everywhere() -> None:
    """error.type is the fully qualified class name (as exception.type) for outgoing calls and LLM spans alike."""
    with pytest.raises(urllib.error.URLError), span("root"):
        traced_urlopen(f"http://127.0.0.1:{_closed_port()}/", timeout=5)
    with pytest.raises(ModelUnavailable), llm(model="m"):
        raise ModelUnavailable("down")
    by_name = {s.name: s for s in all_spans()}
    client = by_name["GET"]
    assert client.attributes["error.type"] == "urllib.error.URLError"
    (llm_span,) = [s for s in all_spans() if "error.type" in s.attributes and s is not client]
    assert llm_span.attributes["error.type"] == f"{__name__}.ModelUnavailable"


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
