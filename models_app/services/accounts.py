"""The first administrator account of a fresh install."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model


@dataclass(frozen=True)
class InitialAdmin:
    username: str
    password: str | None  # only when created now; never recoverable later
    password_file: Path


def ensure_initial_admin(username: str = "admin") -> InitialAdmin:
    """Create `admin` with a random password when no superuser exists yet.

    The password is shown once and kept in a root-only file in the data directory, the
    way appliances hand out a first login.
    """
    password_file = Path(settings.DATA_DIR) / "initial_admin_password"
    user_model = get_user_model()
    if user_model.objects.filter(is_superuser=True).exists():
        return InitialAdmin(username=username, password=None, password_file=password_file)
    password = secrets.token_urlsafe(12)
    user_model.objects.create_superuser(username=username, email="", password=password)
    password_file.touch(mode=0o600)
    password_file.write_text(password + "\n")
    return InitialAdmin(username=username, password=password, password_file=password_file)
