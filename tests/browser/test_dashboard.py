"""The dashboard in a real browser: live switches, failures, actions, roles, every page."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import time

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import OUTPUT, PAGES, Site
from tests.integration.invariants import simulator_processes, wait_until

PHASE_OBSERVER = """
() => {
  window.__phases = [];
  const target = document.querySelector('[data-switch="phase"]');
  new MutationObserver(() => window.__phases.push(target.textContent))
    .observe(target, {childList: true, characterData: true, subtree: true});
}
"""


def state_in_page(page: Page, model: str) -> str:
    return page.inner_text(f'tr[data-model="{model}"] [data-field="state"]')


def ask(site: Site, model: str) -> str:
    answer = site.server.client(timeout=60).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    return answer.choices[0].message.content or ""


def test_a_switch_shows_live_and_a_killed_engine_shows_failed(site: Site) -> None:
    assert ask(site, "alpha")
    page = site.page("admin")
    expect(page.locator("#live")).to_have_text("live")
    assert state_in_page(page, "alpha") == "Running"
    assert state_in_page(page, "beta") == "Not started"
    page.evaluate(PHASE_OBSERVER)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answered = pool.submit(ask, site, "beta")
        # Within 1 s of the recorded state change, the page shows it, without a reload.
        wait_until(
            lambda: site.server.states().get("beta") == "running",
            timeout=30,
            interval=0.01,
            what="beta to be recorded running",
        )
        recorded = time.monotonic()
        expect(page.locator('tr[data-model="beta"] [data-field="state"]')).to_have_text(
            "Running", timeout=1000
        )
        shown = time.monotonic()
        assert answered.result(timeout=60)
    assert shown - recorded <= 1.0
    assert state_in_page(page, "alpha") == "Sleeping"
    expect(page.locator("#groups")).to_contain_text("serving beta · mode auto")
    phases = set(page.evaluate("window.__phases"))
    # The phases the swap recorded (each a few hundred ms here) all appeared on the page.
    assert {"bring-up", "readiness"} <= phases, phases

    (beta,) = simulator_processes(
        site.server.query("SELECT model_path FROM models_app_modeldefinition WHERE name = 'beta'")[
            0
        ][0]
    )
    os.kill(beta.pid, signal.SIGKILL)
    killed = time.monotonic()
    expect(page.locator('tr[data-model="beta"] [data-field="state"]')).to_have_text(
        "Failed", timeout=2000
    )
    assert time.monotonic() - killed <= 2.0
    # The row says why, from the end of the recorded error.
    expect(page.locator('tr[data-model="beta"] [data-field="error"]')).to_have_text(
        re.compile(r"\S")
    )
    expect(page.locator("#groups")).to_contain_text("serving nothing")
    assert site.console_errors == []


def submit(page: Page, row_or_section: str, action: str) -> None:
    """A plain form post (a page that is not live): the page reloads with the message."""
    page.locator(f'{row_or_section} button[data-action="{action}"]').first.click()
    page.wait_for_load_state()


def act(page: Page, row_or_section: str, action: str, ends: str = "succeeded") -> str:
    """Click an action on a live page (no reload) and wait for its final outcome there."""
    newest = page.evaluate("document.querySelector('#outcomes li')?.dataset.seq || '0'")
    page.locator(f'{row_or_section} button[data-action="{action}"]').first.click()
    item = page.locator("#outcomes li").first
    expect(item).not_to_have_attribute("data-seq", newest, timeout=10000)
    expect(item).to_have_class(re.compile(rf"outcome-{ends}\b"), timeout=60000)
    return item.inner_text()


def test_every_action_works_from_the_page_and_ends_in_the_history_and_audit(site: Site) -> None:
    page = site.page("operator")
    alpha = 'tr[data-model="alpha"]'
    assert "→ succeeded" in act(page, alpha, "switch")
    assert site.server.states().get("alpha") == "running"
    url = page.url
    # Blocked with the reason: alpha runs, so "switch to alpha" does not apply.
    switch = page.locator(f'{alpha} button[data-action="switch"]')
    expect(switch).to_be_disabled()
    assert switch.get_attribute("title") == "alpha is running already"
    assert page.url == url  # no reload

    page.goto(f"{site.origin}/models/beta/")
    assert "wake beta: queued" in act(page, "#actions", "wake")
    assert "already so" in act(page, "#actions", "pin")  # beta runs: the pin has nothing to do
    # The evict form offers the model's own policy (offload, keep the process): it applies.
    assert page.input_value('select[name="weights"]') == "offload"
    page.select_option('select[name="weights"]', "discard")
    act(page, "#actions", "evict")
    assert site.server.states().get("beta") == "sleeping"
    act(page, "#actions", "stop")
    assert site.server.states().get("beta") == "stopped"
    stop = page.locator('#actions button[data-action="stop"]')
    expect(stop).to_be_disabled()
    assert stop.get_attribute("title") == "beta is stopped: there is no engine to stop"

    page.goto(f"{site.origin}/")
    act(page, ".toolbar", "unpin")
    act(page, ".toolbar", "mode")  # auto -> manual
    expect(page.locator("#mode")).to_have_text("manual")
    act(page, ".toolbar", "mode")  # manual -> auto
    expect(page.locator("#mode")).to_have_text("auto")

    page.goto(f"{site.origin}/models/alpha/")
    typed = page.input_value("#definition").replace('"sleep_level": 1', '"sleep_level": 2')
    page.fill("#definition", typed + "}")  # a typo: refused, and the text stays
    act(page, "form", "edit", ends="failed")
    assert page.input_value("#definition") == typed + "}"
    page.fill("#definition", typed)
    assert "alpha saved" in act(page, "form", "edit")

    # CRIU from the page: gamma is brought up, checkpointed, restored; its image deleted.
    page.goto(f"{site.origin}/models/gamma/")
    act(page, "#actions", "switch")
    assert "→ succeeded" in act(page, "#actions", "checkpoint")
    assert site.server.states().get("gamma") == "checkpointed"
    act(page, "#actions", "restore")
    assert site.server.swaps()[-1][1:4] == ("gamma", "succeeded", "restore")
    page.goto(f"{site.origin}/checkpoints/")  # not a live page: the form posts and reloads
    submit(page, "table.images", "delete_image")
    expect(page.locator(".messages")).to_contain_text("deleted")
    assert site.server.query("SELECT status FROM checkpoints_app_checkpointimage") == [("deleted",)]

    audited = dict(
        site.server.query("SELECT action, result FROM models_app_auditentry WHERE action != 'edit'")
    )
    assert set(audited) >= {
        "switch", "wake", "pin", "evict", "stop", "unpin", "mode",
        "checkpoint", "restore", "delete_image",
    }  # fmt: skip
    # Every queued operation's entry got its outcome.
    assert set(audited.values()) == {"ok"}, audited
    details = [d for (d,) in site.server.query("SELECT detail FROM models_app_auditentry")]
    assert any("queued as operation" in d and d.endswith("→ succeeded") for d in details)
    edits = site.server.query("SELECT result FROM models_app_auditentry WHERE action = 'edit'")
    assert sorted(edits) == [("failed",), ("ok",)]
    page.goto(f"{site.origin}/swaps/?model=beta")
    expect(page.locator("table.swaps tbody tr").first).to_be_visible()
    # The refused edit's 400 is the one resource error chromium reports.
    assert [e for e in site.console_errors if "/actions/edit/" not in e] == []


def test_a_viewer_sees_no_controls_and_a_forged_action_is_refused(site: Site) -> None:
    page = site.page("viewer")
    for path in ("/", "/models/alpha/", "/checkpoints/", "/swaps/"):
        page.goto(f"{site.origin}{path}")
        assert page.locator("button[data-action]").count() == 0, path
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    forged = page.request.post(
        f"{site.origin}/actions/switch/",
        form={"model": "alpha", "csrfmiddlewaretoken": token},
        headers={"Referer": f"{site.origin}/"},
    )
    assert forged.status == 403
    assert site.server.query("SELECT count(*) FROM models_app_switchrequest")[0][0] == 0
    assert site.server.query("SELECT actor_name, result FROM models_app_auditentry") == [
        ("viewer", "refused")
    ]


@pytest.mark.parametrize("width", [1440, 390], ids=["laptop", "phone"])
def test_every_page_has_a_screenshot_and_no_console_errors(site: Site, width: int) -> None:
    assert ask(site, "alpha")
    page = site.page("admin")
    page.set_viewport_size({"width": width, "height": 900 if width == 1440 else 844})
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for name, path in PAGES.items():
        page.goto(f"{site.origin}{path}")
        page.wait_for_load_state("networkidle")
        current = page.locator('nav a[aria-current="page"]')
        expect(current).to_have_count(1)  # the navigation marks where the operator is
        assert current.inner_text().lower() == ("overview" if name == "model" else name)
        if name == "charts":
            expect(page.locator("#chart-timeline .main-svg").first).to_be_attached()
        if name == "playground":
            page.select_option("#pg-model", "alpha")
            page.click("#pg-send")
            expect(page.locator("#pg-status")).to_contain_text("done", timeout=30000)
            assert page.inner_text("#pg-conversation li.turn-assistant .text").strip()
        page.screenshot(path=str(OUTPUT / f"{name}-{width}.png"))
    # Keyboard: the first Tab reaches the skip link, and Enter on it leads to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#main"
    page.context.clear_cookies()
    page.goto(f"{site.origin}/login/")
    page.screenshot(path=str(OUTPUT / f"login-{width}.png"))
    assert site.console_errors == []


def test_the_admin_and_the_api_docs_work_under_the_content_security_policy(site: Site) -> None:
    page = site.page("admin")
    for path in (
        "/admin/",
        "/admin/models_app/modeldefinition/",
        "/admin/models_app/modeldefinition/add/",
        "/admin/models_app/apitoken/add/",
        "/admin/auth/user/",
    ):
        page.goto(f"{site.origin}{path}")
        page.wait_for_load_state("networkidle")
        assert page.locator("#content").count() == 1, path
    page.goto(f"{site.origin}/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_be_visible(timeout=10000)
    assert site.console_errors == []
