"""The viewer in headless Chromium against text built to deceive: bidi overrides, invisible and combining characters."""

from __future__ import annotations

from typing import Any

import pytest

import autotrace
from autotrace import span

from .test_viewer import _expect, open_viewer

pytestmark = pytest.mark.browser

SPOOF = "invoice\u202egnp.exe"
ZALGO = "a" + "\u0301" * 40


def test_bidi_and_invisible_characters_show_as_visible_escapes(server: Any, page: Any) -> None:
    """U+202E and other Cc/Cf characters show as ⟨U+XXXX⟩ in list, waterfall, title and details; values are isolated."""
    with span(SPOOF, attributes={"file": "report\u2067fdp.exe\u2069", "note": "zero\u200bwidth\u200e", "zalgo": ZALGO}):
        with span("\u0301leading-mark"):
            pass
    expect = _expect()
    open_viewer(page, server.url)
    row = page.locator(".trace-row").first
    expect(row.locator(".tr-name")).to_have_text("invoice⟨U+202E⟩gnp.exe")
    row.click()
    expect(page.locator("#trace-title")).to_have_text("invoice⟨U+202E⟩gnp.exe")
    labels = page.locator("#waterfall .wf-row .wf-label")
    expect(labels.first).to_have_text("invoice⟨U+202E⟩gnp.exe")
    expect(labels.nth(1)).to_have_text("\u25cc\u0301leading-mark")  # the mark sits on a dotted circle
    labels.first.click()
    detail = page.locator("#detail")
    expect(detail.locator("tr[data-key='file'] .val")).to_have_text("report⟨U+2067⟩fdp.exe⟨U+2069⟩")
    expect(detail.locator("tr[data-key='note'] .val")).to_have_text("zero⟨U+200B⟩width⟨U+200E⟩")
    expect(detail.locator("tr[data-key='zalgo'] .val")).to_have_text("a" + "\u0301" * 4 + "⟨+36 marks⟩")
    # No bidi control reached the DOM, and each element's text is its own bidi island.
    text = page.evaluate("document.body.innerText")
    assert not any(c in text for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")
    assert page.eval_on_selector(".trace-row .tr-name", "e => getComputedStyle(e).unicodeBidi") == "isolate"
    assert page.eval_on_selector("#detail .val", "e => getComputedStyle(e).unicodeBidi") == "isolate"


def test_emoji_and_right_to_left_text_stay_readable(server: Any, page: Any) -> None:
    """Ordinary non-ASCII text is left alone: an emoji family (joined by U+200D), Hebrew, accents, a newline."""
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    with span("caf\u00e9 " + family, attributes={"he": "\u05e9\u05dc\u05d5\u05dd", "multi": "line one\nline two"}):
        pass
    expect = _expect()
    open_viewer(page, server.url)
    row = page.locator(".trace-row").first
    expect(row.locator(".tr-name")).to_have_text("caf\u00e9 " + family)
    row.click()
    page.locator("#waterfall .wf-row .wf-label").first.click()
    assert page.locator("#detail tr[data-key='he'] .val").text_content() == "\u05e9\u05dc\u05d5\u05dd"
    assert page.locator("#detail tr[data-key='multi'] .val").text_content() == "line one\nline two"


def test_header_shows_the_sample_rate_and_clear_uses_delete(server: Any, page: Any, probe: Any) -> None:
    """The header says 'sampling 25%' from /ready, and Clear sends DELETE /traces, never GET ?clear=true."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.25))
    with autotrace.span("kept"):
        pass
    expect = _expect()
    requests: list[tuple[str, str]] = []
    page.on("request", lambda r: requests.append((r.method, r.url)))
    open_viewer(page, server.url)
    expect(page.locator("#sampling")).to_have_text("sampling 25%")
    page.click("#clear")
    expect(page.locator("#list-empty")).to_contain_text("No traces yet")
    assert ("DELETE", server.url + "/traces") in requests
    assert not [u for m, u in requests if "clear=" in u]


def test_the_list_is_not_capped_by_max_answer_spans(page: Any) -> None:
    """The list polls /traces/summary, so a server whose /traces answer is capped still lists every trace."""
    from autotrace.server import create_app, start_in_background

    for i in range(5):
        with autotrace.span(f"t{i}"):
            with autotrace.span("child"):
                pass
    with start_in_background(port=0, app=create_app(max_answer_spans=4)) as handle:
        open_viewer(page, handle.url)
        expect = _expect()
        expect(page.locator(".trace-row")).to_have_count(5)
        expect(page.locator("#list-count")).to_have_text("5")
