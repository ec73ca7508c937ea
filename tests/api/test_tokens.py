"""Management API tokens: they authenticate, and the database never holds one in clear."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from models_app.models import ApiToken

pytestmark = pytest.mark.django_db(transaction=True)  # committed: on disk, in the WAL


def database_bytes() -> bytes:
    """The SQLite database file and its write-ahead log, as another local user would
    read them."""
    name = Path(connection.settings_dict["NAME"])
    return b"".join(p.read_bytes() for p in (name, Path(f"{name}-wal")) if p.exists())


def new_token(username: str) -> str:
    """A token made the documented way, `manage.py llmux_token USER`."""
    out = StringIO()
    call_command("llmux_token", username, stdout=out)
    return out.getvalue().strip().splitlines()[-1]


def test_a_token_authenticates_and_its_plaintext_is_nowhere_in_the_database() -> None:
    User.objects.create_superuser("robot-7f3a", password="robot-password-1")
    token = new_token("robot-7f3a")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/status/").status_code == 200
    assert api.post("/api/mode/", {"mode": "manual"}, format="json").status_code == 200
    stored = database_bytes()
    assert b"robot-7f3a" in stored  # the scan reads what was written
    assert token.encode() not in stored


def test_a_wrong_token_is_refused() -> None:
    User.objects.create_superuser("robot", password="robot-password-1")
    token = new_token("robot")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token[:-1]}x")
    assert api.get("/api/status/").status_code in (401, 403)


def test_an_admin_creates_a_token_in_the_admin_and_sees_it_once() -> None:
    admin = User.objects.create_superuser("root", password="root-password-1")
    robot = User.objects.create_user("robot", password="robot-password-1")
    browser = Client()
    browser.force_login(admin)
    page = browser.post(
        "/admin/models_app/apitoken/add/", {"user": robot.pk, "name": "ci"}, follow=True
    )
    assert page.status_code == 200
    token = ApiToken.objects.get()
    shown = re.search(rb'<pre id="new-token">([^<]+)</pre>', page.content)
    assert shown, page.content
    plaintext = shown.group(1).decode()
    assert plaintext.startswith(token.prefix) and (token.user, token.name) == (robot, "ci")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
    assert api.get("/api/status/").status_code == 200
    listing = browser.get("/admin/models_app/apitoken/").content.decode()
    assert token.prefix in listing and plaintext not in listing
    assert plaintext.encode() not in database_bytes()


def test_metrics_beyond_loopback_take_a_hashed_token() -> None:
    User.objects.create_user("scraper", password="scraper-password-1")
    token = new_token("scraper")
    remote = Client(REMOTE_ADDR="10.1.2.3")
    assert remote.get("/metrics").status_code == 401
    assert remote.get("/metrics", HTTP_AUTHORIZATION=f"Token {token}x").status_code == 401
    assert remote.get("/metrics", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
