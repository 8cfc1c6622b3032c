"""Browser fixtures: headless Debian Chromium driven by Playwright, and the real /traces server on loopback."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from .helpers import VIEWPORT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing(reason: str) -> None:
    """Skip locally; in CI (CI=true) a missing browser is a failure, not a silent skip."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser tests cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One headless Chromium for the browser tests.

    Package scope, not session: Playwright's sync API keeps an event loop running in the main
    thread while it is open, and asyncio.run() in later test modules would fail beside it.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the Python package playwright is not installed")
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        _missing(f"{CHROMIUM} is not installed (Debian package chromium)")
    executable = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class PageProbe:
    """A fresh page plus what it did: dialogs it opened, JavaScript errors and CSP violations."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.accept_confirm = True
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._on_console)
        page.on("dialog", self._on_dialog)

    def _on_console(self, message: Any) -> None:
        # Chromium reports a script, style or fetch the page's Content-Security-Policy blocked here.
        if message.type == "error" and "Content Security Policy" in message.text:
            self.errors.append(message.text)

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if dialog.type == "confirm" and self.accept_confirm:
            dialog.accept()
        else:
            dialog.dismiss()


@pytest.fixture
def probe(browser: Any) -> Iterator[PageProbe]:
    """A new browser context and page for one test; closed afterwards."""
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    context.set_default_timeout(20_000)
    page = context.new_page()
    p = PageProbe(page)
    try:
        yield p
    finally:
        context.close()
    assert p.errors == [], f"JavaScript errors on the page: {p.errors}"


@pytest.fixture
def page(probe: PageProbe) -> Any:
    """The Playwright page of ``probe``."""
    return probe.page


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The real autotrace server over the global store, on a free loopback port, without a token."""
    from autotrace.server import start_in_background

    monkeypatch.delenv("AUTOTRACE_TOKEN", raising=False)

    handle = start_in_background(host="127.0.0.1", port=0)
    try:
        yield handle
    finally:
        handle.stop()
