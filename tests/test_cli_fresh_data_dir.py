"""Every llmux command works on a fresh data directory, or says in one line what is wrong.

The embedded profile migrates its database first, as `llmux serve` does (before, all but
`llmux_import FILE-that-is-missing` ended in `no such table`). Bad arguments, a missing
file or an unknown name are a one-line error, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_settings import run_manage

CASES = [
    (["llmux_import", "/nonexistent/llmux.json"], 1, "CommandError: /nonexistent/llmux.json"),
    (["llmux_export"], 0, '"models": {}'),
    (["llmux_export", "--output", "/nonexistent/dir/out.json"], 1, "CommandError:"),
    (["llmux_token", "nobody"], 1, "CommandError: no user named 'nobody'"),
    (["llmux_validate", "nomodel"], 1, "CommandError: no model named 'nomodel'"),
    (["llmux_checkpoint", "nomodel"], 1, "CommandError: no model named 'nomodel'"),
    (["llmux_restore", "nomodel"], 1, "CommandError: no model named 'nomodel'"),
    (["llmux", "warmup"], 0, "warmup queued for GPU group(s): none"),
    (["llmux", "bogus"], 2, "invalid choice: 'bogus'"),
    (["llmux_import"], 2, "the following arguments are required"),
]


@pytest.mark.parametrize(("args", "code", "says"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_command_on_a_fresh_data_directory(
    tmp_path: Path, args: list[str], code: int, says: str
) -> None:
    done = run_manage(args, {"LLMUX_DATA_DIR": str(tmp_path / "data")})
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == code, output
    assert says in output


def test_the_database_is_migrated_once_and_the_registry_kept(tmp_path: Path) -> None:
    env = {"LLMUX_DATA_DIR": str(tmp_path / "data")}
    config = tmp_path / "llmux.json"
    config.write_text('{"models": {"m": {"model_path": "sim/m", "port": 18555}}}')
    first = run_manage(["llmux_import", str(config)], env)
    assert first.returncode == 0, first.stderr
    assert "migrations applied" in first.stderr
    again = run_manage(["llmux_export"], env)
    assert again.returncode == 0, again.stderr
    assert "migrations applied" not in again.stderr  # already up to date
    assert '"m"' in again.stdout
