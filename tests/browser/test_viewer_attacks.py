"""The viewer in headless Chromium against span data built to stall it: huge values made of one repeated character."""

from __future__ import annotations

from typing import Any

import pytest

import autotrace
from autotrace import span

from .helpers import screenshot
from .test_viewer import _expect, open_viewer

pytestmark = pytest.mark.browser

HUGE = 200_000  # characters; unlimited attribute length lets any end user send this much
BOUND_MS = 5_000  # generous on a shared 2-core machine; the unbounded layout took minutes
WAIT_MS = 20_000  # Playwright gives up after this, so old code fails fast instead of hanging

# Runs the action in a task of its own and records, in the page, how long it took up to the next
# frame (DOM build, style, layout and paint), so a stalled renderer cannot block this evaluate.
TIMED = """([selector, key]) => {
  window[key] = null;
  setTimeout(() => {
    const t0 = performance.now();
    document.querySelector(selector).click();
    void document.body.offsetHeight;
    requestAnimationFrame(() => setTimeout(() => { window[key] = performance.now() - t0; }, 0));
  }, 0);
}"""


def timed_click(page: Any, selector: str) -> float:
    """Click ``selector`` in the page and return the milliseconds until the result was drawn."""
    key = "__took_" + str(abs(hash(selector)))
    page.evaluate(TIMED, [selector, key])
    page.wait_for_function("(key) => window[key] !== null", arg=key, timeout=WAIT_MS)
    return float(page.evaluate("(key) => window[key]", key))


def _record_huge() -> tuple[str, str]:
    """A trace with a huge span name, attribute values, prompt and exception; and a second one to compare with."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0))
    with span("B" * HUGE, attributes={"huge": "A" * HUGE, "bidi": "\u202e" * HUGE, "input.value": "P" * HUGE}) as root:
        try:
            with span("fails"):
                raise ValueError("C" * HUGE)
        except ValueError:
            pass
    with span("B" * HUGE) as other:
        pass
    return root.trace_id, other.trace_id


def test_huge_single_character_values_render_quickly(server: Any, page: Any) -> None:
    """A 200,000-character name, attribute, prompt and exception message render in under 5 s in every view."""
    a, b = _record_huge()
    page.set_default_timeout(WAIT_MS)
    expect = _expect()
    open_viewer(page, server.url)
    expect(page.locator(".trace-row")).to_have_count(2)
    page.locator(f".trace-row[data-trace-id='{a}']").click()
    expect(page.locator("#waterfall .wf-row")).to_have_count(2)

    took = timed_click(page, "#waterfall .wf-row[data-depth='0']")
    assert took < BOUND_MS, f"selecting the span with huge values took {took:.0f} ms"
    detail = page.locator("#detail")
    expect(detail.locator("tr[data-key='huge'] .val")).to_contain_text("AAAA")
    expect(detail.locator("#llm-prompt")).to_contain_text("PPPP")
    expect(detail.locator("tr[data-key='bidi'] .val")).to_contain_text("⟨U+202E⟩⟨U+202E⟩")
    # The rest of a value comes in bounded steps, each as quick, and can be copied whole.
    huge = detail.locator("tr[data-key='huge']")
    expect(huge).to_contain_text(f"{HUGE - 4000:,} more characters")
    expect(huge.locator(".copy-value")).to_be_visible()
    for step in range(1, 6):
        took = timed_click(page, "#detail tr[data-key='huge'] .show-more")
        assert took < BOUND_MS, f"showing 4,000 more characters took {took:.0f} ms"
        expect(huge.locator(".val")).to_have_text("A" * (4000 * (step + 1)))
    screenshot(page, "huge-values")

    took = timed_click(page, "#waterfall .wf-row[data-depth='1']")
    assert took < BOUND_MS, f"selecting the span with a huge exception took {took:.0f} ms"
    expect(detail.locator("pre.stack")).to_contain_text("CCCC")
    expect(detail.locator("tr[data-key='exception.message'] .val")).to_contain_text("CCCC")

    took = timed_click(page, "#view-flame")
    assert took < BOUND_MS, f"the flame view took {took:.0f} ms"
    page.click("#tab-stats")
    expect(page.locator("#stats-table tbody")).to_contain_text("BBBB")

    page.goto(server.url + f"/#compare={a},{b}")
    expect(page.locator("#compare-table tbody tr")).to_have_count(2)
