"""Routes for vLLM's control surface (health, sleep, wake, collective_rpc, …) and `/sim/*`."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from llmux_site.simulator.config import SUFFIX
from llmux_site.simulator.engine import Engine, hang
from llmux_site.simulator.errors import ApiError
from llmux_site.simulator.faults import FaultSpecError, parse_faults

ENGINE = web.AppKey("engine", Engine)

routes = web.RouteTableDef()


def engine_of(request: web.Request) -> Engine:
    return request.app[ENGINE]


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 in OpenAI's shape."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def _state_reply(engine: Engine, body: dict[str, Any]) -> web.Response:
    # vLLM before 0.32 answered sleep and wake with an empty 200, even to a partial wake that
    # leaves the engine asleep: clients must ask /is_sleeping.
    if not engine.config.vllm_api.json_bodies:
        return web.Response(status=200)
    return web.json_response(body)


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    mode = engine_of(request).faults.health
    if mode == "hang":
        await hang()
    return web.Response(status=503 if mode == "fail" else 200)


@routes.post("/sleep")
async def sleep(request: web.Request) -> web.Response:
    engine = engine_of(request)
    if not engine.config.enable_sleep_mode:
        raise ApiError(400, "sleep mode is not enabled: start the engine with --enable-sleep-mode")
    raw_level = request.query.get("level", "1")
    try:
        level = int(raw_level)
    except ValueError:
        raise ApiError(400, f"invalid sleep level {raw_level!r}", param="level") from None
    reply = await engine.sleep(level, request.query.get("mode", "abort"))
    return _state_reply(engine, reply)


@routes.post("/wake_up")
async def wake_up(request: web.Request) -> web.Response:
    engine = engine_of(request)
    reply = await engine.wake_up(request.query.getall("tags", []))
    return _state_reply(engine, reply)


@routes.get("/is_sleeping")
async def is_sleeping(request: web.Request) -> web.Response:
    return web.json_response({"is_sleeping": engine_of(request).is_sleeping})


@routes.post("/collective_rpc")
async def collective_rpc(request: web.Request) -> web.Response:
    body = await json_body(request)
    method = body.get("method")
    if not isinstance(method, str):
        raise ApiError(400, "collective_rpc needs a string 'method'", param="method")
    timeout = body.get("timeout")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise ApiError(400, "timeout must be a positive number", param="timeout")
    results = await engine_of(request).collective_rpc(method, timeout)
    return web.json_response({"results": results})


@routes.post("/reset_prefix_cache")
async def reset_prefix_cache(request: web.Request) -> web.Response:
    engine = engine_of(request)
    await engine.reset_prefix_cache()
    if engine.config.vllm_api.prefix_reset_reports:
        return web.json_response({"success": True})
    return web.Response(status=200)


@routes.post("/release_kv_cache_memory")
async def release_kv_cache_memory(request: web.Request) -> web.Response:
    engine = engine_of(request)
    if not engine.config.vllm_api.release_kv_cache_route:
        raise web.HTTPNotFound()
    await engine.release_kv_cache_memory()
    return _state_reply(engine, {"status": "kv_cache_released"})


@routes.get("/version")
async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": engine_of(request).config.vllm_api.version + SUFFIX})


@routes.get("/load")
async def load(request: web.Request) -> web.Response:
    return web.json_response({"server_load": engine_of(request).inflight.count})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=render_metrics(engine_of(request)), content_type="text/plain")


def render_metrics(engine: Engine) -> str:
    """A few of vLLM's Prometheus series, plus the simulator's own."""
    model = f'model_name="{engine.config.model_name}"'
    gauges: list[tuple[str, str, int]] = [
        ("vllm:num_requests_running", model, engine.inflight.running),
        ("vllm:num_requests_waiting", model, engine.inflight.waiting),
        ("vllm:request_success_total", model, engine.usage["requests"]),
        ("vllm:prompt_tokens_total", model, engine.usage["prompt_tokens"]),
        ("vllm:generation_tokens_total", model, engine.usage["generation_tokens"]),
        ("llmux_sim_gpu_bytes", model, engine.memory.device_bytes),
        ("llmux_sim_sleep_count", model, engine.counters["sleeps"]),
        ("llmux_sim_wake_count", model, engine.counters["wakes"]),
    ]
    label = engine.sleep_state_label()
    for state in ("awake", "paused", "weights_offloaded", "discard_all"):
        labels = f'engine="0",{model},sleep_state="{state}"'
        gauges.append(("vllm:engine_sleep_state", labels, int(state == label)))
    lines: list[str] = []
    for name, labels, value in gauges:
        kind = "counter" if name.endswith("_total") else "gauge"
        if not lines or not lines[-1].startswith(name + "{"):
            lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{{{labels}}} {value}")
    return "\n".join(lines) + "\n"


@routes.get("/sim/state")
async def sim_state(request: web.Request) -> web.Response:
    engine = engine_of(request)
    state = engine.snapshot()
    state["weights_ok"] = await engine.weights_ok()
    state["requests"] = dict(engine.request_counts)
    return web.json_response(state)


@routes.get("/sim/faults")
async def get_faults(request: web.Request) -> web.Response:
    return web.json_response({"faults": engine_of(request).faults.specs()})


@routes.post("/sim/faults")
async def set_faults(request: web.Request) -> web.Response:
    body = await json_body(request)
    specs = body.get("faults")
    if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
        raise ApiError(400, "expected {'faults': [spec, ...]}", param="faults")
    try:
        faults = parse_faults(specs)
    except FaultSpecError as exc:
        raise ApiError(400, str(exc), param="faults") from None
    engine = engine_of(request)
    engine.faults = faults
    return web.json_response({"faults": faults.specs()})
