"""OTLP/HTTP connections: kept alive between exports, and through HTTP proxies named in the environment."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import autotrace
from autotrace.export import OTLPHttpExporter
from autotrace.spans import Span
from autotrace.testing import capture_spans

from .conftest import ForwardProxy, Receiver, closed_port


def spans(count: int, prefix: str = "s") -> list[Span]:
    """``count`` finished root spans named ``{prefix}{n}``."""
    with capture_spans() as got:
        for n in range(count):
            with autotrace.span(f"{prefix}{n}"):
                pass
    return list(got)


def eventually(check: object, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if callable(check) and check():
            return True
        time.sleep(0.02)
    return False


# -- keep-alive ------------------------------------------------------------------------------


def test_exports_share_one_kept_alive_connection(receiver: Receiver) -> None:
    """Three exports go over one TCP connection (one client port), not three."""
    exporter = OTLPHttpExporter(receiver.url, env={})
    for round_ in range(3):
        assert exporter.export(spans(2, f"r{round_}-"))
    peers = {r["peer"] for r in receiver.requests}
    assert len(receiver.requests) == 3 and len(peers) == 1
    assert receiver.closed == 0
    assert sorted(receiver.span_names()) == sorted(f"r{r}-{n}" for r in range(3) for n in range(2))


def test_a_connection_the_collector_dropped_while_idle_is_replaced_at_no_cost(receiver: Receiver) -> None:
    """The collector closes the kept connection after answering: the next export reconnects, no retry, no loss."""
    receiver.script({"close_after": True})
    exporter = OTLPHttpExporter(receiver.url, backoff_base=30.0, env={})
    assert exporter.export(spans(3, "a"))
    assert eventually(lambda: receiver.closed == 1)
    assert exporter.export(spans(3, "b"))
    assert exporter.stats() == {"exported": 6, "failed": 0, "rejected": 0, "retried": 0, "requests": 2}
    assert sorted(receiver.span_names()) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    first, second = receiver.requests
    assert first["peer"] != second["peer"]


def test_a_fresh_connection_that_fails_is_not_tried_twice() -> None:
    """Only a reused connection gets the free second attempt: a refused one is a failure, counted once."""
    exporter = OTLPHttpExporter(f"http://127.0.0.1:{closed_port()}/v1/traces", max_retries=0, env={})
    assert exporter.export(spans(2)) is False
    assert exporter.stats() == {"exported": 0, "failed": 2, "rejected": 0, "retried": 0, "requests": 1}


def test_shutdown_closes_the_kept_connection(receiver: Receiver) -> None:
    """After shutdown the idle connection is closed (the collector sees it end) and exports fail at once."""
    exporter = OTLPHttpExporter(receiver.url, env={})
    assert exporter.export(spans(1))
    assert receiver.closed == 0
    exporter.shutdown()
    assert eventually(lambda: receiver.closed == 1)
    assert exporter.export(spans(1)) is False
    assert len(receiver.requests) == 1


# -- proxies ---------------------------------------------------------------------------------


def test_http_proxy_from_the_environment_carries_the_export(receiver: Receiver, forward_proxy: ForwardProxy) -> None:
    """http_proxy: the request goes to the proxy with the collector's full URL, and the spans arrive."""
    exporter = OTLPHttpExporter(receiver.url, env={"http_proxy": f"http://{forward_proxy.address}"})
    assert exporter.export(spans(4))
    assert sorted(receiver.span_names()) == ["s0", "s1", "s2", "s3"]
    assert forward_proxy.seen == [{"method": "POST", "target": receiver.url, "auth": None}]
    assert receiver.errors == []


def test_proxy_credentials_are_sent_as_proxy_authorization(receiver: Receiver, forward_proxy: ForwardProxy) -> None:
    """user:password in the proxy URL (percent-decoded) is sent as Basic Proxy-Authorization, to the proxy only."""
    env = {"HTTP_PROXY": f"http://ops%40corp:p%3Ass@{forward_proxy.address}"}
    exporter = OTLPHttpExporter(receiver.url, env=env)
    assert exporter.export(spans(1))
    expected = "Basic " + base64.b64encode(b"ops@corp:p:ss").decode()
    assert [s["auth"] for s in forward_proxy.seen] == [expected]
    assert "Proxy-Authorization" not in receiver.requests[0]["headers"]
    assert "p:ss" not in repr(exporter)


def test_https_goes_through_a_connect_tunnel(tls_receiver: tuple[Receiver, Path], forward_proxy: ForwardProxy) -> None:
    """https_proxy: a CONNECT tunnel to the collector; TLS (and the certificate check) is end to end."""
    receiver, cert = tls_receiver
    env = {"https_proxy": f"http://u:pw@{forward_proxy.address}", "OTEL_EXPORTER_OTLP_CERTIFICATE": str(cert)}
    exporter = OTLPHttpExporter(receiver.url, env=env)
    assert exporter.export(spans(3))
    assert exporter.export(spans(2, "t"))  # the tunnel is kept alive too
    assert sorted(receiver.span_names()) == ["s0", "s1", "s2", "t0", "t1"]
    port = receiver.url.split(":")[2].split("/")[0]
    basic = "Basic " + base64.b64encode(b"u:pw").decode()
    assert forward_proxy.seen == [{"method": "CONNECT", "target": f"127.0.0.1:{port}", "auth": basic}]


def test_https_through_a_tunnel_still_checks_the_certificate(
    tls_receiver: tuple[Receiver, Path], forward_proxy: ForwardProxy
) -> None:
    """Without the CA bundle the tunnelled TLS handshake fails: the proxy does not weaken verification."""
    receiver, _ = tls_receiver
    exporter = OTLPHttpExporter(receiver.url, env={"HTTPS_PROXY": forward_proxy.address})
    assert exporter.export(spans(1)) is False
    assert exporter.stats()["failed"] == 1 and receiver.requests == []
    assert [s["method"] for s in forward_proxy.seen] == ["CONNECT"]


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "*", "localhost,127.0.0.0/8", " .example.com , 127.0.0.1:4318"])
def test_no_proxy_sends_directly(receiver: Receiver, no_proxy: str) -> None:
    """A collector that no_proxy names (name, *, CIDR, with a port) is reached directly, not via the dead proxy."""
    dead = f"http://127.0.0.1:{closed_port()}"
    exporter = OTLPHttpExporter(receiver.url, max_retries=0, env={"http_proxy": dead, "NO_PROXY": no_proxy})
    assert exporter.export(spans(1))
    assert receiver.span_names() == ["s0"]


def test_lower_case_wins_and_cgi_ignores_upper_case_http_proxy(receiver: Receiver, forward_proxy: ForwardProxy) -> None:
    """http_proxy beats HTTP_PROXY; under CGI (REQUEST_METHOD set) HTTP_PROXY is ignored (httpoxy)."""
    dead = f"http://127.0.0.1:{closed_port()}"
    live = f"http://{forward_proxy.address}"
    exporter = OTLPHttpExporter(receiver.url, max_retries=0, env={"http_proxy": live, "HTTP_PROXY": dead})
    assert exporter.export(spans(1))
    assert len(forward_proxy.seen) == 1
    cgi = OTLPHttpExporter(receiver.url, max_retries=0, env={"HTTP_PROXY": dead, "REQUEST_METHOD": "GET"})
    assert cgi.export(spans(1, "cgi"))
    assert sorted(receiver.span_names()) == ["cgi0", "s0"] and len(forward_proxy.seen) == 1


def test_an_unreachable_proxy_is_a_counted_failure_not_an_exception(receiver: Receiver) -> None:
    """A proxy that refuses connections drops the batch into the failed count; nothing is raised."""
    exporter = OTLPHttpExporter(receiver.url, max_retries=0, env={"http_proxy": f"127.0.0.1:{closed_port()}"})
    assert exporter.export(spans(2)) is False
    assert exporter.stats()["failed"] == 2 and receiver.requests == []


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("http_proxy", "socks5://u:pw@127.0.0.1:1080", "not an http:// proxy"),
        ("HTTP_PROXY", "http://:3128", "not an http:// proxy"),
        ("http_proxy", "http://proxy:99999", "is not a proxy URL"),
    ],
)
def test_a_proxy_setting_autotrace_cannot_use_is_said_once_and_exports_go_direct(
    receiver: Receiver, caplog: pytest.LogCaptureFixture, var: str, value: str, message: str
) -> None:
    """The proxy variables belong to every program (socks5:// is common): one warning naming it, then direct."""
    with caplog.at_level(logging.WARNING, logger="autotrace"):
        exporter = OTLPHttpExporter(receiver.url, env={var: value})
        assert exporter.export(spans(1))
        OTLPHttpExporter(receiver.url, env={var: value})
    assert receiver.span_names() == ["s0"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "autotrace"]
    assert len(warnings) == 1 and var in warnings[0] and message in warnings[0], warnings
    assert "pw" not in warnings[0]  # the proxy's password is never logged


def test_configuration_from_the_environment_survives_a_socks_proxy_variable() -> None:
    """OTEL_TRACES_EXPORTER=otlp with https_proxy=socks5h://... still configures autotrace (exports go direct)."""
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://127.0.0.1:1",
        "OTEL_SERVICE_NAME": "proxied",
        "https_proxy": "socks5h://127.0.0.1:1080",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    script = "import autotrace; print(autotrace.tracer.resource_attributes()['service.name'])"
    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "proxied"


def test_a_proxy_for_the_other_scheme_is_not_used(receiver: Receiver) -> None:
    """https_proxy does not apply to an http:// collector."""
    dead = f"http://127.0.0.1:{closed_port()}"
    exporter = OTLPHttpExporter(receiver.url, max_retries=0, env={"https_proxy": dead})
    assert exporter.export(spans(1))


def test_shutdown_stops_a_split_batch_before_its_next_request(receiver: Receiver) -> None:
    """A batch sent as many bodies: shutdown() mid-way fails the rest at once, with no new request."""
    receiver.script(*[{"hang": True}] * 50)
    exporter = OTLPHttpExporter(receiver.url, timeout=20, max_request_bytes=1024, env={})
    batch = spans(60)
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(exporter.export(batch)))
    worker.start()
    assert receiver.hanging.wait(30)
    started = time.monotonic()
    exporter.shutdown()
    worker.join(10)
    assert not worker.is_alive() and result == [False]
    assert time.monotonic() - started < 5
    assert len(receiver.requests) == 1  # nothing sent after the shutdown
    assert exporter.stats()["failed"] == 60
