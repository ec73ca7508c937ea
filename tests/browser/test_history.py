"""The swap history and the charts in a real browser: rows of real switches whose phases
add up, live rows and charts, clear errors for filters that cannot apply, cards on a phone,
and a charts page that loads small and then from the cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.browser.conftest import CHROMIUM, OUTPUT, Site
from tests.browser.test_dashboard import ask
from tests.integration.harness import new_llmux, sim_model
from tests.integration.invariants import wait_until
from tests.plugins.engines import free_port

PHONE = {"width": 390, "height": 844}
CHARTS_BUDGET = 1_500_000  # bytes on the wire for the charts page, cold


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """Two simulated models; the active one is kept 1 s (min_active_secs): a cooldown."""
    server = new_llmux(tmp_path)
    config = {
        "vllm_command": "llmux-sim",
        "policy": {"min_active_secs": 1, "request_timeout_secs": 60},
        "models": {
            "alpha": sim_model(free_port(), sleep_level=1),
            "beta": sim_model(free_port(), sleep_level=1),
        },
    }
    server.start(config)
    passwords = {"admin": (server.data_dir / "initial_admin_password").read_text().strip()}
    passwords["operator"] = "operator-password-1"
    server.manage(
        "from django.contrib.auth.models import Group, User; "
        "u = User.objects.create_user('operator', password='operator-password-1'); "
        "u.groups.add(Group.objects.get_or_create(name='operator')[0])"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield Site(server, browser, passwords, config)
        finally:
            browser.close()
            server.stop()


def number(text: str) -> float:
    return float(text.replace(",", ""))


def row_figures(page: Page, swap: str) -> tuple[dict[str, float], float]:
    """The phases and the total a swap's row shows, as a person reads them."""
    row = page.locator(f'tr[data-swap="{swap}"]')
    phases = {
        item.get_attribute("data-phase") or "": number(item.locator("strong").inner_text())
        for item in row.locator("li[data-phase]").all()
    }
    return phases, number(row.locator('[data-field="total"]').inner_text())


def swap_ids(site: Site, to: str) -> list[str]:
    site.server.swaps()  # none in progress
    rows = site.server.query("SELECT id FROM models_app_swapevent WHERE to_name = ?", to)
    return [str(row[0]) for row in rows]


def test_a_new_swap_appears_live_with_phases_adding_up_and_who_did_what(site: Site) -> None:
    page = site.page("admin")
    page.goto(f"{site.origin}/swaps/")
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("window.__notReloaded = true")
    expect(page.locator("tr.empty")).to_have_text("No swaps.")

    # A client's request for beta right after alpha's: alpha is kept its 1 s first (the
    # cooldown), then evicted.
    assert ask(site, "alpha")
    assert ask(site, "beta")
    (beta,) = swap_ids(site, "beta")
    row = page.locator(f'tr[data-swap="{beta}"]')
    expect(row.locator(".badge").first).to_have_text("Succeeded", timeout=5000)
    phases, total = row_figures(page, beta)
    assert set(phases) >= {"queue", "cooldown", "drain", "evict", "bringup", "readiness"}
    # Each figure is rounded to the millisecond on its own: the sum is within that.
    assert abs(sum(phases.values()) - total) <= 0.5 * (len(phases) + 1), (phases, total)
    text = row.inner_text()
    assert "Make active" in text and "Client request" in text
    assert "evict alpha: offload · keep running" in text and "bring up beta: wake" not in text
    assert "bring up beta: cold start" in text

    # An operator's switch from another browser: its row names the operator.
    operator = site.page("operator")
    operator.goto(f"{site.origin}/models/alpha/")
    operator.locator('#actions button[data-action="switch"]').click()
    wait_until(lambda: site.server.states().get("alpha") == "running", timeout=30, what="alpha")
    (_, back) = swap_ids(site, "alpha")
    row = page.locator(f'tr[data-swap="{back}"]')
    expect(row.locator('[data-field="actor"]')).to_have_text("operator", timeout=5000)
    expect(row.locator(".badge").first).to_have_text("Succeeded", timeout=5000)
    assert "Dashboard" in row.inner_text() and "bring up alpha: wake" in row.inner_text()
    phases, total = row_figures(page, back)
    assert abs(sum(phases.values()) - total) <= 0.5 * (len(phases) + 1), (phases, total)
    assert page.evaluate("window.__notReloaded") is True
    assert page.locator("#swap-count").inner_text().startswith("3 swaps")
    assert site.console_errors == []


def test_the_charts_say_an_empty_window_is_empty_then_draw_a_switch_live(site: Site) -> None:
    page = site.page("admin")
    page.goto(f"{site.origin}/charts/?hours=1")
    expect(page.locator("#live")).to_have_text("live")
    for chart in ("chart-timeline", "chart-latency", "chart-memory"):
        expect(page.locator(f'[data-empty-for="{chart}"]')).to_be_visible()
        expect(page.locator(f"#{chart}")).to_be_hidden()
    expect(page.locator("#chart-note")).to_have_text("0 swaps in this window.")
    assert "2000" not in page.locator("main").inner_text()
    page.evaluate("window.__notReloaded = true")

    assert ask(site, "alpha")
    assert ask(site, "beta")
    expect(page.locator("#chart-note")).to_have_text("2 swaps in this window.", timeout=5000)
    # Once beta's switch ended (it may still run above), both models hold a bar.
    page.wait_for_function(
        "() => (document.getElementById('chart-timeline').data || []).length === 2", timeout=5000
    )
    for chart in ("chart-timeline", "chart-latency"):
        expect(page.locator(f"#{chart} .main-svg").first).to_be_attached()
        expect(page.locator(f'[data-empty-for="{chart}"]')).to_be_hidden()
    assert page.evaluate("window.__notReloaded") is True
    # One colour per model in every chart; the latency categories name target and bring-up.
    colours: dict[str, Any] = page.evaluate(
        """() => {
          const of = (id) => document.getElementById(id).data;
          const colour = (t) => [t.name, t.marker.color];
          const timeline = Object.fromEntries(of("chart-timeline").map(colour));
          return {timeline, latency: of("chart-latency").map(colour)};
        }"""
    )
    assert colours["timeline"]["alpha"] != colours["timeline"]["beta"]
    assert colours["latency"] == [
        ["alpha · cold start", colours["timeline"]["alpha"]],
        ["beta · cold start", colours["timeline"]["beta"]],
    ]
    assert "switch total (ms)" in page.locator("#chart-latency").inner_text()
    assert site.console_errors == []

    loads_small_and_compressed_then_from_the_cache(site)


def loads_small_and_compressed_then_from_the_cache(site: Site) -> None:
    """The charts page on a cold load: under CHARTS_BUDGET on the wire, plotly.js gzipped,
    every static file cacheable for good; then again, all of them from the cache."""
    page = site.page("admin")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.clearBrowserCache")
    wire: dict[str, int] = {}
    responses: dict[str, dict[str, Any]] = {}
    urls: dict[str, str] = {}
    on = cdp.on
    on("Network.requestWillBeSent", lambda e: urls.update({e["requestId"]: e["request"]["url"]}))
    on("Network.responseReceived", lambda e: responses.update({e["requestId"]: e["response"]}))
    on("Network.loadingFinished", lambda e: wire.update({e["requestId"]: e["encodedDataLength"]}))
    page.goto(f"{site.origin}/charts/")
    page.wait_for_load_state("networkidle")
    expect(page.locator("#chart-note")).to_contain_text("swaps in this window")
    cold = sum(wire.values())
    assert cold < CHARTS_BUDGET, {urls[r]: n for r, n in wire.items()}
    plotly = next(r for r, url in urls.items() if "/static/vendor/plotly" in url)
    headers = {k.lower(): v for k, v in responses[plotly]["headers"].items()}
    assert headers["content-encoding"] in ("gzip", "br") and wire[plotly] < 700_000
    static = [r for r, url in urls.items() if "/static/" in url]
    assert len(static) >= 3
    for request in static:
        headers = {k.lower(): v for k, v in responses[request]["headers"].items()}
        assert headers["cache-control"] == "public, max-age=31536000, immutable", urls[request]

    # Again: the scripts and styles come from the browser's cache, nothing from the wire.
    page.goto(f"{site.origin}/swaps/")  # (going to the same URL again would be a reload)
    wire.clear()
    responses.clear()
    cached: set[str] = set()
    on("Network.requestServedFromCache", lambda e: cached.add(e["requestId"]))
    page.goto(f"{site.origin}/charts/")
    page.wait_for_load_state("networkidle")
    for request, response in responses.items():
        if "/static/" in urls[request]:
            assert response.get("fromDiskCache") or request in cached, urls[request]
    assert sum(wire.values()) < 50_000, {urls[r]: n for r, n in wire.items()}
    print(f"charts page: {cold:,} bytes cold, {sum(wire.values()):,} bytes warm")
    assert site.console_errors == []


def test_on_a_phone_every_swap_and_image_is_a_card_with_every_column(site: Site) -> None:
    assert ask(site, "alpha")
    page = site.page("admin")
    page.set_viewport_size(PHONE)
    page.goto(f"{site.origin}/swaps/")
    expect(page.locator("#live")).to_have_text("live")
    assert ask(site, "beta")
    (beta,) = swap_ids(site, "beta")
    expect(page.locator(f'tr[data-swap="{beta}"] .badge').first).to_have_text("Succeeded")
    site.server.manage(
        "from checkpoints_app.models import CheckpointImage; "
        "CheckpointImage.objects.create(model_name='alpha', status='failed', bytes=4 << 20, "
        "location='/var/lib/llmux/images/alpha/0001-a-long-directory-name-for-the-image')"
    )
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for path, row in (("/swaps/", "tr[data-swap]"), ("/checkpoints/", "tr[data-image]")):
        page.goto(f"{site.origin}{path}")
        page.wait_for_load_state("networkidle")
        cards = page.evaluate(CARDS, row)
        assert len(cards) >= (2 if row == "tr[data-swap]" else 1), path
        headers = page.evaluate(
            "(row) => [...document.querySelectorAll(`table:has(${row}) thead th`)]"
            ".map((th) => th.innerText.trim())",
            row,
        )
        for card in cards:
            assert card["labels"] == headers, card  # each column, named in the card
            assert all(shown not in ("none", "normal") for shown in card["before"]), card
            for cell in card["cells"]:
                assert cell["text"], (path, card)  # and its information shown
                assert cell["visible"] and cell["left"] >= 0 and cell["right"] <= PHONE["width"]
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.screenshot(path=str(OUTPUT / f"{path.strip('/')}-cards-390.png"), full_page=True)
    assert site.console_errors == []
    filters_that_cannot_apply_say_why(site, page)


def filters_that_cannot_apply_say_why(site: Site, page: Page) -> None:
    """A 400 page that names the parameter and keeps the form, not a 500 or a silence."""
    for query, says in (
        ("outcme=failed", "outcme: not a parameter here"),
        ("since=2026-02-30T10:00", "since: expected a date and time"),
        ("page=9", "page: expected a whole number from 1 to 1"),
    ):
        response = page.goto(f"{site.origin}/swaps/?{query}")
        assert response is not None and response.status == 400
        expect(page.locator("#filter-error")).to_contain_text(says)
        expect(page.locator("form.filters")).to_be_visible()
    response = page.goto(f"{site.origin}/charts/?hours=0")
    assert response is not None and response.status == 400
    expect(page.locator("#filter-error")).to_contain_text("hours: expected a number")
    # The browser reports each 400 it was sent; nothing else went wrong.
    assert len(site.console_errors) == 4
    assert all("status of 400" in error for error in site.console_errors)


CARDS = """
(row) => [...document.querySelectorAll(row)].map((tr) => ({
  labels: [...tr.cells].map((td) => td.dataset.label),
  before: [...tr.cells].map((td) => getComputedStyle(td, "::before").content),
  cells: [...tr.cells].map((td) => {
    const box = td.getBoundingClientRect();
    const style = getComputedStyle(td);
    return {
      text: td.innerText.trim(),
      visible: style.display !== "none" && style.visibility !== "hidden"
        && box.width > 0 && box.height > 0,
      left: box.left, right: box.right,
    };
  }),
}))
"""
