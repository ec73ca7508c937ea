"""An install from before hashed tokens: its DRF tokens keep working, and leave no trace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LEGACY_KEY = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"  # DRF's format: 40 hex characters
# The user and the table DRF's authtoken app made (its migrations 0001-0004), one token.
# (LEGACY_KEY spelled out: a query built by formatting is what the linter forbids.)
LEGACY_INSTALL = """
key = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
from django.contrib.auth.models import User
from django.db import connection
robot = User.objects.create_user("robot", password="robot-password-1")
with connection.cursor() as cursor:
    cursor.execute(
        'CREATE TABLE "authtoken_token" ("key" varchar(40) NOT NULL PRIMARY KEY, '
        '"created" datetime NOT NULL, "user_id" integer NOT NULL UNIQUE '
        'REFERENCES "auth_user" ("id") DEFERRABLE INITIALLY DEFERRED)'
    )
    cursor.execute(
        "INSERT INTO authtoken_token VALUES (%s, '2026-01-01 00:00:00', %s)",
        [key, robot.pk],
    )
"""
CHECK = f"""
from django.db import connection
from models_app.services.api_tokens import user_for
print(user_for("{LEGACY_KEY}"), "authtoken_token" in connection.introspection.table_names())
"""


def manage(data_dir: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    env["LLMUX_DATA_DIR"] = str(data_dir)
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_legacy_token_is_converted_keeps_working_and_leaves_no_plaintext(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    manage(data, "migrate", "--verbosity", "0")
    manage(data, "migrate", "--verbosity", "0", "models_app", "0007")  # before conversion
    manage(data, "shell", "--verbosity", "0", "-c", LEGACY_INSTALL)
    database = data / "llmux.sqlite3"
    assert LEGACY_KEY.encode() in database.read_bytes()  # where the finding found it

    manage(data, "migrate", "--verbosity", "0")
    assert manage(data, "shell", "--verbosity", "0", "-c", CHECK).split() == ["robot", "False"]
    stored = b"".join(p.read_bytes() for p in data.glob("llmux.sqlite3*"))
    assert b"robot" in stored and LEGACY_KEY.encode() not in stored
