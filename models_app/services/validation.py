"""`llmux_validate`: prove that a model sleeps and wakes correctly under each policy.

For each policy the model is brought up (a switch, through the worker like any other),
answers a temperature-0 prompt (the baseline), is evicted by the policy (timed, GPU memory
read before and after), brought up again (timed, memory read), and must give the same
answer. The runs are stored (ValidationRun) and shown in the API and the dashboard.
GPU memory comes from the GPU probe: NVML on a GPU host, the simulator's ledger without.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.conf import settings

from llmux_site.core import processes
from llmux_site.core.engine_client import EngineClient
from llmux_site.core.eviction_policy import EvictionPolicy, PolicyError, ProcessAction
from llmux_site.core.launch import sleep_mode_in
from llmux_site.core.lifecycle import MEMORY_LEFT_RATIO
from llmux_site.core.processes import process_tree
from models_app import selectors
from models_app.models import (
    MemoryCheck,
    ModelDefinition,
    RegistryConfig,
    SwapTrigger,
    ValidationRun,
    Verdict,
)
from models_app.services import control
from models_app.services.engines import (
    engine_command,
    eviction_policy,
    listen_address,
    sleep_mode_available,
)
from models_app.services.host_actions import capabilities
from models_app.services.runtime import current_process, override_policy, runtime_for
from models_app.services.waiting import OperationError, wait_for
from models_app.wiring import gpu_probe

DEFAULT_POLICIES = (
    "offload+keep_running",
    "discard+keep_running",
    "retain+cuda_suspend",
    "offload+cuda_suspend",
    "discard+checkpoint",
    "offload+stop",
)
PROMPT = "llmux validate: count from one to five"
MEMORY_TOLERANCE = 64 * 1024 * 1024
ACTOR = "manage.py llmux_validate"


@dataclass(frozen=True)
class Support:
    """Which process actions this host's worker can carry out (host_actions)."""

    cuda_suspend: bool
    checkpoint: bool

    def allows(self, policy: EvictionPolicy) -> bool:
        if policy.process is ProcessAction.CUDA_SUSPEND:
            return self.cuda_suspend
        if policy.process is ProcessAction.CHECKPOINT:
            return self.checkpoint
        return True


def unavailable(model: ModelDefinition, policy: EvictionPolicy, support: Support) -> str | None:
    """Why `policy` cannot be tried on `model` here, or None."""
    if not support.allows(policy):
        return f"{policy.process.value} is not available on this host"
    if policy.vllm_sleep_level is None:
        return None
    if not sleep_mode_available(model, RegistryConfig.load()):
        return (
            f"{policy.weights.value} needs vLLM sleep mode, which this host's platform lacks "
            f"for this engine (LLMUX_SLEEP_MODE={settings.LLMUX_SLEEP_MODE})"
        )
    return None


def _prepare(model: ModelDefinition, policy: EvictionPolicy, timeout: float) -> None:
    """Make `policy` the model's eviction (an override, undone by `validate`), and restart
    an engine started for another launch than the policy's: the sleep flag, and the
    io_uring refusal CRIU needs, follow the eviction an engine is started for."""
    runtime = runtime_for(model)
    started_for = override_policy(runtime) or eviction_policy(model, RegistryConfig.load())
    control.set_eviction_override(model, policy)
    process = current_process(runtime)
    live = process and processes.adopt(process.pid, process.create_time, process.pgid)
    if live and _launched_otherwise(model, live.argv, started_for, policy):
        wait_for(
            control.stop(model, actor=ACTOR, trigger=SwapTrigger.API),
            timeout,
            f"restarting {model.name} as {policy.label} starts it",
        )


def _launched_otherwise(
    model: ModelDefinition, argv: Sequence[str], started_for: EvictionPolicy, policy: EvictionPolicy
) -> bool:
    """Whether an engine running `argv`, started for `started_for`, lacks `policy`'s launch.

    An engine started for stop and dumped for a checkpoint failed (its uvloop had an
    io_uring, which CRIU cannot dump): the validation must run the policy as it runs."""
    if policy.vllm_sleep_level is not None and not sleep_mode_in(argv):
        return True
    config = RegistryConfig.load()
    then, now = engine_command(model, config, started_for), engine_command(model, config, policy)
    return (then.argv, then.env) != (now.argv, now.env)


def host_support() -> Support:
    cuda_suspend, checkpoint = capabilities()
    return Support(cuda_suspend=cuda_suspend, checkpoint=checkpoint)


def parse_policies(text: str | None) -> list[EvictionPolicy]:
    labels = [p.strip() for p in (text or "").split(",") if p.strip()]
    try:
        return [EvictionPolicy.from_label(label) for label in labels]
    except (PolicyError, ValueError) as exc:
        raise OperationError(f"--policies: {exc}") from None


def _memory(model: ModelDefinition) -> int | None:
    runtime = selectors.engine_runtime(model)
    if runtime.pid is None:
        return 0  # no process: nothing held
    held = gpu_probe().used_by_pids(process_tree(runtime.pid, runtime.pgid or 0))
    return held


def _answer(model: ModelDefinition) -> tuple[str, bool | None]:
    """A temperature-0 answer, and the engine's own weights check where it has one."""

    async def ask() -> tuple[str, bool | None]:
        async with EngineClient(listen_address(model)) as client:
            body = {
                "model": model.served_model_name or model.model_path,
                "prompt": PROMPT,
                "max_tokens": 12,
                "temperature": 0,
            }
            reply = await client.completion(body)
            verified = await client.weights_verified()
        return str((reply.get("choices") or [{}])[0].get("text", "")), verified

    return asyncio.run(ask())


def _switch_to(model: ModelDefinition, timeout: float) -> tuple[float | None, str]:
    finished = wait_for(
        control.force_switch(model, actor=ACTOR, trigger=SwapTrigger.API),
        timeout,
        f"bringing {model.name} up",
    )
    swap = finished.swap
    return (swap.total_ms if swap else None), (swap.bringup if swap else "")


UNVERIFIED = (
    "GPU memory could not be read on this host (no GPU probe applies to this engine) and "
    "the engine lives on: the eviction was not seen to free anything"
)


def _problems(run: ValidationRun, weights_ok: bool | None) -> list[str]:
    problems = []
    if weights_ok is False:
        problems.append("the engine's weights checksum does not verify after the bring-up")
    before, evicted = run.memory_before, run.memory_evicted
    if before and evicted is not None:
        allowed = max(MEMORY_TOLERANCE, int(before * MEMORY_LEFT_RATIO))
        if evicted > allowed:
            problems.append(f"GPU memory not freed ({evicted} of {before} bytes held)")
    if not run.answer_matches:
        problems.append("the answer after the bring-up differs from the one before")
    return problems


def _evict(
    model: ModelDefinition, policy: EvictionPolicy, run: ValidationRun, timeout: float
) -> str:
    """Evict by `policy`; how the swap saw the memory freed (MemoryCheck)."""
    down = wait_for(
        control.evict(model, policy, actor=ACTOR, trigger=SwapTrigger.API),
        timeout,
        f"evicting {model.name} by {policy.label}",
    )
    if down.swap is None:
        return MemoryCheck.NONE
    run.evict_ms = down.swap.evict_ms
    if down.swap.escalated:
        raise OperationError(f"the eviction escalated to stop: {down.swap.error}")
    return str(down.swap.memory_check)


def validate_policy(
    model: ModelDefinition, policy: EvictionPolicy, batch: str, timeout: float
) -> ValidationRun:
    """Run one policy; pass only when the answer, the weights and the freed memory are
    verified. Memory no probe could read makes it unverified, never a pass."""
    run = ValidationRun(batch=batch, model=model, model_name=model.name, policy=policy.label)
    try:
        _prepare(model, policy, timeout)
        _switch_to(model, timeout)
        baseline, _ = _answer(model)
        run.memory_before = _memory(model)
        memory_check = _evict(model, policy, run, timeout)
        run.memory_evicted = _memory(model)
        run.bringup_ms, run.bringup = _switch_to(model, timeout)
        run.memory_after = _memory(model)
        answer, weights_ok = _answer(model)
        run.answer_matches = answer == baseline
        problems = _problems(run, weights_ok)
        verified = memory_check in (MemoryCheck.FREED, MemoryCheck.EXITED)
        run.verdict = Verdict.FAIL if problems else Verdict.PASS if verified else Verdict.UNVERIFIED
        run.error = "; ".join(problems or ([] if verified else [UNVERIFIED]))
    except OperationError as exc:
        run.error, run.verdict = str(exc), Verdict.FAIL
    run.passed = run.verdict == Verdict.PASS
    run.save()
    return run


def _run_or_refuse(
    model: ModelDefinition, policy: EvictionPolicy, batch: str, timeout: float, refused: str | None
) -> ValidationRun:
    if refused is None:
        return validate_policy(model, policy, batch, timeout)
    return ValidationRun.objects.create(
        batch=batch,
        model=model,
        model_name=model.name,
        policy=policy.label,
        verdict=Verdict.REFUSED,
        error=refused,
    )


def validate(
    model: ModelDefinition,
    policies: list[EvictionPolicy] | None,
    *,
    timeout: float = 1800.0,
    support: Support | None = None,
    on_run: Callable[[ValidationRun], None] | None = None,
) -> list[ValidationRun]:
    """Each policy in turn (default: every one this host supports); the stored runs.

    Each runs as the model's eviction override; the override it had is put back after.
    """
    support = support or host_support()
    explicit = policies is not None
    chosen = policies or [EvictionPolicy.from_label(label) for label in DEFAULT_POLICIES]
    batch = uuid.uuid4().hex
    runs = []
    before = override_policy(runtime_for(model))
    try:
        for policy in chosen:
            refused = unavailable(model, policy, support)
            if refused is not None and not explicit:
                continue  # the default list covers what this host can do
            run = _run_or_refuse(model, policy, batch, timeout, refused)
            runs.append(run)
            if on_run is not None:
                on_run(run)
    finally:
        control.set_eviction_override(model, before)
    return runs
