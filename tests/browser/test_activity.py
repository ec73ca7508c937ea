"""The requests view in a real browser: finished requests, one in flight, an operator's cancel."""

from __future__ import annotations

import concurrent.futures

import openai
from playwright.sync_api import expect

from tests.browser.conftest import OUTPUT, Site
from tests.browser.test_dashboard import ask

# The simulator streams 20 tokens/s here: this stream would last 100 s uncancelled.
LONG_STREAM_TOKENS = 2000


def stream_until_it_ends(site: Site) -> tuple[int, str]:
    """(chunks received, how the stream ended) of a long streamed completion."""
    chunks = 0
    stream = site.server.client(timeout=120).chat.completions.create(
        model="alpha",
        messages=[{"role": "user", "content": "tell me everything"}],
        max_tokens=LONG_STREAM_TOKENS,
        stream=True,
    )
    try:
        for _ in stream:
            chunks += 1
    except openai.APIError as exc:
        return chunks, str(exc)
    return chunks, "ended without an error"


def test_an_operator_sees_requests_and_cancels_one_in_flight(site: Site) -> None:
    assert ask(site, "alpha")
    assert ask(site, "alpha")
    page = site.page("operator")
    page.goto(f"{site.origin}/requests/")
    finished = page.locator("#finished tbody tr[data-request]")
    expect(finished).to_have_count(2, timeout=10_000)
    expect(finished.first.locator('[data-field="model"]')).to_have_text("alpha")
    expect(finished.first.locator('[data-field="status"]')).to_have_text("200")
    expect(finished.first.locator('[data-field="completion_tokens"]')).not_to_have_text("—")

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        streaming = pool.submit(stream_until_it_ends, site)
        live = page.locator("#in-flight tbody tr[data-request]")
        expect(live).to_have_count(1, timeout=20_000)
        expect(live.locator('[data-field="state"]')).to_have_text("streaming", timeout=20_000)
        page.screenshot(path=str(OUTPUT / "requests-in-flight.png"), full_page=True)
        live.locator('button[data-action="cancel"]').click()  # the dialog is accepted
        chunks, ending = streaming.result(timeout=60)

    assert "cancelled by an llmux operator" in ending, ending
    assert 0 < chunks < LONG_STREAM_TOKENS
    expect(page.locator("#requests-state")).to_contain_text("cancel of request")
    expect(page.locator("#in-flight tbody tr[data-request]")).to_have_count(0, timeout=20_000)
    expect(finished.first.locator('[data-field="status"]')).to_have_text(
        "200 cancelled", timeout=20_000
    )
    audited = site.server.query(
        "SELECT actor_name, action, result FROM models_app_auditentry"
        " WHERE action = 'cancel_request'"
    )
    assert [tuple(row) for row in audited] == [("operator", "cancel_request", "ok")]
    page.screenshot(path=str(OUTPUT / "requests-cancelled.png"), full_page=True)
    assert site.console_errors == []


def test_a_viewer_sees_in_flight_requests_without_a_cancel_button(site: Site) -> None:
    page = site.page("viewer")
    page.goto(f"{site.origin}/requests/")
    expect(page.locator("#in-flight tbody")).to_contain_text("Nothing in flight.")
    expect(page.locator('button[data-action="cancel"]')).to_have_count(0)
    expect(page.locator('button[data-action="capture"]')).to_have_count(0)
    assert site.console_errors == []
