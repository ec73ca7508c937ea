"""The dashboard in a real browser: live switches, failures, actions, roles, every page."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import OUTPUT, Site
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
    phases = set(page.evaluate("window.__phases"))
    # The phases the swap recorded (each a few hundred ms here) all appeared on the page.
    assert {"bringup", "readiness"} <= phases, phases

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
    assert site.console_errors == []


def submit(page: Page, row_or_section: str, action: str) -> None:
    page.locator(f'{row_or_section} button[data-action="{action}"]').first.click()
    page.wait_for_load_state()


def test_every_action_works_from_the_page_and_lands_in_the_history(site: Site) -> None:
    page = site.page("operator")
    alpha = 'tr[data-model="alpha"]'
    submit(page, alpha, "switch")
    expect(page.locator(".messages")).to_contain_text("switch to alpha: queued")
    wait_until(
        lambda: site.server.states().get("alpha") == "running", timeout=30, what="alpha running"
    )

    page.goto(f"{site.origin}/models/beta/")
    for action in ("wake", "pin"):
        submit(page, "#actions", action)
        expect(page.locator(".messages")).to_contain_text("queued")
    wait_until(
        lambda: site.server.states().get("beta") == "running", timeout=30, what="beta running"
    )
    page.select_option('select[name="weights"]', "discard")
    page.select_option('select[name="process"]', "keep_running")
    submit(page, "#actions", "evict")
    wait_until(
        lambda: site.server.states().get("beta") == "sleeping", timeout=30, what="beta evicted"
    )
    submit(page, "#actions", "stop")
    wait_until(
        lambda: site.server.states().get("beta") == "stopped", timeout=30, what="beta stopped"
    )
    page.goto(f"{site.origin}/")
    submit(page, ".toolbar", "unpin")
    submit(page, ".toolbar", "mode")  # auto -> manual
    expect(page.locator("#mode")).to_have_text("manual")
    submit(page, ".toolbar", "mode")  # manual -> auto

    page.goto(f"{site.origin}/models/alpha/")
    definition = page.input_value("#definition").replace('"sleep_level": 1', '"sleep_level": 2')
    page.fill("#definition", definition)
    submit(page, "form", "edit")
    expect(page.locator(".messages")).to_contain_text("alpha saved")

    # CRIU from the page: gamma is brought up, checkpointed, restored; its image deleted.
    page.goto(f"{site.origin}/models/gamma/")
    submit(page, "#actions", "switch")
    wait_until(
        lambda: site.server.states().get("gamma") == "running", timeout=30, what="gamma running"
    )
    submit(page, "#actions", "checkpoint")
    wait_until(
        lambda: site.server.states().get("gamma") == "checkpointed",
        timeout=60,
        what="gamma checkpointed",
    )
    submit(page, "#actions", "restore")
    wait_until(
        lambda: site.server.states().get("gamma") == "running", timeout=60, what="gamma restored"
    )
    assert site.server.swaps()[-1][1:4] == ("gamma", "succeeded", "restore")
    page.goto(f"{site.origin}/checkpoints/")
    submit(page, "table.images", "delete_image")
    expect(page.locator(".messages")).to_contain_text("deleted")
    assert site.server.query("SELECT status FROM checkpoints_app_checkpointimage") == [("deleted",)]

    audited = {row[0] for row in site.server.query("SELECT action FROM models_app_auditentry")}
    assert audited >= {
        "switch",
        "wake",
        "pin",
        "evict",
        "stop",
        "unpin",
        "mode",
        "edit",
        "checkpoint",
        "restore",
        "delete_image",
    }
    failed = site.server.query(
        "SELECT action, detail FROM models_app_auditentry WHERE result IN ('failed', 'refused')"
    )
    assert failed == []
    swaps = site.server.swaps()
    assert any(s[1] == "beta" for s in swaps)
    page.goto(f"{site.origin}/swaps/?model=beta")
    expect(page.locator("table.swaps tbody tr").first).to_be_visible()
    assert site.console_errors == []


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


@pytest.mark.parametrize("width", [1280, 390], ids=["laptop", "phone"])
def test_every_page_has_a_screenshot_and_no_console_errors(site: Site, width: int) -> None:
    assert ask(site, "alpha")
    page = site.page("admin")
    page.set_viewport_size({"width": width, "height": 800 if width == 1280 else 844})
    OUTPUT.mkdir(parents=True, exist_ok=True)
    pages = {
        "overview": "/",
        "model": "/models/alpha/",
        "swaps": "/swaps/",
        "charts": "/charts/",
        "checkpoints": "/checkpoints/",
        "playground": "/playground/",
        "audit": "/audit/",
    }
    for name, path in pages.items():
        page.goto(f"{site.origin}{path}")
        page.wait_for_load_state("networkidle")
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
