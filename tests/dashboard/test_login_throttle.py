"""Failed logins are throttled per account and per client address, on both login pages."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.utils import timezone

pytestmark = pytest.mark.django_db

LOGIN_PAGES = ["/login/", "/admin/login/"]
PASSWORD = "right-password-1"
LIMITS = {"LLMUX_LOGIN_MAX_FAILURES": 3, "LLMUX_LOGIN_MAX_FAILURES_PER_ADDRESS": 6}


@pytest.fixture(autouse=True)
def limits() -> Iterator[None]:
    with override_settings(**LIMITS, LLMUX_LOGIN_WINDOW_SECS=60):
        yield


@pytest.fixture
def users() -> None:
    for name in ("alice", "bob", "carol"):
        User.objects.create_user(name, password=PASSWORD, is_staff=True, is_superuser=True)


def login(page: str, user: str, password: str, address: str = "10.0.0.1") -> tuple[bool, str]:
    """(logged in, page text) of one attempt from `address`."""
    client = Client(REMOTE_ADDR=address)
    response = client.post(page, {"username": user, "password": password, "next": "/"})
    return "_auth_user_id" in client.session, response.content.decode()


@pytest.mark.parametrize("page", LOGIN_PAGES)
def test_after_the_limit_the_right_password_is_refused_with_a_clear_message(
    page: str, users: None
) -> None:
    for _ in range(3):
        assert not login(page, "alice", "wrong")[0]
    logged_in, text = login(page, "alice", PASSWORD)
    assert not logged_in and "Too many failed logins" in text


@pytest.mark.parametrize("page", LOGIN_PAGES)
def test_another_account_from_another_address_is_unaffected(page: str, users: None) -> None:
    for _ in range(4):
        login(page, "alice", "wrong", address="10.0.0.1")
    assert login(page, "bob", PASSWORD, address="10.0.0.2")[0]
    assert not login(page, "alice", PASSWORD, address="10.0.0.2")[0]  # the account is locked


def test_one_address_trying_many_accounts_is_stopped(users: None) -> None:
    for name in ("alice", "bob", "nobody", "x", "y", "z"):  # 6 failures, at most 2 per name
        login("/login/", name, "wrong", address="10.0.0.9")
    logged_in, text = login("/login/", "carol", PASSWORD, address="10.0.0.9")
    assert not logged_in and "Too many failed logins" in text
    assert login("/login/", "carol", PASSWORD, address="10.0.0.10")[0]


class WindowClock:
    """The clock the windows are measured by, moved by the test instead of waiting
    (a one-second window raced three password hashes on a loaded machine)."""

    def __init__(self) -> None:
        self.at = timezone.now()

    def now(self) -> datetime.datetime:
        return self.at


def test_after_the_window_the_account_logs_in(users: None, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = WindowClock()
    monkeypatch.setattr("models_app.services.login_throttle.now", clock.now)
    for _ in range(3):
        login("/login/", "alice", "wrong")
    assert not login("/login/", "alice", PASSWORD)[0]
    clock.at += datetime.timedelta(seconds=59)  # the window is 60 s: still locked
    assert not login("/login/", "alice", PASSWORD)[0]
    clock.at += datetime.timedelta(seconds=2)
    assert login("/login/", "alice", PASSWORD)[0]


def test_failures_below_the_limit_do_not_lock(users: None) -> None:
    for _ in range(2):
        login("/admin/login/", "alice", "wrong")
    assert login("/admin/login/", "alice", PASSWORD)[0]
