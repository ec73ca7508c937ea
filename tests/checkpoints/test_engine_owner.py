"""One owner of the engine processes per host (issue 13, build item 3).

An engine spawned by one worker process and dumped by another stayed a zombie of its
spawner, so its restore could not get its pid back. Under `llmux worker` the host's
engine owner parents and reaps every engine; the scenario runs in a host process of its
own (tests/fixtures_bin/owner_host.py), with real CRIU and a simulated engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmux_site.core.criu import Criu

REPO = Path(__file__).resolve().parents[2]


def host(criu: Criu, work: Path, *flags: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.fixtures_bin.owner_host", criu.binary, str(work), *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.timeout(600)
def test_an_engine_spawned_by_one_worker_is_restored_by_another_with_its_pid(
    criu: Criu, short_tmp_dir: Path
) -> None:
    result = host(criu, short_tmp_dir)
    assert result["engine_healthy_at_start"]
    assert "error" not in result, result["error"]
    assert result["after"] == result["before"]  # CRIU got the pid back
    assert result["healthy"]  # and the restored engine answers
    assert result["zombies"] == []  # the owner reaped everything


@pytest.mark.timeout(600)
def test_without_an_owner_the_dumped_engine_is_a_zombie_and_cannot_be_restored(
    criu: Criu, short_tmp_dir: Path
) -> None:
    # The code before the owner: what this test shows is why the owner exists.
    result = host(criu, short_tmp_dir, "--no-owner")
    assert result["engine_healthy_at_start"]
    assert "Can't fork for" in result["error"] or "File exists" in result["error"]
