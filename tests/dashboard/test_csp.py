"""Every Django page carries a Content-Security-Policy, and no page needs an exception."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import User
from django.test import Client

from models_app.models import ModelDefinition

pytestmark = pytest.mark.django_db

PAGES = [
    "/",
    "/models/alpha/",
    "/swaps/",
    "/checkpoints/",
    "/playground/",
    "/audit/",
    "/charts/",
    "/keys/",
    "/admin/",
    "/admin/models_app/modeldefinition/",
    "/api/docs/",
]


class InlineCode(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, handlers, style attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._script: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.found += [f"<{tag} {k}=…>" for k in named if k.startswith("on")]
        if tag == "script":
            self._script = named

    def handle_data(self, data: str) -> None:
        script = self._script
        runs = (
            script is not None
            and "src" not in script
            and script.get("type")
            != (
                "application/json"  # data, never run
            )
        )
        if runs and data.strip():
            self.found.append(f"<script>{data.strip()[:60]}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None


def directives(policy: str) -> dict[str, list[str]]:
    parts = (d.split() for d in policy.split(";") if d.strip())
    return {p[0]: p[1:] for p in parts}


@pytest.fixture
def admin() -> Client:
    ModelDefinition.objects.create(name="alpha", model_path="sim/alpha", port=18001)
    client = Client()
    client.force_login(User.objects.create_superuser("admin", password="admin-pw-1"))
    return client


def test_every_page_has_a_strict_policy_and_no_inline_script(admin: Client) -> None:
    for path in [*PAGES, "/login/"]:
        response = (Client() if path == "/login/" else admin).get(path, HTTP_HOST="127.0.0.1:8000")
        assert response.status_code == 200, path
        policy = directives(response.headers.get("Content-Security-Policy", ""))
        assert policy.get("default-src") == ["'self'"], (path, policy)
        assert policy.get("script-src") == ["'self'"], (path, policy)
        assert policy.get("object-src") == ["'none'"] and policy.get("frame-ancestors") == [
            "'none'"
        ]
        assert "ws://127.0.0.1:8000" in policy.get("connect-src", []), policy
        parser = InlineCode()
        parser.feed(response.content.decode())
        assert parser.found == [], (path, parser.found)


def test_the_api_docs_script_is_served_as_a_file(admin: Client) -> None:
    page = admin.get("/api/docs/").content.decode()
    script = re.search(r'<script src="(/api/docs/\?[^"]+)"', page)
    assert script, page
    code = admin.get(script.group(1).replace("&amp;", "&"))
    assert code.status_code == 200 and "SwaggerUIBundle" in code.content.decode()
