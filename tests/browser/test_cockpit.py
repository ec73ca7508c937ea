"""The dashboard as an operator's cockpit, in a real browser: switch progress, the engine
log's live tail, what a lost connection looks like, narrow screens, accessibility."""

from __future__ import annotations

import concurrent.futures
import json
import re
import time
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from tests.browser.conftest import COOLDOWN_SECS, PAGES, PHONE, Site
from tests.browser.test_dashboard import ask

PANEL_OBSERVER = """
() => {
  window.__panel = [];
  const panel = document.getElementById("switch");
  const read = (name) => panel.querySelector(`[data-switch="${name}"]`).textContent;
  new MutationObserver(() => {
    if (panel.hidden) return;
    window.__panel.push({
      phase: read("phase"), countdown: read("countdown"), estimate: read("estimate"),
      waiting: read("waiting"), done: Array.from(panel.querySelectorAll("li.done"))
        .map((li) => li.dataset.phase),
    });
  }).observe(panel, {childList: true, characterData: true, subtree: true, attributes: true});
}
"""


def test_the_switch_panel_counts_down_the_cooldown_estimates_and_shows_each_phase(
    cooldown_site: Site,
) -> None:
    site = cooldown_site
    # History first: beta's first switch gives the estimate something to go on.
    assert ask(site, "alpha")
    assert ask(site, "beta")
    assert ask(site, "alpha")
    page = site.page("operator")
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate(PANEL_OBSERVER)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answered = pool.submit(ask, site, "beta")
        expect(page.locator('#switch [data-switch="phase"]')).to_have_text(
            "cooldown", timeout=COOLDOWN_SECS * 1000
        )
        # The same progress from the management API, with the same session.
        status = page.request.get(f"{site.origin}/api/status/").json()
        (progress,) = status["switches"]
        sides = (progress["from"], progress["to"], progress["phase"])
        assert sides == ("alpha", "beta", "cooldown")
        assert progress["phase_ends_at"] and progress["estimate_from"] == 1
        countdown = page.locator('#switch [data-switch="countdown"]')
        expect(countdown).to_have_text(re.compile(r"ends in \d+ s"))
        estimate = page.locator('#switch [data-switch="estimate"]')
        expect(estimate).to_have_text(re.compile(r"about .+ left \(from 1 earlier switch\)"))
        expect(page.locator('#switch [data-switch="waiting"]')).to_contain_text(
            "1 request waiting for beta"
        )
        assert answered.result(timeout=120)
    seen: list[dict[str, Any]] = page.evaluate("window.__panel")
    phases = [entry["phase"] for entry in seen]
    # Each phase that lasts was shown, in order; cooldown's countdown went down.
    shown = list(dict.fromkeys(p for p in phases if p in ("cooldown", "bring-up", "readiness")))
    assert shown == ["cooldown", "bring-up", "readiness"], phases
    counts = [int(m.group(1)) for e in seen if (m := re.match(r"ends in (\d+) s", e["countdown"]))]
    assert counts[0] > counts[-1], counts
    # Once bring-up shows, the phases before it show as done, with their times.
    later = next(entry for entry in seen if entry["phase"] == "readiness")
    assert {"cooldown", "drain", "evict", "bringup"} <= set(later["done"]), later
    expect(page.locator("#switch")).to_be_hidden()
    assert site.console_errors == []


def test_the_engine_log_tail_shows_new_lines_and_pauses_searches_and_downloads(
    site: Site,
) -> None:
    assert ask(site, "alpha")
    page = site.page("viewer")
    page.goto(f"{site.origin}/models/alpha/")
    expect(page.locator("#log .line.marker")).to_have_count(1)  # the engine's start
    expect(page.locator("#log-status")).to_have_text("following")
    assert ask(site, "beta")  # alpha is put to sleep: its engine says so in its log
    slept = page.locator("#log .line", has_text="sleep level=1")
    expect(slept).to_have_count(1, timeout=15000)
    expect(slept.locator("time")).to_have_count(1)  # a live line has the time it came
    lines = page.locator("#log .line").count()

    page.click("#log-pause")
    assert ask(site, "alpha")  # alpha wakes: a line comes while paused
    expect(page.locator("#log-status")).to_have_text(re.compile(r"paused: \d+ new lines held"))
    assert page.locator("#log .line").count() == lines
    page.click("#log-pause")  # follow again: the held lines come
    expect(page.locator("#log .line", has_text="awake")).to_have_count(1)

    page.fill("#log-search", "awake")
    visible = page.locator("#log .line:visible")
    expect(visible).to_have_count(1)
    assert "awake" in visible.inner_text()
    with page.expect_download() as download:
        page.click("text=Download the whole log")
    text = download.value.path().read_text(encoding="utf-8")
    assert "--- llmux: engine start" in text and "sleep level=1" in text and "awake" in text
    assert site.console_errors == []


def test_a_lost_connection_shows_a_banner_freezes_the_page_and_disables_actions(
    site: Site,
) -> None:
    assert ask(site, "alpha")
    page = site.page("operator")
    expect(page.locator("#live")).to_have_text("live")
    enabled = page.locator("form[data-live-action] button:enabled")
    expect(enabled.first).to_be_visible()
    uptime = page.locator('tr[data-model="alpha"] [data-field="uptime"]')

    site.server.stop()
    expect(page.locator("#stale")).to_be_visible(timeout=10000)
    expect(page.locator("body")).to_have_class(re.compile(r"\bstale\b"))
    expect(enabled).to_have_count(0)  # every action is off
    frozen = uptime.inner_text()
    page.wait_for_timeout(2500)
    assert uptime.inner_text() == frozen  # counters stop: they would count from old data

    site.server.start(site.config)
    expect(page.locator("#stale")).to_be_hidden(timeout=30000)
    expect(page.locator("#live")).to_have_text("live")
    expect(enabled.first).to_be_visible()
    # Reasons come back with the snapshot: the restart stopped alpha's engine.
    stop = page.locator('tr[data-model="alpha"] button[data-action="stop"]')
    expect(stop).to_be_disabled()
    expect(stop).to_have_attribute("title", "alpha is stopped: there is no engine to stop")
    expect(page.locator('tr[data-model="alpha"] button[data-action="switch"]')).to_be_enabled()


CARD_PAGES = {"overview": "/", "model": "/models/alpha/", "keys": "/keys/", "audit": "/audit/"}


def test_on_a_phone_every_table_row_shows_every_column_as_a_labelled_card(site: Site) -> None:
    assert ask(site, "alpha")
    page = site.page("admin", viewport=PHONE)
    page.goto(f"{site.origin}/keys/")
    page.fill('input[name="name"]', "phone")
    page.click('button[data-action="create_key"]')
    for name, path in CARD_PAGES.items():
        page.goto(f"{site.origin}{path}")
        page.wait_for_load_state("networkidle")
        rows = page.locator("table.cards tbody tr")
        assert rows.count() > 0, name
        cells: list[dict[str, Any]] = page.evaluate(
            """() => Array.from(document.querySelectorAll("table.cards tbody tr")).flatMap(
                (row) => Array.from(row.cells).map((cell) => ({
                  label: cell.dataset.label || null,
                  columns: cell.colSpan,
                  visible: cell.offsetParent !== null && cell.getBoundingClientRect().width > 0,
                  text: cell.innerText.trim(),
                  shown: row.innerText,
                  width: cell.getBoundingClientRect().right,
                }))
              )"""
        )
        for cell in cells:
            if cell["columns"] > 1:
                continue  # an empty table's one message
            assert cell["visible"], (name, cell)
            assert cell["label"], (name, cell)
            assert cell["text"] in cell["shown"], (name, cell)
            assert cell["width"] <= PHONE["width"] + 1, (name, cell)  # nothing off screen
    assert site.console_errors == []


def serious(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    violations = Axe().run(page).response["violations"]
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.timeout(600)  # axe-core reads every element of 18 pages
def test_axe_finds_no_serious_or_critical_violation_on_any_page(site: Site) -> None:
    assert ask(site, "alpha")
    found: dict[str, Any] = {}
    for viewport in (None, PHONE):
        page = site.page("admin", viewport=viewport) if viewport else site.page("admin")
        for name, path in PAGES.items():
            page.goto(f"{site.origin}{path}")
            page.wait_for_load_state("networkidle")
            started = time.monotonic()
            if problems := serious(page):
                found[f"{name}@{page.viewport_size}"] = problems
            print(name, viewport, round(time.monotonic() - started, 1))
        page.context.clear_cookies()
        page.goto(f"{site.origin}/login/")
        if problems := serious(page):
            found[f"login@{page.viewport_size}"] = problems
    assert found == {}, json.dumps(found, indent=1)
