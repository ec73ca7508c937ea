"""The production profile runs on real PostgreSQL and Redis with the same code."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_settings import REPO, run_manage

PG = "postgres://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/0"
DEMO = Path(__file__).resolve().parent.parent / "llmux_site" / "demo" / "registry.yaml"


def psql(sql: str) -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def production_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    name = f"llmux_test_{uuid.uuid4().hex[:12]}"
    psql(f"CREATE DATABASE {name}")
    try:
        yield {
            "LLMUX_DATA_DIR": str(tmp_path),
            "LLMUX_DATABASE_URL": f"{PG}/{name}",
            "LLMUX_REDIS_URL": REDIS,
            "LLMUX_SECRET_KEY": "x" * 40,
            "LLMUX_CLUSTER_NAME": f"llmux-test-{name}",
        }
    finally:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_it_migrates_and_round_trips_the_registry_on_postgresql(
    production_env: dict[str, str],
) -> None:
    migrate = run_manage(["migrate", "-v0"], production_env)
    assert migrate.returncode == 0, migrate.stderr
    imported = run_manage(["llmux_import", str(DEMO)], production_env)
    assert imported.returncode == 0, imported.stderr
    vendor = run_manage(
        [
            "shell",
            "--no-imports",
            "-c",
            "from django.db import connection; print(connection.vendor)",
        ],
        production_env,
    )
    assert vendor.stdout.strip() == "postgresql"
    exported = run_manage(["llmux_export", "--format", "json"], production_env)
    assert exported.returncode == 0, exported.stderr
    assert '"demo-chat"' in exported.stdout
    assert '"demo-reasoner"' in exported.stdout


def test_task_broker_and_channel_layer_use_redis(production_env: dict[str, str]) -> None:
    code = """
import asyncio, uuid
from channels.layers import get_channel_layer
from django_q.brokers import get_broker
broker = get_broker()
print(type(broker).__name__, broker.ping())
layer = get_channel_layer()
async def roundtrip():
    channel = await layer.new_channel()
    group = "g" + uuid.uuid4().hex
    await layer.group_add(group, channel)
    await layer.group_send(group, {"type": "probe.message", "n": 7})
    message = await asyncio.wait_for(layer.receive(channel), 5)
    await layer.group_discard(group, channel)
    return message["n"]
print(type(layer).__name__, asyncio.run(roundtrip()))
"""
    result = run_manage(["shell", "--no-imports", "-c", code], production_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Redis", "True", "RedisPubSubChannelLayer", "7"]


def test_key_rate_limits_are_counted_in_redis_across_web_processes(
    production_env: dict[str, str],
) -> None:
    # Two `manage.py shell` processes stand for two web processes: the second one finds
    # the first one's two requests already counted against the key's limit of 2.
    key_id = uuid.uuid4().int % 10**12  # no other run shares this key's window
    code = f"""
import asyncio
from models_app.adapters.gateway.key_table import rate_window
async def admit():
    window = rate_window()
    waits = [await window.admit({key_id}, 2) for _ in range({{n}})]
    await window.close()
    return waits
print(type(rate_window()).__name__, asyncio.run(admit()))
"""
    first = run_manage(["shell", "--no-imports", "-c", code.format(n=2)], production_env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["RedisWindow", "[None,", "None]"]
    second = run_manage(["shell", "--no-imports", "-c", code.format(n=1)], production_env)
    assert second.returncode == 0, second.stderr
    name, waits = second.stdout.split(maxsplit=1)
    wait = float(waits.strip("[]\n"))
    assert name == "RedisWindow" and 50 < wait <= 60


def test_bus_hints_reach_a_process_on_another_host_through_redis(
    production_env: dict[str, str], short_tmp_dir: Path
) -> None:
    # Two data directories stand for two hosts: their buses share no socket directory,
    # so what the second hears came through the cluster's Redis channel.
    listen = """
from models_app import protocol
listener = protocol.bus().listen_sync()
assert protocol.bus().relay.wait_subscribed(20)
print("subscribed", flush=True)
print(listener.wait(30, only=protocol.Queued.KIND))
"""
    # A short path: the bus's Unix socket lives under it.
    other_host = production_env | {"LLMUX_DATA_DIR": str(short_tmp_dir / "other-host")}
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")} | other_host
    listening = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", listen],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listening.stdout is not None
        assert listening.stdout.readline().strip() == "subscribed", listening.stderr
        publish = "from models_app import protocol; protocol.publish(protocol.Queued())"
        sent = run_manage(["shell", "--no-imports", "-c", publish], production_env)
        assert sent.returncode == 0, sent.stderr
        out, err = listening.communicate(timeout=60)
        assert listening.returncode == 0, err
        assert out.strip() == "b'queued'"
    finally:
        if listening.poll() is None:
            listening.kill()
            listening.wait()


def test_a_refusal_whose_input_holds_a_nul_byte_is_audited_on_postgresql(
    production_env: dict[str, str],
) -> None:
    assert run_manage(["migrate", "-v0"], production_env).returncode == 0
    script = (
        "from models_app.services import audit; "
        "entry = audit.record(None, 'create_model', 'a\\x00b', result='failed', "
        "detail='models.m.\\x00: unknown field'); "
        "print(repr(entry.target), repr(entry.detail))"
    )
    recorded = run_manage(["shell", "--no-imports", "-c", script], production_env)
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout.strip() == "'a\\\\x00b' 'models.m.\\\\x00: unknown field'"


def test_a_command_before_migrate_says_to_run_it_without_a_traceback(
    production_env: dict[str, str],
) -> None:
    # Production migrates once, by its operator: a command does not race other processes.
    done = run_manage(["llmux_export"], production_env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "database migrations are not applied; run `python manage.py migrate`" in done.stderr
