"""An operator with the requests view open, for scripts/bench_serve.py: logs in as an admin
and fetches `/requests/data/` every 2 s (the page's own refresh) while load runs.

A tree without the view (the commit before it) answers 404 at the first poll; the watcher
then stops, so that tree is measured as its users run it.
"""

from __future__ import annotations

import http.cookiejar
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

USER, PASSWORD = "bench-watcher", "bench-watcher-password-1"
POLL_EVERY = 2.0  # static/llmux/requests.js's REFRESH_MS
ADMIN_SCRIPT = (
    "from django.contrib.auth.models import User; "
    f"User.objects.filter(username='{USER}').exists() or "
    f"User.objects.create_superuser('{USER}', '', '{PASSWORD}')"
)
TOKEN = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')


def make_admin(tree: Path, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", ADMIN_SCRIPT],
        cwd=tree,
        env=env,
        capture_output=True,
        check=True,
    )


class RequestsViewWatcher:
    """Polls the requests view in a thread between `start` and `stop`; `polls` counts the
    answers it got (0 when the tree has no such view)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RequestsViewWatcher:
        self._login()
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.polls

    def _login(self) -> None:
        page = self.opener.open(f"{self.base}/login/", timeout=30).read()
        found = TOKEN.search(page)
        if found is None:
            raise RuntimeError("no CSRF token on the login page")
        form = {"username": USER, "password": PASSWORD, "csrfmiddlewaretoken": found[1].decode()}
        request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1 built above)
            f"{self.base}/login/",
            data=urllib.parse.urlencode(form).encode(),
            headers={"Referer": f"{self.base}/login/"},
        )
        self.opener.open(request, timeout=30).read()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.opener.open(f"{self.base}/requests/data/", timeout=30).read()
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return  # the tree has no requests view
                raise
            self.polls += 1
            self._stop.wait(POLL_EVERY)
