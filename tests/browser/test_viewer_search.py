"""The viewer's search, sort, tabs, flame view, zoom, compare and LLM block in headless Chromium."""

from __future__ import annotations

import re
import time
from contextlib import ExitStack
from typing import Any

import pytest

import autotrace
from autotrace import span

from .helpers import VIEWPORT, XSS_NAME, record_demo_traces, record_tree, screenshot
from .test_viewer import _expect, open_viewer, row_names, span_row

pytestmark = pytest.mark.browser


def _durations_ms(ids: dict[str, str]) -> dict[str, float]:
    """Each trace's root duration in ms as stored (the expectations follow the real timings)."""
    store = autotrace.get_trace_store()
    return {name: max(s.duration_ns or 0 for s in store.get_trace(tid) or []) / 1e6 for name, tid in ids.items()}


def _shop() -> dict[str, str]:
    """Four traces of distinct names, users, durations and outcomes; returns their ids by name."""
    ids = {}
    for name, user, sleep, fail in (
        ("checkout", "alice", 0.001, False),
        ("search", "bob", 0.03, False),
        ("login", "carol", 0.001, True),
        ("report", "bob", 0.06, False),
    ):
        try:
            with span(name, kind="server", attributes={"user": user}) as root:
                ids[name] = root.trace_id
                with span(f"{name}.work"):
                    time.sleep(sleep)
                    if fail:
                        raise ValueError("bad password")
        except ValueError:
            pass
    return ids


def test_filters_and_sort_through_the_page_and_the_hash(server: Any, page: Any) -> None:
    """key=value, words, duration range, errors only and sort narrow/reorder the list and live in the URL hash."""
    ms = _durations_ms(_shop())
    slow, fast = sorted(("report", "search"), key=lambda n: -ms[n])  # report sleeps longer, almost surely
    between = f"{(ms[slow] + ms[fast]) / 2:.3f}"
    expect = _expect()
    open_viewer(page, server.url)
    rows = page.locator(".trace-row")
    expect(rows).to_have_count(4)
    page.fill("#filter", "user=bob")
    expect(rows).to_have_count(2)
    expect(page.locator("#list-count")).to_have_text("2 of 4")
    page.select_option("#sort", "duration")
    expect(rows.first.locator(".tr-name")).to_have_text(slow)
    assert row_names(page, ".trace-row", ".tr-name") == [slow, fast]
    page.fill("#max-dur", between)
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".tr-name")).to_have_text(fast)
    page.wait_for_function(f"location.hash.includes('max={between}')")
    assert "q=user%3Dbob" in page.url and "sort=duration" in page.url
    page.fill("#max-dur", "")
    page.fill("#filter", "carol")
    expect(rows).to_have_count(1)
    page.fill("#filter", "")
    page.check("#errors-only")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".tr-name")).to_have_text("login")
    # The same state from a shared link, in a fresh load.
    page.goto(server.url + f"/#q=user%3Dbob&sort=spans&min={between}")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".tr-name")).to_have_text(slow)
    expect(page.locator("#filter")).to_have_value("user=bob")
    expect(page.locator("#sort")).to_have_value("spans")
    page.goto(server.url + "/#q=bob&sort=duration")
    expect(rows).to_have_count(2)
    screenshot(page, "search")


def test_service_filter_and_sort_by_span_count(server: Any, page: Any) -> None:
    """The service list offers the services seen; sorting by span count puts the biggest trace first."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, service_name="tiny-llm"))
    record_demo_traces(2)
    record_tree()
    expect = _expect()
    open_viewer(page, server.url, "#sort=spans")
    rows = page.locator(".trace-row")
    expect(rows).to_have_count(3)
    assert row_names(page, ".trace-row", ".tr-name")[-1] == "root"
    page.select_option("#service", "tiny-llm")
    expect(rows).to_have_count(3)
    page.wait_for_function("location.hash.includes('service=tiny-llm')")
    page.goto(server.url + "/#service=other")
    expect(page.locator("#list-empty")).to_contain_text("No trace matches")
    tid = autotrace.get_trace_store().traces()[0][0].trace_id
    page.goto(server.url + f"/#trace={tid}&view=flame")
    expect(page.locator("#flame-body .fl-block")).to_have_count(12)
    page.locator("#flame-body .fl-block[title^='model.generate ']").click()
    expect(page.locator("#detail h2")).to_have_text("model.generate")
    screenshot(page, "flame")


def test_flame_view_collapse_all_zoom_and_keys(server: Any, page: Any) -> None:
    """Flame view via tab and #view=flame; collapse-all; left/right collapse/expand; / focuses search; drag zooms."""
    ids = record_tree()
    expect = _expect()
    open_viewer(page, server.url, f"#trace={ids['trace_id']}")
    wf = page.locator("#waterfall .wf-row")
    expect(wf).to_have_count(4)
    page.click("#collapse-all")
    expect(page.locator("#waterfall")).to_have_attribute("data-total", "1")
    page.click("#expand-all")
    expect(page.locator("#waterfall")).to_have_attribute("data-total", "4")
    span_row(page, "a").click()
    page.focus("#waterfall")
    page.keyboard.press("ArrowLeft")  # collapse a
    expect(page.locator("#waterfall")).to_have_attribute("data-total", "3")
    page.keyboard.press("ArrowRight")  # expand a
    expect(page.locator("#waterfall")).to_have_attribute("data-total", "4")
    page.keyboard.press("ArrowRight")  # to its first child
    expect(page.locator("#detail h2")).to_have_text("a1")
    page.keyboard.press("ArrowLeft")  # a leaf: to its parent
    expect(page.locator("#detail h2")).to_have_text("a")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "filter"
    # Zoom: drag across the first half of the axis; the root bar then overflows the window.
    last_tick = page.locator("#axis .tick").last
    whole = last_tick.text_content()
    track = page.locator("#axis .axis-track").bounding_box()
    assert track is not None
    y = track["y"] + track["height"] / 2
    page.mouse.move(track["x"] + 2, y)
    page.mouse.down()
    page.mouse.move(track["x"] + track["width"] / 2, y, steps=4)
    page.mouse.up()
    expect(page.locator("#zoom-reset")).to_be_visible()
    expect(last_tick).not_to_have_text(whole or "")  # the axis now ends about halfway
    page.click("#zoom-reset")
    expect(page.locator("#zoom-reset")).to_be_hidden()
    expect(last_tick).to_have_text(whole or "")
    page.click("#view-flame")
    page.wait_for_function("location.hash.includes('view=flame')")
    blocks = page.locator("#flame-body .fl-block")
    expect(blocks).to_have_count(4)
    expect(page.locator("#waterfall")).to_be_hidden()
    page.locator("#flame-body .fl-block[title^='a1 ']").click()
    expect(page.locator("#detail h2")).to_have_text("a1")
    # The flame view straight from a link.
    page.goto(server.url + f"/#trace={ids['trace_id']}&view=flame")
    page.reload()
    expect(blocks).to_have_count(4)
    root_box = blocks.first.bounding_box()
    child_box = page.locator("#flame-body .fl-block[title^='a1 ']").bounding_box()
    assert root_box is not None and child_box is not None
    assert child_box["y"] == root_box["y"] + 40  # depth 2, 20 px a row
    assert child_box["width"] < root_box["width"]


def test_five_thousand_span_trace_waterfall_and_flame(server: Any, page: Any) -> None:
    """A 5,000-span trace draws its waterfall and flame view, scrolls, and the page stays responsive."""
    with span("huge") as root:
        for layer in range(49):
            with span(f"layer-{layer}"):
                for op in range(100):
                    with span(f"op-{op}", attributes={"op": op}):
                        pass
        with ExitStack() as stack:
            for level in range(50):
                stack.enter_context(span(f"chain-{level}"))
    assert len(autotrace.get_trace_store().get_trace(root.trace_id) or []) == 5000
    expect = _expect()
    open_viewer(page, server.url)
    started = time.monotonic()
    page.locator(f".trace-row[data-trace-id='{root.trace_id}']").click()
    expect(page.locator("#waterfall")).to_have_attribute("data-total", "5000", timeout=60_000)
    waterfall_s = time.monotonic() - started
    assert page.locator("#waterfall .wf-row").count() < 150
    page.eval_on_selector("#waterfall", "e => { e.scrollTop = e.scrollHeight; }")
    expect(span_row(page, "chain-49")).to_be_visible()
    started = time.monotonic()
    page.click("#view-flame")
    expect(page.locator("#flame")).to_have_attribute("data-ms", re.compile(r"\d"), timeout=60_000)
    flame_s = time.monotonic() - started
    flame_ms = float(page.get_attribute("#flame", "data-ms") or "0")
    page.eval_on_selector("#flame", "e => { e.scrollTop = e.scrollHeight; }")
    assert page.evaluate("1 + 1") == 2
    screenshot(page, "flame-5000")
    print(f"\n5000-span trace: waterfall {waterfall_s:.2f}s (with fetch), flame {flame_s:.2f}s ({flame_ms:.0f} ms)")
    assert waterfall_s < 30 and flame_s < 30  # a generous bound: a hang, not a slow machine


def test_stats_tab_page_and_deep_link(server: Any, page: Any) -> None:
    """#tab=stats shows per-name rows, sortable by a header click; a name opens the slowest trace holding it."""
    ids = _shop()
    ms = _durations_ms(ids)
    slowest = max(ms, key=lambda n: ms[n])
    expect = _expect()
    open_viewer(page, server.url, "#tab=stats")
    table = page.locator("#stats-table tbody tr")
    expect(page.locator("main")).to_be_hidden()
    names = sorted(page.locator("#stats-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.name)"))
    assert len(names) == 8, names
    page.locator("#stats-table th button[data-col='max']").click()
    expect(table.first).to_have_attribute("data-name", slowest)  # the slowest root first
    page.locator("#stats-table th button[data-col='max']").click()
    expect(table.last).to_have_attribute("data-name", slowest)
    expect(page.locator("#stats-table tr[data-name='login'] td").nth(2)).to_have_text("1")
    screenshot(page, "stats")
    page.locator("#stats-table tr[data-name='search.work'] a").click()
    expect(page.locator("main")).to_be_visible()
    expect(page.locator("#trace-title")).to_have_text("search")
    expect(page.locator("#detail h2")).to_have_text("search.work")
    assert ids["search"] in page.url
    page.click("#tab-stats")
    expect(page.locator("#stats-pane")).to_be_visible()
    page.click("#tab-traces")
    expect(page.locator("#stats-pane")).to_be_hidden()


def test_inflight_tab_shows_blocked_requests_live(server: Any, page: Any) -> None:
    """#tab=inflight: blocked requests oldest first, age growing, innermost span, trace link; gone when done."""
    import threading

    from autotrace import traced

    expect = _expect()
    release = threading.Event()
    entered = threading.Barrier(3)

    @traced("POST /v1/generate", kind="server")
    def handle() -> None:
        load()

    @traced("load weights")
    def load() -> None:
        entered.wait(10)
        release.wait(60)

    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))
    unsampled = threading.Thread(target=handle)
    unsampled.start()
    time.sleep(0.02)  # older than the sampled one
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0))
    sampled = threading.Thread(target=handle)
    sampled.start()
    try:
        entered.wait(10)
        open_viewer(page, server.url, "#tab=inflight")
        rows = page.locator("#inflight-table tbody tr")
        expect(rows).to_have_count(2)
        expect(page.locator("main")).to_be_hidden()
        expect(rows.first).to_have_attribute("data-sampled", "false")
        expect(rows.first.locator("td").nth(3)).to_have_text("not sampled")
        expect(rows.nth(1)).to_have_attribute("data-sampled", "true")
        expect(rows.nth(1).locator("td[data-col='where']")).to_have_text("POST /v1/generate › load weights")
        tid = rows.nth(1).get_attribute("data-trace")
        assert tid and re.fullmatch(r"[0-9a-f]{32}", tid)
        expect(rows.nth(1).locator("a")).to_have_attribute("href", "#trace=" + tid)
        age = rows.first.locator("td[data-col='age']")
        before = age.inner_text()
        expect(age).not_to_have_text(before, timeout=20_000)  # refreshed live: the age grows
        screenshot(page, "inflight")
    finally:
        release.set()
        unsampled.join()
        sampled.join()
    expect(page.locator("#inflight-empty")).to_be_visible(timeout=20_000)
    page.goto(server.url + "/#tab=stats")
    page.goto(server.url + "/#tab=inflight")
    expect(page.locator("#inflight-empty")).to_be_visible()


def test_compare_two_traces_shows_deltas(server: Any, page: Any) -> None:
    """#compare=A,B matches spans by name path; each matched row carries B − A; unmatched spans are marked."""

    def request(extra: bool) -> str:
        with span("req") as root:
            with span("load"):
                time.sleep(0.002)
            for _ in range(2):
                with span("step"):
                    time.sleep(0.001)
            if extra:
                with span("retry"):
                    pass
        return root.trace_id

    a, b = request(False), request(True)
    store = autotrace.get_trace_store()
    dur = {
        tid: [(s.name, s.duration_ns) for s in sorted(store.get_trace(tid) or [], key=lambda s: s.start_time_unix_nano)]
        for tid in (a, b)
    }
    expect = _expect()
    open_viewer(page, server.url, f"#compare={a},{b}")
    rows = page.locator("#compare-table tbody tr")
    expect(rows).to_have_count(5)
    keys = [rows.nth(i).get_attribute("data-key") for i in range(5)]
    assert keys == ["/req#1", "/req#1/load#1", "/req#1/step#1", "/req#1/step#2", "/req#1/retry#1"]
    for i, (name, d_a) in enumerate(dur[a]):
        name_b, d_b = dur[b][i]
        assert name == name_b
        assert d_a is not None and d_b is not None
        assert rows.nth(i).get_attribute("data-delta-ns") == str(d_b - d_a)
    expect(rows.last).to_have_class(re.compile("unmatched"))
    expect(rows.last.locator(".delta")).to_have_text("only in B")
    screenshot(page, "compare")
    page.click("#compare-close")
    expect(page.locator("#compare-pane")).to_be_hidden()
    # The same through the page: pin one trace, open the other, compare.
    page.goto(server.url + f"/#trace={a}")
    page.click("#pin-compare")
    page.locator(f".trace-row[data-trace-id='{b}']").click()
    page.click("#pin-compare")
    expect(rows).to_have_count(5)
    assert f"compare={a},{b}" in page.url


def test_llm_span_block(server: Any, page: Any) -> None:
    """An LLM span shows model, token counts, prompt and completion as readable text in the details."""
    with autotrace.llm("chat", model="tiny-llm", provider="local", capture_io=True) as call:
        call.set_input([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<b>Hi</b> there"}])
        call.set_output("Hello! How can I help?")
        call.set_usage(input_tokens=12, output_tokens=5)
        call.set_response(model="tiny-llm-1", finish_reasons=["stop"])
    expect = _expect()
    open_viewer(page, server.url)
    page.locator(".trace-row").first.click()
    block = page.locator("#detail-llm")
    expect(block).to_be_visible()
    expect(block.locator("#llm-tokens")).to_have_text("in 12 · out 5 · total 17")
    expect(block).to_contain_text("tiny-llm")
    expect(block.locator("#llm-prompt")).to_have_text("system: Be brief.\n\nuser: <b>Hi</b> there")
    expect(block.locator("#llm-completion")).to_have_text("assistant: Hello! How can I help?")
    screenshot(page, "llm")


def test_xss_inert_in_every_view(server: Any, page: Any, probe: Any) -> None:
    """Markup in names, attribute keys and values stays text in list, waterfall, flame, details, stats and compare."""
    evil_key = '<img src=x onerror="window.__xss=4">'
    tids = []
    for _ in range(2):
        with span(XSS_NAME, attributes={evil_key: '<svg onload="window.__xss=5">', "k": "<b>v</b>"}) as s:
            with span("<script>window.__xss=6</script>"):
                pass
        tids.append(s.trace_id)
    expect = _expect()
    open_viewer(page, server.url, "#q=" + "onerror")
    expect(page.locator(".trace-row")).to_have_count(2)
    expect(page.locator(".trace-row .tr-name").first).to_have_text(XSS_NAME)
    page.locator(".trace-row").first.click()
    expect(page.locator("#waterfall .wf-row")).to_have_count(2)
    expect(page.locator(f"#detail tr[data-key='{evil_key}'] .val")).to_have_text('<svg onload="window.__xss=5">')
    page.click("#view-flame")
    expect(page.locator("#flame-body .fl-block")).to_have_count(2)
    page.goto(server.url + "/#tab=stats")
    expect(page.locator("#stats-table tbody tr")).to_have_count(2)
    page.goto(server.url + f"/#compare={tids[0]},{tids[1]}")
    expect(page.locator("#compare-table tbody tr")).to_have_count(2)
    expect(page.locator("#compare-title")).to_contain_text(XSS_NAME)
    page.wait_for_timeout(300)
    assert page.evaluate("document.querySelectorAll('img, svg, b').length") == 0
    assert page.evaluate("document.scripts.length") == 1
    assert page.evaluate("window.__xss") is None
    assert probe.dialogs == []


def test_dark_mode_and_1024_layout(server: Any, browser: Any) -> None:
    """prefers-color-scheme: dark darkens the page; at 1024 px wide the three panes fit without a page scrollbar."""
    record_demo_traces(3)
    context = browser.new_context(viewport={"width": 1024, "height": VIEWPORT["height"]}, color_scheme="dark")
    try:
        page = context.new_page()
        open_viewer(page, server.url)
        page.locator(".trace-row").first.click()
        _expect()(page.locator("#waterfall .wf-row").first).to_be_visible()
        span_row(page, "decode").last.click()
        bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert bg == "rgb(15, 17, 21)", bg
        assert page.evaluate("document.documentElement.scrollWidth") <= 1024
        panes = [page.locator(sel).bounding_box() for sel in ("#list-pane", "#trace-pane", "#detail-pane")]
        assert all(p is not None and p["width"] >= 230 for p in panes)
        screenshot(page, "dark")
    finally:
        context.close()


def test_open_trace_is_fetched_again_only_when_it_changes(server: Any, page: Any) -> None:
    """Other traces arriving do not refetch the open trace; a span joining it does, and it is redrawn."""
    with span("grow") as root:
        pass
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if f"/traces/{root.trace_id}" in r.url else None)
    expect = _expect()
    open_viewer(page, server.url, f"#trace={root.trace_id}")
    expect(page.locator("#waterfall .wf-row")).to_have_count(1)
    with span("other"):
        pass
    expect(page.locator(".trace-row")).to_have_count(2)
    page.wait_for_timeout(3500)  # one more poll period
    assert len(requests) == 1, requests
    with span("late-child", parent=root.get_span_context()):
        pass
    expect(page.locator("#waterfall .wf-row")).to_have_count(2)
    assert len(requests) == 2, requests


def test_xss_inert_in_the_inflight_tab(server: Any, page: Any, probe: Any) -> None:
    """Markup in the names of open requests and their open spans stays text in the In-flight tab."""
    import threading

    from autotrace import traced

    expect = _expect()
    release = threading.Event()
    entered = threading.Event()

    @traced(XSS_NAME, kind="server")
    def handle() -> None:
        inner()

    @traced('<svg onload="window.__xss=7">')
    def inner() -> None:
        entered.set()
        release.wait(60)

    worker = threading.Thread(target=handle)
    worker.start()
    try:
        assert entered.wait(10)
        open_viewer(page, server.url, "#tab=inflight")
        rows = page.locator("#inflight-table tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first.locator("td[data-col='where']")).to_have_text(f'{XSS_NAME} › <svg onload="window.__xss=7">')
        page.wait_for_timeout(300)  # give a stray onerror/onload time to fire
        assert page.evaluate("document.querySelectorAll('img, svg').length") == 0
        assert page.evaluate("document.scripts.length") == 1
        assert page.evaluate("window.__xss") is None
        assert probe.dialogs == []
    finally:
        release.set()
        worker.join()


def test_inflight_tab_says_what_it_left_out(server: Any, page: Any) -> None:
    """A chain cut by the server shows "… N more"; past the 200 oldest open requests, a note gives the count."""
    import threading

    from autotrace import traced
    from autotrace.propagation import extract

    expect = _expect()
    release = threading.Event()
    entered = threading.Event()

    @traced("dig")
    def dig(depth: int) -> None:
        if depth:
            dig(depth - 1)
            return
        entered.set()
        release.wait(60)

    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0))
    deep = threading.Thread(target=dig, args=(69,))  # 70 open spans: the server lists the root and the 63 innermost
    deep.start()
    remote = extract({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    try:
        assert entered.wait(10)
        with ExitStack() as stack:
            for i in range(205):  # local roots below a remote parent, all open at once
                stack.enter_context(span(f"request {i}", kind="server", parent=remote))
            open_viewer(page, server.url, "#tab=inflight")
            expect(page.locator("#inflight-truncated")).to_have_text("The 200 oldest of 206 open requests are shown.")
            rows = page.locator("#inflight-table tbody tr")
            expect(rows).to_have_count(200)
            where = rows.first.locator("td[data-col='where']")
            expect(where).to_have_text(re.compile(r"^dig › … 6 more › dig( › dig){62}$"))
    finally:
        release.set()
        deep.join()
