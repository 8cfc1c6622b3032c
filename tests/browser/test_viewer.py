"""End-to-end tests of the trace viewer at GET / in headless Chromium, against the real server."""

from __future__ import annotations

import time
from typing import Any

import pytest

import autotrace
from autotrace import span

from .helpers import VIEWPORT, XSS_NAME, generate, record_big_store, record_demo_traces, record_tree, screenshot

pytestmark = pytest.mark.browser

TIMEOUT = 20_000  # ms; generous, the machine is shared


def _expect() -> Any:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT)
    return expect


def open_viewer(page: Any, url: str, fragment: str = "") -> None:
    """Load the viewer and wait until the first /traces answer is drawn."""
    page.goto(url + "/" + fragment)
    _expect()(page.locator("#status")).to_contain_text("updated")


def span_row(page: Any, name: str) -> Any:
    """The waterfall row of the span called exactly ``name``."""
    return page.locator("#waterfall .wf-row").filter(has=page.locator(".wf-label").get_by_text(name, exact=True))


def row_names(page: Any, selector: str, label: str) -> list[str]:
    """Texts of ``label`` inside the rendered rows, in on-screen order."""
    return page.eval_on_selector_all(
        selector,
        f"rows => rows.sort((a, b) => a.offsetTop - b.offsetTop).map(r => r.querySelector('{label}').textContent)",
    )


def test_list_shows_traces_newest_first(server: Any, page: Any) -> None:
    """Every stored trace appears once with root name, service, span count and duration, newest first."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, service_name="tiny-llm"))
    record_demo_traces(8)
    with span("newest-request", kind="server"):
        pass
    expect = _expect()
    open_viewer(page, server.url)
    rows = page.locator(".trace-row")
    expect(rows).to_have_count(9)
    names = row_names(page, ".trace-row", ".tr-name")
    assert names[0] == "newest-request"
    assert names[1:] == ["POST /v1/generate"] * 8
    first_full = page.locator(".trace-row").nth(1)
    expect(first_full).to_contain_text("tiny-llm")
    expect(first_full).to_contain_text("12 spans")
    expect(page.locator("#list-count")).to_have_text("9")
    screenshot(page, "list")


def test_waterfall_rows_in_depth_order(server: Any, page: Any) -> None:
    """Clicking a trace draws one row per span, children under parents, indented by depth, with bars."""
    ids = record_tree()
    expect = _expect()
    open_viewer(page, server.url)
    page.locator(f".trace-row[data-trace-id='{ids['trace_id']}']").click()
    rows = page.locator("#waterfall .wf-row")
    expect(rows).to_have_count(4)
    assert row_names(page, "#waterfall .wf-row", ".wf-label") == ["root", "a", "a1", "b"]
    depths = page.eval_on_selector_all(
        "#waterfall .wf-row", "rows => rows.sort((a, b) => a.offsetTop - b.offsetTop).map(r => r.dataset.depth)"
    )
    assert depths == ["0", "1", "2", "1"]
    indents = page.eval_on_selector_all(
        "#waterfall .wf-row .wf-name",
        "els => els.map(e => parseFloat(getComputedStyle(e).paddingLeft))",
    )
    assert indents[0] < indents[1] < indents[2] and indents[1] == indents[3]
    root_bar = page.locator("#waterfall .wf-row").first.locator(".bar").bounding_box()
    leaf_bar = page.locator("#waterfall .wf-row").nth(2).locator(".bar").bounding_box()
    assert root_bar is not None and leaf_bar is not None
    assert root_bar["width"] > leaf_bar["width"] and leaf_bar["x"] >= root_bar["x"]
    expect(page.locator("#waterfall .wf-row").first.locator(".dur")).to_contain_text("ms")
    expect(page.locator("#trace-title")).to_have_text("root")


def test_detail_panel_shows_attributes_and_ids(server: Any, page: Any) -> None:
    """Clicking a span shows its attributes, ids, kind and status in the detail panel."""
    ids = record_tree()
    expect = _expect()
    open_viewer(page, server.url)
    page.locator(".trace-row").first.click()
    span_row(page, "a1").click()
    detail = page.locator("#detail")
    expect(detail.locator("h2")).to_have_text("a1")
    expect(detail.locator("tr[data-key='note'] .val")).to_have_text("leaf")
    expect(detail.locator("#detail-trace-id")).to_have_text(ids["trace_id"])
    span_row(page, "root").click()
    expect(detail.locator("tr[data-key='http.route'] .val")).to_have_text("/tree")
    expect(detail).to_contain_text("server")
    expect(detail).to_contain_text(ids["span_id"])


def test_copy_trace_id_button(server: Any, browser: Any) -> None:
    """The copy button puts the selected span's trace id on the clipboard."""
    ids = record_tree()
    expect = _expect()
    context = browser.new_context(viewport=VIEWPORT)
    try:
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
        page = context.new_page()
        open_viewer(page, server.url, f"#trace={ids['trace_id']}")
        page.locator("#copy-trace-id").click()
        expect(page.locator("#copy-trace-id")).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == ids["trace_id"]
    finally:
        context.close()


def test_error_trace_is_marked(server: Any, page: Any) -> None:
    """A trace with an ERROR span is flagged in the list; its span is red and shows the stacktrace."""
    record_demo_traces(3)  # the third one fails
    expect = _expect()
    open_viewer(page, server.url)
    expect(page.locator(".trace-row")).to_have_count(3)
    marked = page.locator(".trace-row.error")
    expect(marked).to_have_count(1)
    expect(marked.locator(".err-marker")).to_be_visible()
    marked.click()
    error_rows = page.locator("#waterfall .wf-row.error")
    expect(error_rows).to_have_count(3)  # the trace is fetched when opened: wait for its waterfall
    names = row_names(page, "#waterfall .wf-row.error", ".wf-label")
    assert names == ["POST /v1/generate", "model.generate", "decode"]
    colour = error_rows.last.locator(".bar").evaluate("e => getComputedStyle(e).backgroundColor")
    ok_colour = page.locator("#waterfall .wf-row:not(.error) .bar").first.evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )
    assert colour != ok_colour
    error_rows.last.click()
    stack = page.locator("#detail pre.stack")
    expect(stack).to_contain_text("Traceback")
    expect(stack).to_contain_text("RuntimeError: CUDA out of memory")
    expect(page.locator("#detail")).to_contain_text("ERROR")


def test_filter_and_errors_only(server: Any, page: Any) -> None:
    """The text filter matches span names and ids; "errors only" keeps only failing traces."""
    record_demo_traces(3)
    record_tree()
    expect = _expect()
    open_viewer(page, server.url)
    rows = page.locator(".trace-row")
    expect(rows).to_have_count(4)
    page.fill("#filter", "PREFILL")  # a child span's name (any case), in the three inference traces only
    expect(rows).to_have_count(3)
    page.fill("#filter", "root")  # not hex, so no trace id can match by chance
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".tr-name")).to_have_text("root")
    tree_id = rows.first.get_attribute("data-trace-id")
    page.fill("#filter", tree_id[-12:])  # the end of a trace id
    expect(rows).to_have_count(1)
    page.fill("#filter", "")
    expect(rows).to_have_count(4)
    page.check("#errors-only")
    expect(rows).to_have_count(1)
    expect(page.locator("#list-count")).to_have_text("1 of 4")


def test_untrusted_span_text_is_never_html(server: Any, page: Any, probe: Any) -> None:
    """Markup in span names, attributes and events shows as literal text and runs nothing."""
    with span(XSS_NAME, attributes={"prompt": '<img src=x onerror="window.__xss=1">'}) as s:
        s.add_event("<script>window.__xss=2</script>", {"html": "<b>bold?</b>"})
        with span('<svg onload="window.__xss=3">'):
            pass
    expect = _expect()
    open_viewer(page, server.url)
    row = page.locator(".trace-row").first
    expect(row.locator(".tr-name")).to_have_text(XSS_NAME)
    row.click()
    expect(page.locator("#waterfall .wf-row")).to_have_count(2)
    expect(page.locator("#waterfall .wf-row").first.locator(".wf-label")).to_have_text(XSS_NAME)
    expect(page.locator("#trace-title")).to_have_text(XSS_NAME)
    detail = page.locator("#detail")
    expect(detail.locator("tr[data-key='prompt'] .val")).to_have_text('<img src=x onerror="window.__xss=1">')
    expect(detail).to_contain_text("<script>window.__xss=2</script>")
    page.wait_for_timeout(500)  # give a stray onerror/onload time to fire
    assert page.evaluate("document.querySelectorAll('img, svg, b').length") == 0
    assert page.evaluate("document.scripts.length") == 1
    assert page.evaluate("window.__xss") is None
    assert probe.dialogs == []


def test_deep_link_opens_trace_and_selection_updates_hash(server: Any, page: Any) -> None:
    """/#trace=<id> opens that trace (&span=<id> that span); clicking another trace rewrites the hash; Back returns."""
    first = record_tree()
    with span("second-trace") as second:
        pass
    expect = _expect()
    open_viewer(page, server.url, f"#trace={first['trace_id']}")
    expect(page.locator("#trace-title")).to_have_text("root")
    expect(page.locator("#waterfall .wf-row")).to_have_count(4)
    expect(page.locator(f".trace-row.selected[data-trace-id='{first['trace_id']}']")).to_have_count(1)
    page.locator(f".trace-row[data-trace-id='{second.trace_id}']").click()
    expect(page.locator("#trace-title")).to_have_text("second-trace")
    assert f"#trace={second.trace_id}" in page.url
    page.go_back()
    expect(page.locator("#trace-title")).to_have_text("root")
    a1 = next(s for s in autotrace.get_trace_store().get_trace(first["trace_id"]) or [] if s.name == "a1")
    page.goto(server.url + f"/#trace={first['trace_id']}&span={a1.span_id}")
    expect(page.locator("#detail h2")).to_have_text("a1")
    expect(page.locator("#waterfall .wf-row.selected .wf-label")).to_have_text("a1")
    page.goto(server.url + "/#trace=" + "f" * 32)
    expect(page.locator("#trace-empty")).to_contain_text("not on the server")


def test_clear_empties_the_list(server: Any, page: Any, probe: Any) -> None:
    """Clear asks first; dismissing keeps the traces, accepting deletes them on the server."""
    record_demo_traces(2)
    expect = _expect()
    open_viewer(page, server.url)
    expect(page.locator(".trace-row")).to_have_count(2)
    page.locator(".trace-row").first.click()
    probe.accept_confirm = False
    page.click("#clear")
    expect(page.locator(".trace-row")).to_have_count(2)
    assert autotrace.trace_count() == 2
    probe.accept_confirm = True
    page.click("#clear")
    expect(page.locator(".trace-row")).to_have_count(0)
    expect(page.locator("#list-empty")).to_contain_text("No traces yet")
    expect(page.locator("#trace-empty")).to_be_visible()
    assert autotrace.trace_count() == 0
    assert [d.split(":")[0] for d in probe.dialogs] == ["confirm", "confirm"]
    assert "#trace=" not in page.url


def test_auto_refresh_and_pause(server: Any, page: Any) -> None:
    """New traces appear without a reload; while paused the list only changes on Refresh."""
    record_tree()
    expect = _expect()
    open_viewer(page, server.url)
    rows = page.locator(".trace-row")
    expect(rows).to_have_count(1)
    with span("arrived-later"):
        pass
    expect(rows).to_have_count(2)
    page.click("#pause")
    expect(page.locator("#pause")).to_have_attribute("aria-pressed", "true")
    with span("arrived-while-paused"):
        pass
    page.wait_for_timeout(7000)  # more than two refresh periods
    expect(rows).to_have_count(2)
    page.click("#refresh")  # a manual refresh still works while paused
    expect(rows).to_have_count(3)
    with span("arrived-after-refresh"):
        pass
    page.click("#pause")
    expect(page.locator("#pause")).to_have_attribute("aria-pressed", "false")
    expect(rows).to_have_count(4)


def test_unchanged_store_is_a_304_and_the_list_stays(server: Any, page: Any) -> None:
    """The viewer polls with If-None-Match: an unchanged store answers 304 and the list is kept as drawn."""
    record_tree()
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if "/traces/summary?" in r.url else None)
    expect = _expect()
    open_viewer(page, server.url)
    rows = page.locator(".trace-row")
    expect(rows).to_have_count(1)
    page.wait_for_timeout(3500)  # at least one auto-refresh period
    assert statuses[0] == 200 and 304 in statuses[1:], statuses
    expect(rows).to_have_count(1)
    with span("arrived-later"):
        pass
    expect(rows).to_have_count(2)  # a changed store is a 200 again, drawn at once


def test_bearer_token_flow(browser: Any) -> None:
    """With a token the page asks once, keeps it in sessionStorage and sends it as a bearer token."""
    from autotrace.server import start_in_background

    record_tree()
    expect = _expect()
    handle = start_in_background(host="127.0.0.1", port=0, token="s3cret-token")
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(handle.url + "/")
        dialog = page.locator("#token-dialog")
        expect(dialog).to_be_visible()
        page.fill("#token-input", "wrong")
        page.click("#token-form button[type=submit]")
        expect(page.locator("#token-error")).to_contain_text("not accepted")
        expect(dialog).to_be_visible()
        page.fill("#token-input", "s3cret-token")
        page.click("#token-form button[type=submit]")
        expect(dialog).to_be_hidden()
        expect(page.locator(".trace-row")).to_have_count(1)
        assert page.evaluate("sessionStorage.getItem('autotrace.token')") == "s3cret-token"
        page.reload()
        expect(page.locator(".trace-row")).to_have_count(1)
        expect(dialog).to_be_hidden()
        assert errors == []
    finally:
        context.close()
        handle.stop()


def test_thousand_traces_and_two_thousand_span_trace(server: Any, page: Any) -> None:
    """1,000 traces and a 2,000-span trace render (virtualized) and scroll without hanging the page."""
    big_id = record_big_store()
    assert autotrace.trace_count() == 1000
    expect = _expect()
    started = time.monotonic()
    page.goto(server.url + "/")
    expect(page.locator("#list-count")).to_have_text("1000", timeout=60_000)
    list_seconds = time.monotonic() - started
    assert page.locator(".trace-row").count() < 100  # only what is in view is in the DOM
    page.eval_on_selector("#trace-list", "e => { e.scrollTop = e.scrollHeight; }")
    expect(page.locator(".trace-row", has_text="small-0")).to_be_visible()
    page.eval_on_selector("#trace-list", "e => { e.scrollTop = 0; }")

    started = time.monotonic()
    page.locator(f".trace-row[data-trace-id='{big_id}']").click()
    expect(page.locator("#waterfall")).to_have_attribute("data-total", "2000", timeout=60_000)
    waterfall_seconds = time.monotonic() - started
    expect(page.locator("#waterfall .wf-row").first.locator(".wf-label")).to_have_text("big-trace")
    assert page.locator("#waterfall .wf-row").count() < 150
    page.eval_on_selector("#waterfall", "e => { e.scrollTop = e.scrollHeight; }")
    expect(span_row(page, "chain-38")).to_be_visible()
    assert page.evaluate("1 + 1") == 2  # the page still answers
    screenshot(page, "big")
    # collapsing the root hides its 1,999 descendants
    page.eval_on_selector("#waterfall", "e => { e.scrollTop = 0; }")
    page.locator("#waterfall .wf-row").first.locator(".twisty").click()
    expect(page.locator("#waterfall")).to_have_attribute("data-total", "1")
    print(f"\nlist of 1000 traces drawn in {list_seconds:.2f}s; 2000-span waterfall in {waterfall_seconds:.2f}s")


def test_waterfall_screenshot(server: Any, page: Any) -> None:
    """A realistic inference trace renders kinds, a failed retried search in red and the legend."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, service_name="tiny-llm"))
    record_demo_traces(6)
    generate("the screenshot request", flaky_search=True)
    expect = _expect()
    open_viewer(page, server.url)
    page.locator(".trace-row").first.click()
    expect(page.locator("#waterfall .wf-row")).to_have_count(13)
    expect(page.locator("#waterfall .wf-row.error")).to_have_count(1)
    page.locator("#waterfall .wf-row.error").click()
    expect(page.locator("#detail pre.stack")).to_contain_text("TimeoutError")
    expect(page.locator(".legend")).to_contain_text("error")
    screenshot(page, "waterfall")


def test_orphans_links_and_attribute_types(server: Any, page: Any) -> None:
    """A span whose parent is elsewhere sits at top level marked orphan; links open their trace; values keep types."""
    from autotrace import SpanContext

    with span("upstream-job") as upstream:
        pass
    remote = SpanContext(int("ab" * 16, 16), int("cd" * 8, 16), True, True)
    with span("handle", kind="server", parent=remote, links=[upstream.get_span_context()]) as handled:
        handled.set_attributes({"ints": [1, 2, 3], "ratio": 0.5, "cached": True, "tokens": 7})
        with span("work"):
            pass
    expect = _expect()
    open_viewer(page, server.url, "#trace=" + "ab" * 16)
    expect(page.locator("#waterfall .wf-row")).to_have_count(2)
    first = page.locator("#waterfall .wf-row").first
    expect(first).to_have_attribute("data-depth", "0")
    expect(first.locator(".badge")).to_have_text("orphan")
    expect(page.locator("#trace-title")).to_have_text("handle")
    detail = page.locator("#detail")
    expect(detail.locator("tr[data-key='ints'] .val")).to_have_text("[1, 2, 3]")
    expect(detail.locator("tr[data-key='ratio'] .val")).to_have_text("0.5")
    expect(detail.locator("tr[data-key='cached'] .val")).to_have_text("true")
    expect(detail.locator("tr[data-key='tokens'] .val")).to_have_text("7")
    expect(detail).to_contain_text("cdcdcdcdcdcdcdcd")  # the remote parent id
    expect(detail).to_contain_text("Links (1)")
    detail.get_by_role("button", name="open").click()
    expect(page.locator("#trace-title")).to_have_text("upstream-job")
    assert f"#trace={upstream.trace_id}" in page.url


def test_keyboard_moves_through_traces_and_spans(server: Any, page: Any) -> None:
    """Arrow keys in the list select the next trace; in the waterfall they select the next span."""
    record_tree()
    with span("newer") as newer:
        pass
    expect = _expect()
    open_viewer(page, server.url)
    expect(page.locator(".trace-row")).to_have_count(2)
    page.focus("#trace-list")
    page.keyboard.press("ArrowDown")
    expect(page.locator("#trace-title")).to_have_text("newer")
    assert f"#trace={newer.trace_id}" in page.url
    page.keyboard.press("ArrowDown")
    expect(page.locator("#trace-title")).to_have_text("root")
    page.focus("#waterfall")
    page.keyboard.press("ArrowDown")
    expect(page.locator("#detail h2")).to_have_text("a")
    page.keyboard.press("ArrowDown")
    expect(page.locator("#detail h2")).to_have_text("a1")
    page.keyboard.press("ArrowUp")
    expect(page.locator("#detail h2")).to_have_text("a")
