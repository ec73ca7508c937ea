"""Accounts llmux creates itself: the first administrator, the admin port's operator."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from models_app.roles import OPERATOR_GROUP


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


ADMIN_PORT_USER = "llmux-admin-port"


def admin_port_user() -> Any:
    """The operator in whose name llmux's admin port acts (it takes no credentials, as in
    llmux): audited and shown in the swap history under this name. It cannot log in (no
    usable password); an administrator may deactivate it, which closes the admin port."""
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=ADMIN_PORT_USER)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
        user.groups.add(Group.objects.get_or_create(name=OPERATOR_GROUP)[0])
    return user
