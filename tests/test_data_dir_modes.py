"""The data directory is private: 0700, and every file in it 0600, whatever the umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Opens the database, writes (so the WAL and shared-memory files exist while the
# connection is open), and prints the mode of every file in the data directory.
WRITE_AND_LIST = """
import os, stat
from django.conf import settings
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE IF NOT EXISTS probe (x)")
    cursor.execute("INSERT INTO probe VALUES (1)")
data = settings.DATA_DIR
for path in [data, *sorted(data.iterdir())]:
    print(path.name, oct(stat.S_IMODE(path.stat().st_mode)))
"""


def manage(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """manage.py in a fresh process under the usual umask 022 (not the test run's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    env["LLMUX_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(0o022),  # the usual umask, not this run's 077
        check=False,
    )


def modes(listing: str) -> dict[str, str]:
    return dict(line.split() for line in listing.splitlines() if line.strip())


def test_a_new_data_dir_its_database_and_its_wal_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = manage(data, "shell", "--verbosity", "0", "-c", WRITE_AND_LIST)
    assert result.returncode == 0, result.stderr
    found = modes(result.stdout)
    assert found["data"] == "0o700"
    for name in ("llmux.sqlite3", "llmux.sqlite3-wal", "llmux.sqlite3-shm", "secret_key"):
        assert found[name] == "0o600", (name, found)
    for name in ("logs", "run", "images", "gpu-ledger", "sim-cache"):
        assert found[name] == "0o700", (name, found)


def test_an_existing_data_dir_that_is_too_open_is_tightened_and_said(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    (data / "llmux.sqlite3").touch()
    (data / "secret_key").write_text("k" * 50)
    (data / "initial_admin_password").write_text("pw\n")
    for path, mode in [
        (data, 0o755),
        (data / "logs", 0o777),
        (data / "llmux.sqlite3", 0o644),
        (data / "secret_key", 0o644),
        (data / "initial_admin_password", 0o640),
    ]:
        path.chmod(mode)
    result = manage(data, "check")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "logs").stat().st_mode) == 0o700
    for name in ("llmux.sqlite3", "secret_key", "initial_admin_password"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert f"{data / 'llmux.sqlite3'}: 0o644 -> 0o600" in result.stderr
    assert f"{data}: 0o755 -> 0o700" in result.stderr
