"""The playground in a real browser, with API keys required on /v1/: a key minted for the
logged-in user, a conversation through switches, Stop, the figures, copy as curl."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from playwright.sync_api import Page, Request, expect

from tests.browser.conftest import OUTPUT, Site, open_site
from tests.integration.harness import sim_model
from tests.integration.invariants import wait_until
from tests.plugins.engines import free_port

SLOW = ["--sim-response-delay-ms", "300", "--sim-tokens-per-sec", "20"]
CHAT = "/v1/chat/completions"
# Every text the switch line of the progress panel showed, in order.
PROGRESS_OBSERVER = """
() => {
  window.__progress = [];
  const target = document.querySelector('[data-progress="switch"]');
  new MutationObserver(() => window.__progress.push(target.textContent))
    .observe(target, {childList: true, characterData: true, subtree: true});
}
"""


@pytest.fixture
def keyed_site(tmp_path: Path) -> Iterator[Site]:
    ports = {"alpha": free_port(), "beta": free_port()}
    config = {
        "vllm_command": "llmux-sim",
        "policy": {"min_active_secs": 0, "request_timeout_secs": 60},
        "models": {
            "alpha": sim_model(ports["alpha"], sleep_level=1, extra_args=SLOW),
            "beta": sim_model(
                ports["beta"], sleep_level=1, extra_args=[*SLOW, "--sim-startup-seconds", "1"]
            ),
        },
    }
    # Two web processes: the key is minted by one and may be used at the other at once.
    env = {"LLMUX_REQUIRE_API_KEY": "on", "LLMUX_WEB_PROCESSES": "2"}
    with open_site(tmp_path, config, env) as opened:
        yield opened


def chat_requests(page: Page) -> list[Request]:
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r) if r.url.endswith(CHAT) else None)
    return sent


def send(page: Page, model: str, prompt: str) -> None:
    page.select_option("#pg-model", model)
    page.fill("#pg-prompt", prompt)
    page.click("#pg-send")


def wait_for_answer(page: Page, turns: int) -> str:
    """The text of answer number `turns`, once its stream has ended."""
    answers = page.locator("#pg-conversation li.turn-assistant .text")
    expect(answers).to_have_count(turns, timeout=60_000)
    expect(page.locator("#pg-send")).to_be_enabled(timeout=60_000)
    expect(page.locator("#pg-status")).to_have_text("done")
    return answers.nth(turns - 1).inner_text()


def test_it_answers_with_keys_required_through_switches_and_sends_the_history(
    keyed_site: Site,
) -> None:
    site = keyed_site
    with pytest.raises(openai.AuthenticationError):  # /v1/ wants a key of every client
        site.server.client().models.list()
    page = site.page("operator")
    page.goto(f"{site.origin}/playground/")
    sent = chat_requests(page)
    page.evaluate(PROGRESS_OBSERVER)
    page.fill("#pg-system", "You are terse.")
    page.fill("#pg-temperature", "0.5")
    page.fill("#pg-tokens", "12")

    send(page, "alpha", "first question")
    expect(page.locator("#pg-send")).to_be_disabled()  # at once, until the stream ends
    expect(page.locator("#pg-stop")).to_be_enabled()
    first = wait_for_answer(page, 1)
    assert first.strip()
    expect(page.locator("#pg-stop")).to_be_disabled()
    assert re.fullmatch(r"\d+ ms", page.inner_text("#pg-ttft"))
    assert re.fullmatch(r"\d+\.\d", page.inner_text("#pg-tps"))
    assert int(page.inner_text("#pg-completion")) > 1

    send(page, "beta", "second question")  # alpha is evicted for beta meanwhile
    expect(page.locator("#pg-progress")).to_be_visible()
    wait_until(
        lambda: any("→ beta" in text for text in page.evaluate("window.__progress")),
        timeout=60,
        what="the switch to beta on the progress panel",
    )
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "playground-waiting-1280.png"), full_page=True)
    wait_for_answer(page, 2)
    expect(page.locator("#pg-progress")).to_be_hidden()
    seen = page.evaluate("window.__progress")
    assert any("→ alpha" in text for text in seen), seen  # the cold start of the first turn
    assert any("alpha → beta" in text for text in seen), seen  # the switch of the second

    first_body, second_body = (json.loads(r.post_data or "") for r in sent)
    assert first_body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
    ]
    assert second_body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "second question"},
    ]
    assert (second_body["model"], second_body["temperature"], second_body["max_tokens"]) == (
        "beta",
        0.5,
        12,
    )
    for request in sent:  # the key, never the site's cookies
        headers = request.all_headers()
        assert headers["authorization"].startswith("Bearer llmux-")
        assert "cookie" not in headers
    wait_until(  # the usage the gateway counted against the minted key
        lambda: site.server.query("SELECT sum(requests) FROM models_app_apikey")[0][0] == 2,
        timeout=30,
        what="the playground key's two requests counted",
    )
    minted = site.server.query(
        "SELECT actor_name, result FROM models_app_auditentry WHERE action = 'mint_playground_key'"
    )
    assert minted == [("operator", "ok")]  # one key served both turns
    assert site.console_errors == []


def test_copy_as_curl_gives_a_command_that_works_with_the_users_own_key(
    keyed_site: Site,
) -> None:
    site = keyed_site
    page = site.page("operator")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.origin)
    page.goto(f"{site.origin}/playground/")
    page.fill("#pg-tokens", "5")
    send(page, "alpha", "first question")
    first = wait_for_answer(page, 1)
    page.fill("#pg-prompt", "it's the second")  # a quote the shell quoting must survive
    page.click("#pg-copy")
    expect(page.locator("#pg-status")).to_have_text("curl command copied")
    command = page.inner_text("#pg-curl-text")
    assert page.evaluate("navigator.clipboard.readText()") == command
    assert f"{site.origin}{CHAT}" in command
    assert '"Authorization: Bearer $LLMUX_API_KEY"' in command  # a placeholder...
    assert "llmux-" not in command  # ...never the minted key
    assert json.loads(data_of(command)) == {
        "model": "alpha",
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": first},
            {"role": "user", "content": "it's the second"},
        ],
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    assert shutil.which("curl"), "the test runs the copied command with curl"
    key = site.server.manage(
        "from models_app.services.api_keys import create_key; "
        "print(create_key('mine', scopes=['alpha']).plaintext)"
    ).strip()
    answer = run(command, key)
    assert answer.endswith("data: [DONE]"), answer
    chunks = [json.loads(line[6:]) for line in answer.splitlines() if line.startswith("data: {")]
    assert any(c["choices"] and c["choices"][0]["delta"].get("content") for c in chunks), answer
    refused = json.loads(run(command, ""))  # without a key the gateway refuses it
    assert refused["error"]["type"] == "AuthenticationError"


def data_of(command: str) -> str:
    """The body the command sends, as bash reads it (lines joined at their backslashes)."""
    words = shlex.split(command.replace("\\\n", " "))
    return words[words.index("-d") + 1]


def run(command: str, key: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "LLMUX_API_KEY": key}
    done = subprocess.run(
        ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def running_requests(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found = re.search(r"^vllm:num_requests_running\{[^}]*\} (\S+)$", text, re.MULTILINE)
    assert found, text
    return float(found.group(1))


def test_stop_ends_the_stream_and_send_is_disabled_while_it_runs(keyed_site: Site) -> None:
    site = keyed_site
    port = alpha_port(site)
    page = site.page("admin")
    page.goto(f"{site.origin}/playground/")
    sent = chat_requests(page)
    page.fill("#pg-tokens", "600")  # half a minute at the simulator's 20 tokens/s
    send(page, "alpha", "a long answer, please")
    answer = page.locator("#pg-conversation li.turn-assistant .text")
    wait_until(lambda: len(answer.inner_text()) > 10, timeout=60, what="tokens streaming")
    expect(page.locator("#pg-send")).to_be_disabled()
    page.evaluate("document.getElementById('playground').requestSubmit()")  # sends nothing
    assert running_requests(port) == 1 and len(sent) == 1

    page.click("#pg-stop")
    expect(page.locator("#pg-status")).to_have_text("stopped")
    expect(page.locator("#pg-send")).to_be_enabled()
    expect(page.locator("#pg-stop")).to_be_disabled()
    wait_until(lambda: running_requests(port) == 0, timeout=30, what="the engine's request ended")
    kept = answer.inner_text()
    assert kept and page.locator("#pg-conversation li").count() == 2  # the partial answer stays
    assert site.console_errors == []


def alpha_port(site: Site) -> int:
    config: dict[str, Any] = json.loads((site.server.data_dir / "llmux.json").read_text())
    return int(config["models"]["alpha"]["port"])
