"""Static checks of the shipped viewer page: self-contained, no HTML sinks, readable as package data."""

from __future__ import annotations

import re
from importlib import resources

from autotrace.server import page_policy


def page_text() -> str:
    """The viewer page exactly as the server reads it."""
    return resources.files("autotrace").joinpath("viewer.html").read_text(encoding="utf-8")


def test_viewer_is_package_data() -> None:
    """autotrace/viewer.html is readable through importlib.resources and is one HTML page."""
    text = page_text()
    assert text.lstrip().lower().startswith("<!doctype html>")
    assert text.count("<script") == 1 and text.count("<style") == 1


def test_viewer_loads_nothing_from_elsewhere() -> None:
    """No CDN, no external script, stylesheet, font or image: only the page's own server."""
    text = page_text()
    assert not re.search(r"<script[^>]*\bsrc=", text)
    assert re.findall(r"<link\b[^>]*>", text) == ['<link rel="icon" href="data:,">']  # no favicon request
    assert not re.search(r"@import|url\(", text)
    assert not re.search(r"https?://", text)
    policy = page_policy(text)  # what the server sends with the page
    assert "connect-src 'self'" in policy and "unsafe-inline" not in policy


def test_viewer_script_has_no_html_sinks() -> None:
    """The script never parses strings as HTML (innerHTML, outerHTML, insertAdjacentHTML, document.write, eval)."""
    script = page_text().split("<script>", 1)[1].split("</script>", 1)[0]
    code = re.sub(r"/\*.*?\*/", "", script, flags=re.S)  # the header comment names the sinks it avoids
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in code, sink
