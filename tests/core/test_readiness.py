"""Readiness that follows the model: one token, one embedding, health alone, or its own probe.

Real engines: the simulator (vLLM's runners: `--runner pooling` serves embeddings and
answers completions 404, as vLLM 0.32 does) and the fixture engine, which serves /health
and nothing else.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from llmux_site.core import lifecycle, supervisor
from llmux_site.core.addresses import ListenAddress
from llmux_site.core.lifecycle import ReadinessError
from llmux_site.core.processes import ProcessSpec
from llmux_site.core.readiness import (
    ONE_TOKEN,
    ProbeKind,
    ReadinessProbe,
    readiness_probe,
    runs_pooling,
)
from llmux_site.core.switching import EngineStatus, EngineTarget
from tests.core.switch_ports import STOP, SimModels
from tests.fixtures_bin import HTTP_ENGINE
from tests.timeouts import ROOMY

EMBEDDING = ReadinessProbe(ProbeKind.EMBEDDING)


@pytest.mark.parametrize(
    ("extra_args", "pooling"),
    [
        (["--runner", "pooling"], True),
        (["--max-model-len", "512", "--runner=pooling"], True),
        (["--convert", "embed"], True),
        (["--task", "embedding"], True),  # vLLM before 0.11
        (["--runner", "generate"], False),
        (["--convert", "none"], False),
        (["--served-model-name", "pooling"], False),
        ([], False),
    ],
)
def test_the_pooling_runner_is_read_from_vllms_flags(extra_args: list[str], pooling: bool) -> None:
    assert runs_pooling(extra_args) is pooling


def test_a_model_gets_its_own_probe_else_one_by_its_engine() -> None:
    pooling = ["--runner", "pooling"]

    assert readiness_probe(None, engine="vllm", extra_args=[]) == ONE_TOKEN
    assert readiness_probe(None, engine="vllm", extra_args=pooling) == EMBEDDING
    assert readiness_probe(None, engine="simulator", extra_args=pooling) == EMBEDDING
    assert readiness_probe(None, engine="generic", extra_args=pooling) == ONE_TOKEN
    assert readiness_probe("health", engine="vllm", extra_args=pooling).kind is ProbeKind.HEALTH
    custom = readiness_probe(
        {"path": "/embed", "body": {"inputs": "x"}}, engine="generic", extra_args=[]
    )
    assert custom == ReadinessProbe(ProbeKind.CUSTOM, "/embed", {"inputs": "x"})
    assert str(custom) == "POST /embed"


async def ready(target: EngineTarget, models: SimModels) -> None:
    process = models.track(await lifecycle.cold_start(target, timeouts=ROOMY))
    await lifecycle.readiness(target, process, timeouts=ROOMY, timeout=20)


async def test_an_embedding_model_is_probed_with_an_embedding(models: SimModels) -> None:
    target = models.target("m/embed", eviction=STOP, extra_args=["--runner", "pooling"])

    await ready(dataclasses.replace(target, readiness=EMBEDDING), models)


async def test_the_one_token_probe_fails_a_pooling_model(models: SimModels) -> None:
    # What llmux did before: vLLM's pooling runner has no /v1/completions.
    target = models.target("m/embed-old", eviction=STOP, extra_args=["--runner", "pooling"])

    with pytest.raises(ReadinessError, match="Not Found"):
        await ready(target, models)


async def test_a_chat_model_can_be_probed_through_chat(models: SimModels) -> None:
    target = models.target("m/chat", eviction=STOP)

    await ready(dataclasses.replace(target, readiness=ReadinessProbe(ProbeKind.CHAT)), models)


def health_only_engine(root: Path, probe: ReadinessProbe) -> EngineTarget:
    """The fixture engine: /health and nothing else, like a server llmux knows little of."""
    uds = root / "e.sock"
    return EngineTarget(
        name="m/generic",
        address=ListenAddress.unix(str(uds)),
        served_name="m/generic",
        spec=ProcessSpec(
            argv=[sys.executable, str(HTTP_ENGINE), "--uds", str(uds)],
            log_path=root / "engine.log",
            uds=str(uds),
        ),
        eviction=STOP,
        status=EngineStatus.NOT_STARTED,
        readiness=probe,
    )


@pytest.mark.parametrize(
    ("probe", "failure"),
    [
        (ReadinessProbe(ProbeKind.HEALTH), None),
        (ReadinessProbe(ProbeKind.CUSTOM, "/health"), None),  # GET: no body
        (ReadinessProbe(ProbeKind.CUSTOM, "/ready"), "GET /ready answered 404"),
        (
            ReadinessProbe(ProbeKind.CUSTOM, "/v1/rerank", {"q": "x"}),
            "POST /v1/rerank answered 501",
        ),
        (ONE_TOKEN, "501"),  # it serves no completions
    ],
)
async def test_a_generic_engine_names_its_probe_or_relies_on_health(
    short_tmp_dir: Path, probe: ReadinessProbe, failure: str | None
) -> None:
    target = health_only_engine(short_tmp_dir, probe)
    process = await lifecycle.cold_start(target, timeouts=ROOMY)
    try:
        if failure is None:
            await lifecycle.readiness(target, process, timeouts=ROOMY, timeout=10)
        else:
            with pytest.raises(ReadinessError, match=failure):
                await lifecycle.readiness(target, process, timeouts=ROOMY, timeout=10)
    finally:
        supervisor.stop(process, grace=0.5)
