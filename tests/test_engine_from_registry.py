"""A registry entry becomes a real engine: `vllm_command: llmux-sim` works as `vllm` would."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from llmux_site.core import processes, supervisor
from llmux_site.core.config import parse_config
from llmux_site.core.engine_client import EngineClient
from llmux_site.core.switching import EngineStatus
from models_app.models import ModelDefinition, RegistryConfig
from models_app.services.engines import engine_command, listen_address, process_spec
from models_app.services.registry import apply_registry
from models_app.services.runtime import record_engine_status, stop_all_engines
from tests.plugins.engines import free_port

pytestmark = pytest.mark.django_db


def import_llmux_05(port: int) -> ModelDefinition:
    apply_registry(
        parse_config(
            {
                "vllm_command": "llmux-sim",
                "models": {
                    "tiny": {
                        "model_path": "org/tiny-model",
                        "port": port,
                        "sleep_level": 2,
                        "extra_args": ["--sim-weights-bytes", "65536", "--dtype", "bfloat16"],
                    }
                },
            }
        )
    )
    return ModelDefinition.objects.get(name="tiny")


def test_the_data_dir_of_the_test_run_is_not_the_checkout() -> None:
    assert not Path(settings.DATA_DIR).is_relative_to(Path(settings.BASE_DIR))


def test_an_llmux_config_with_vllm_command_llmux_sim_starts_a_real_engine() -> None:
    model = import_llmux_05(free_port())
    config = RegistryConfig.load()
    command = engine_command(model, config)
    assert (
        command.argv[-7:]
        == [
            "--port",
            str(model.port),
            "--enable-sleep-mode",
            "--sim-weights-bytes",
            "65536",
            "--dtype",
            "bfloat16",
        ][-7:]
    )
    assert "serve" in command.argv and "org/tiny-model" in command.argv
    assert command.env["VLLM_SERVER_DEV_MODE"] == "1"

    engine = processes.spawn(process_spec(model, config))
    try:
        asyncio.run(exercise(model, engine))
    finally:
        result = supervisor.stop(engine, grace=5)
    assert result.outcome in (supervisor.StopOutcome.TERMINATED, supervisor.StopOutcome.KILLED)
    assert not processes.is_alive(engine)


async def wait_healthy(model: ModelDefinition, engine: processes.EngineProcess) -> None:
    async with EngineClient(listen_address(model)) as client:
        await supervisor.wait_healthy(engine, client.health, timeout=30)


async def exercise(model: ModelDefinition, engine: processes.EngineProcess) -> None:
    address = listen_address(model)
    async with EngineClient(address) as client:
        await supervisor.wait_healthy(engine, client.health, timeout=30)
        models = await client.models()
        assert models[0]["id"] == "org/tiny-model"
        before = await client.probe("org/tiny-model")
        await client.sleep(2)
        assert await client.is_sleeping()
        ledger = Path(settings.LLMUX_DIRS["ledger"]) / f"{engine.pid}.json"
        assert json.loads(ledger.read_text())["bytes"] == 0
        await client.wake_after_discard()
        assert not await client.is_sleeping()
        after = await client.probe("org/tiny-model")
        assert after.text == before.text


def test_an_engine_gets_a_private_tmpdir_under_the_data_dir_and_loses_it_at_stop() -> None:
    model = import_llmux_05(free_port())
    spec = process_spec(model, RegistryConfig.load())
    assert spec.tmp_dir is not None
    tmp_dir = Path(spec.tmp_dir)
    assert tmp_dir.parent == Path(settings.LLMUX_DIRS["run"]) / "tmp"
    # vLLM's ZeroMQ sockets are TMPDIR/<36-character uuid>: within the 107-byte limit.
    assert len(os.fsencode(tmp_dir / ("x" * 36))) <= 107

    engine = processes.spawn(spec)
    try:
        record_engine_status(model, EngineStatus.RUNNING, process=engine, evicted=None)
        asyncio.run(wait_healthy(model, engine))
        assert tmp_dir.is_dir()
        environ = Path(f"/proc/{engine.pid}/environ").read_bytes().split(b"\0")
        assert f"TMPDIR={tmp_dir}".encode() in environ
        (tmp_dir / "vllm_dist_0123").write_text("left by the engine")
    finally:
        stopped = stop_all_engines(grace=5)

    assert stopped == ["tiny"]
    assert not tmp_dir.exists()


def test_a_deep_data_dir_puts_the_private_tmpdir_where_a_socket_path_still_fits() -> None:
    model = import_llmux_05(free_port())
    deep = Path("/tmp") / ("d" * 60) / "data"
    run = deep / "run"
    with override_settings(DATA_DIR=deep, LLMUX_DIRS={**settings.LLMUX_DIRS, "run": run}):
        tmp_dir = Path(str(process_spec(model, RegistryConfig.load()).tmp_dir))
    assert not tmp_dir.is_relative_to(run)  # run/tmp/<12>/<36> would be too long there
    assert len(os.fsencode(tmp_dir / ("x" * 36))) <= 107
    root = tmp_dir.parent
    assert root.name.startswith(f"llmux-{os.getuid()}-")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_a_model_that_sets_its_own_tmpdir_keeps_it() -> None:
    model = import_llmux_05(free_port())
    model.env = {"TMPDIR": "/var/lib/llmux/tmp"}

    spec = process_spec(model, RegistryConfig.load())

    assert spec.tmp_dir is None
    assert spec.env["TMPDIR"] == "/var/lib/llmux/tmp"
