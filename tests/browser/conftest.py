"""A running llmux and Debian's chromium driven by Playwright (no browser download)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from llmux_site.core.criu import Criu
from tests.integration.harness import REPO, Llmux, new_llmux, sim_model
from tests.plugins.engines import free_port

CHROMIUM = "/usr/bin/chromium"
# Screenshots of every page go here (not committed; CI keeps the folder as its output).
OUTPUT = Path(os.environ.get("LLMUX_TEST_OUTPUT", REPO / "test-output")) / "screenshots"
VIEWPORT = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
# Every dashboard page an admin sees, by the name its navigation link has (lowercase).
PAGES = {
    "overview": "/",
    "model": "/models/alpha/",
    "swaps": "/swaps/",
    "requests": "/requests/",
    "charts": "/charts/",
    "checkpoints": "/checkpoints/",
    "playground": "/playground/",
    "audit": "/audit/",
    "keys": "/keys/",
}


def dashboard_config(criu: Criu, sockets: Path) -> dict[str, Any]:
    slow = ["--sim-response-delay-ms", "300", "--sim-tokens-per-sec", "20"]
    return {
        "vllm_command": "llmux-sim",
        "policy": {"min_active_secs": 0, "request_timeout_secs": 60},
        "checkpoint": {"criu_path": criu.binary, "images_dir": str(sockets / "images")},
        "models": {
            # On a Unix socket: CRIU cannot dump a TCP socket on this kernel.
            "gamma": {
                "model_path": f"sim/gamma-{sockets.name}",
                "uds": str(sockets / "gamma.sock"),
                "extra_args": ["--sim-weights-bytes", "4MiB", "--sim-startup-seconds", "0"],
                "eviction": {"weights": "discard", "process": "checkpoint"},
            },
            "alpha": sim_model(free_port(), sleep_level=1, extra_args=slow),
            "beta": sim_model(
                free_port(),
                sleep_level=1,
                extra_args=[*slow, "--sim-startup-seconds", "1"],
            ),
        },
    }


@dataclass
class Site:
    server: Llmux
    browser: Browser
    passwords: dict[str, str]
    config: dict[str, Any]
    console_errors: list[str] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def page(self, user: str, viewport: dict[str, int] = VIEWPORT) -> Page:
        """A fresh browser context logged in as `user`; console errors are collected."""
        context = self.browser.new_context(viewport=viewport, accept_downloads=True)  # type: ignore[arg-type]
        page = context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console_errors.append(f"pageerror: {error}"))
        page.on("dialog", lambda dialog: dialog.accept())  # the actions' confirmations
        page.goto(f"{self.origin}/login/")
        page.fill("#id_username", user)
        page.fill("#id_password", self.passwords[user])
        page.click("button[type=submit]")
        page.wait_for_url(f"{self.origin}/")
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} ({message.location})")


@contextmanager
def open_site(
    tmp_path: Path, config: dict[str, Any], env: dict[str, str] | None = None
) -> Iterator[Site]:
    """llmux serving `config` (with `env`'s settings), its three users, and chromium."""
    server = new_llmux(tmp_path)
    server.start(config, env)
    passwords = {"admin": (server.data_dir / "initial_admin_password").read_text().strip()}
    for role in ("operator", "viewer"):
        passwords[role] = f"{role}-password-1"
        server.manage(
            "from django.contrib.auth.models import Group, User; "
            f"u = User.objects.create_user('{role}', password='{passwords[role]}'); "
            + (f"u.groups.add(Group.objects.get_or_create(name='{role}')[0])")
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield Site(server, browser, passwords, config)
        finally:
            browser.close()
            server.stop()


@pytest.fixture
def site(tmp_path: Path, criu: Criu, short_tmp_dir: Path) -> Iterator[Site]:
    with open_site(tmp_path, dashboard_config(criu, short_tmp_dir)) as opened:
        yield opened


@pytest.fixture
def cooldown_site(tmp_path: Path, criu: Criu, short_tmp_dir: Path) -> Iterator[Site]:
    """A site whose models stay active at least COOLDOWN_SECS: every switch has a cooldown."""
    config = dashboard_config(criu, short_tmp_dir)
    config["policy"]["min_active_secs"] = COOLDOWN_SECS
    config["models"]["beta"]["sleep_level"] = 5  # stopped when evicted: each bring-up is slow
    with open_site(tmp_path, config) as opened:
        yield opened


COOLDOWN_SECS = 8
