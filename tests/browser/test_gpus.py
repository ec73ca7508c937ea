"""The overview's GPU panel in a real browser, with simulated engines on two GPUs: each GPU's
utilisation, memory, temperature and power with their history, the bar of which model
holds how much, and the host RAM of sleeping models."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.browser.conftest import CHROMIUM, OUTPUT, Site
from tests.integration.harness import new_llmux, sim_model
from tests.plugins.engines import free_port

# 20 tokens a second after 300 ms: a 100-token answer keeps its engine busy for 5 s.
SLOW = ["--sim-response-delay-ms", "300", "--sim-tokens-per-sec", "20"]
SIZE = r"\d+(\.\d)? (bytes|KB|MB|GB)"
WAIT_MS = 20_000  # generous: the machine may be busy; the panel follows within a second


def gpu_config() -> dict[str, Any]:
    """alpha and beta take turns on GPU 0 (sleeping at level 1); gamma has GPU 1."""
    return {
        "vllm_command": "llmux-sim",
        "policy": {"min_active_secs": 0, "request_timeout_secs": 60},
        "models": {
            "alpha": sim_model(free_port(), sleep_level=1, gpu_ids=[0], extra_args=SLOW),
            "beta": sim_model(free_port(), sleep_level=1, gpu_ids=[0], extra_args=SLOW),
            "gamma": sim_model(free_port(), gpu_ids=[1], extra_args=SLOW),
        },
    }


@pytest.fixture
def gpu_site(tmp_path: Path) -> Iterator[Site]:
    server = new_llmux(tmp_path)
    config = gpu_config()
    server.start(config)
    password = "viewer-password-1"
    server.manage(
        f"from django.contrib.auth.models import User; User.objects.create_user('viewer', "
        f"password='{password}')"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield Site(server, browser, {"viewer": password}, config)
        finally:
            browser.close()
            server.stop()


def ask(site: Site, model: str, tokens: int = 4) -> str:
    answer = site.server.client(timeout=60).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=tokens
    )
    return answer.choices[0].message.content or ""


def field(page: Page, gpu: int, name: str) -> Any:
    return page.locator(f'[data-gpu="{gpu}"] [data-gpu-field="{name}"]')


def segment(page: Page, gpu: int, model: str) -> Any:
    return page.locator(f'[data-gpu="{gpu}"] [data-gpu-bar] rect[data-model="{model}"]')


def test_the_overview_shows_each_gpus_telemetry_who_holds_it_and_what_sleepers_keep(
    gpu_site: Site,
) -> None:
    site = gpu_site
    assert ask(site, "alpha") and ask(site, "gamma")
    page = site.page("viewer")

    for gpu in (0, 1):
        expect(field(page, gpu, "title")).to_have_text(f"GPU {gpu}")
        expect(field(page, gpu, "utilization")).to_have_text(re.compile(r"^\d+ %$"))
        expect(field(page, gpu, "memory")).to_have_text(re.compile(rf"^{SIZE} / 80\.0 GB$"))
        expect(field(page, gpu, "temperature")).to_have_text(re.compile(r"^\d+ °C$"))
        expect(field(page, gpu, "power")).to_have_text(re.compile(r"^\d+ / 700 W$"))
    expect(segment(page, 0, "alpha")).to_have_count(1)
    expect(segment(page, 1, "gamma")).to_have_count(1)
    expect(segment(page, 0, "gamma")).to_have_count(0)
    expect(page.locator('[data-gpu="1"] [data-gpu-legend] [data-share="gamma"]')).to_contain_text(
        re.compile(rf"gamma {SIZE}")
    )
    # The history has a first reading, drawn as a sparkline.
    history = page.locator('[data-gpu="0"] [data-spark="temperature"] path')
    expect(history).to_have_attribute("d", re.compile(r"^M"), timeout=WAIT_MS)

    # While alpha generates, GPU 0 is busy and GPU 1 idle.
    answer = threading.Thread(target=ask, args=(site, "alpha", 100))
    answer.start()
    try:
        expect(field(page, 0, "utilization")).to_have_text(
            re.compile(r"^[1-9]\d* %$"), timeout=WAIT_MS
        )
        expect(field(page, 1, "utilization")).to_have_text("0 %")
    finally:
        answer.join(timeout=60)

    # beta takes GPU 0; alpha sleeps with its weights in host RAM.
    expect(page.locator("[data-sleeping-empty]")).to_be_visible()
    assert ask(site, "beta")
    sleeper = page.locator('#sleeping [data-sleeping="alpha"]')
    expect(sleeper).to_contain_text("Sleeping", timeout=WAIT_MS)
    expect(sleeper.locator("[data-sleeping-bytes]")).to_have_text(re.compile(rf"^{SIZE}$"))
    expect(page.locator("[data-sleeping-empty]")).to_be_hidden()
    expect(segment(page, 0, "beta")).to_have_count(1, timeout=WAIT_MS)
    expect(segment(page, 0, "alpha")).to_have_count(0)

    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "overview-gpus.png"), full_page=True)
    assert site.console_errors == []
