"""Playground keys against a running llmux with two web processes and keys required: a
key minted by one process works at once in whichever serves its first request, and
stops working when its user logs out."""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

from tests.integration.harness import Llmux
from tests.integration.invariants import wait_until
from tests.integration.test_switching import two_models
from tests.integration.test_web_processes import web_processes

PASSWORD = "operator-password-1"


class Browser:
    """A logged-in session as a browser holds it: cookies and the CSRF token."""

    def __init__(self, llmux: Llmux) -> None:
        self.origin = f"http://127.0.0.1:{llmux.port}"
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        page = self.opener.open(f"{self.origin}/login/", timeout=10).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token is not None
        form = {"csrfmiddlewaretoken": token.group(1), "username": "operator", "password": PASSWORD}
        done = self.opener.open(
            urllib.request.Request(
                f"{self.origin}/login/", data=urllib.parse.urlencode(form).encode()
            ),
            timeout=10,
        )
        assert done.geturl() == f"{self.origin}/", "login failed"

    def post(self, path: str) -> bytes:
        csrf = next(c.value for c in self.jar if c.name == "csrftoken")
        request = urllib.request.Request(
            f"{self.origin}{path}", data=b"", headers={"X-CSRFToken": csrf}, method="POST"
        )
        with self.opener.open(request, timeout=10) as answer:
            return bytes(answer.read())


def chat(llmux: Llmux, key: str) -> int:
    """The status of one chat request on a fresh connection (the kernel picks the process)."""
    connection = http.client.HTTPConnection("127.0.0.1", llmux.port, timeout=60)
    body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    try:
        connection.request("POST", "/v1/chat/completions", json.dumps(body), headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_a_minted_key_works_at_once_in_every_web_process_until_logout(llmux: Llmux) -> None:
    llmux.start(two_models(), {"LLMUX_WEB_PROCESSES": "2", "LLMUX_REQUIRE_API_KEY": "on"})
    assert len(web_processes(llmux)) == 2
    llmux.manage(
        "from django.contrib.auth.models import Group, User; "
        f"u = User.objects.create_user('operator', password='{PASSWORD}'); "
        "u.groups.add(Group.objects.get_or_create(name='operator')[0])"
    )
    browser = Browser(llmux)
    keys = []
    for _ in range(6):  # each first use lands on either process, with no retry
        key = json.loads(browser.post("/playground/key/"))["key"]
        assert chat(llmux, key) == 200
        keys.append(key)
    assert all(chat(llmux, key) == 200 for key in keys for _ in range(2))

    browser.post("/logout/")
    wait_until(  # each process hears of the revocation on the bus
        lambda: all(chat(llmux, key) == 401 for key in keys for _ in range(2)),
        timeout=30,
        what="the logged-out user's keys refused",
    )
