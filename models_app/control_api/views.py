"""llmux's `/control/*` routes, on the operator actions the REST API and dashboard use
(each goes through the switch queue and is audited).

The routes take the management API's authentication (token or session) and roles: any
role reads, operators and administrators act. As in llmux, switch, pin, sleep and wake
answer once their operation has finished (200, or 500 with its error), waiting up to the
registry's request_timeout_secs (then 504). The views are async: a sync view would hold
the web process's one thread for sync code while it waits.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import APIException
from rest_framework.request import Request

from llmux_site.core.addresses import is_loopback_host
from llmux_site.core.eviction_policy import EvictionPolicy, PolicyError
from models_app.api.authentication import HashedTokenAuthentication
from models_app.control_api import shapes
from models_app.control_api.reads import engine_rows, known_model, request_timeout
from models_app.models import SwitchRequest, SwitchStatus
from models_app.roles import role_of
from models_app.services import definition_actions as definitions
from models_app.services import operator_actions as actions
from models_app.services import pins
from models_app.services.accounts import admin_port_user
from models_app.services.acting import Acting, ActionError, Outcome
from models_app.snapshot import status_snapshot

POLL = 0.1  # seconds between looks at a queued operation while the caller waits
Handler = Callable[[HttpRequest, Any, dict[str, Any]], Awaitable[JsonResponse]]


def error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def message(text: str) -> JsonResponse:
    return JsonResponse({"message": text})


def _caller(request: HttpRequest) -> tuple[Any, str | None]:
    """The caller and its role (None: not logged in): on llmux's admin port (loopback, no
    credentials, as llmux serves it) its operator; elsewhere whoever the REST API's
    authentication finds. Raises DRF's APIException for bad credentials."""
    if on_admin_port(request):
        user = admin_port_user()
        return user, role_of(user)
    drf = Request(request, authenticators=[HashedTokenAuthentication(), SessionAuthentication()])
    return drf.user, role_of(drf.user)


def on_admin_port(request: HttpRequest) -> bool:
    """Whether the request came in on the admin port's listener (its socket's own port,
    which the ASGI server reports, never a header) from loopback."""
    port = settings.LLMUX_ADMIN_PORT
    return (
        port is not None
        and request.META.get("SERVER_PORT") == str(port)
        and is_loopback_host(request.META.get("REMOTE_ADDR", ""))
    )


View = Callable[[HttpRequest], Coroutine[Any, Any, JsonResponse]]


def route(*methods: str) -> Callable[[Handler], View]:
    """An async control route: method check, authentication, a JSON object body."""

    def wrap(handler: Handler) -> View:
        async def view(request: HttpRequest) -> JsonResponse:
            if request.method not in methods:
                return error(405, f"method {request.method} not allowed")
            try:
                user, role = await sync_to_async(_caller)(request)
            except APIException as exc:
                return error(exc.status_code, str(exc.detail))
            if role is None:
                answer = error(401, "authentication required: Authorization: Token KEY")
                answer["WWW-Authenticate"] = "Token"
                return answer
            body = _body(request) if request.method == "POST" else {}
            if body is None:
                return error(400, "the body must be a JSON object")
            return await handler(request, user, body)

        return csrf_exempt(view)  # SessionAuthentication checks CSRF itself

    return wrap


def _body(request: HttpRequest) -> dict[str, Any] | None:
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _acting(request: HttpRequest, user: Any) -> Acting:
    return Acting(user, "api", request.META.get("REMOTE_ADDR", ""))


async def _act(call: Callable[[], Outcome]) -> Outcome | JsonResponse:
    """Run an operator action; its refusal as llmux-shaped JSON (403, 409 or 400)."""
    try:
        return await sync_to_async(call)()
    except PermissionError as exc:
        return error(403, str(exc))
    except actions.GroupBusy as exc:
        return error(409, str(exc))
    except ActionError as exc:
        return error(500, str(exc))


async def _finished(operation: int) -> SwitchRequest | None:
    """The operation once it has finished, or None when request_timeout_secs passed."""
    deadline = asyncio.get_running_loop().time() + await sync_to_async(request_timeout)()
    while asyncio.get_running_loop().time() < deadline:
        row = await sync_to_async(SwitchRequest.objects.filter(pk=operation).first)()
        if row is None or row.status not in (SwitchStatus.PENDING, SwitchStatus.RUNNING):
            return row
        await asyncio.sleep(POLL)
    return None


async def _run_to_end(
    call: Callable[[], Outcome], done: str, failed: str, *, pin: bool = False
) -> JsonResponse:
    """Queue an operation, wait for it, answer llmux's 200 `done` or 500 `failed: <e>`."""
    outcome = await _act(call)
    if isinstance(outcome, JsonResponse):
        return outcome
    if outcome.operation is None:
        return message(done)
    row = await _finished(outcome.operation)
    if row is None:
        return error(504, f"{failed}: operation {outcome.operation} did not finish in time")
    if row.status == SwitchStatus.FAILED:
        if pin:  # the worker puts the pin back too; whoever is first does it, once
            await sync_to_async(pins.undo_failed_pin)(row, row.error)
        return error(500, f"{failed}: {row.error or 'no reason given'}")
    return message(done)


async def _model(body: dict[str, Any]) -> str | JsonResponse:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        return error(400, "give the model's name in `model`")
    if not await sync_to_async(known_model)(name):
        return error(404, f"Model not found: {name}")
    return name


@route("GET")
async def status(request: HttpRequest, user: Any, body: dict[str, Any]) -> JsonResponse:
    snapshot = await sync_to_async(status_snapshot)()
    rows = await sync_to_async(engine_rows)()
    return JsonResponse(shapes.status_body(snapshot, rows))


@route("POST")
async def mode(request: HttpRequest, user: Any, body: dict[str, Any]) -> JsonResponse:
    wanted = body.get("mode")
    if wanted not in ("auto", "manual"):
        return JsonResponse(
            {"message": f"Unknown mode: {wanted}. Use 'auto' or 'manual'."}, status=400
        )
    acting = _acting(request, user)
    outcome = await _act(lambda: actions.do_set_mode(wanted, acting=acting))
    if isinstance(outcome, JsonResponse):
        return outcome
    return message(f"Switched to {wanted} mode")


@route("POST")
async def unpin(request: HttpRequest, user: Any, body: dict[str, Any]) -> JsonResponse:
    acting = _acting(request, user)
    outcome = await _act(lambda: actions.do_unpin(acting=acting))
    if isinstance(outcome, JsonResponse):
        return outcome
    return message("Unpinned. Switched to auto mode.")


def _operation_on(do: Callable[..., Outcome], done: str, failed: str, *, pin: bool = False) -> View:
    """A route that runs `do` on the body's model to its end: `done` ({} the model) or
    `failed: <error>`, as llmux answers."""

    @route("POST")
    async def view(request: HttpRequest, user: Any, body: dict[str, Any]) -> JsonResponse:
        name = await _model(body)
        if isinstance(name, JsonResponse):
            return name
        acting = _acting(request, user)
        return await _run_to_end(
            lambda: do(name, acting=acting), done.format(name), failed, pin=pin
        )

    return view


pin = _operation_on(
    actions.do_pin, "Pinned to model: {}", "Failed to switch to pinned model", pin=True
)
switch = _operation_on(actions.do_switch, "Switched to model: {}", "Switch failed")
wake = _operation_on(actions.do_wake, "Model {} woken", "Failed to wake model")


@route("POST")
async def sleep(request: HttpRequest, user: Any, body: dict[str, Any]) -> JsonResponse:
    """0.5: an optional `level` (1-5); later: an optional `eviction`; else the model's own."""
    name = await _model(body)
    if isinstance(name, JsonResponse):
        return name
    level, problem = shapes.level_of(body)
    policy = EvictionPolicy.from_sleep_level(level) if level is not None else None
    if problem is None and body.get("eviction") is not None:
        policy, problem = _eviction(body["eviction"])
    if problem is not None:
        return error(400, problem)
    rows = await sync_to_async(engine_rows)()
    policy = policy or rows[name].configured
    if level is not None:
        done = f"Model {name} sleeping at level {shapes.LEVEL_NAMES[level]}"
    else:
        done = f"Model {name} sleeping with policy {shapes.policy_debug(policy)}"
    acting = _acting(request, user)
    return await _run_to_end(
        lambda: actions.do_evict(
            name, weights=policy.weights.value, process=policy.process.value, acting=acting
        ),
        done,
        "Failed to sleep model",
    )


def _eviction(value: object) -> tuple[EvictionPolicy | None, str | None]:
    """(policy, error) of a request's `eviction: {"weights", "process"}`."""
    if not isinstance(value, dict):
        return None, "eviction must be an object with weights and process"
    try:
        return EvictionPolicy.parse(str(value.get("weights")), str(value.get("process"))), None
    except PolicyError as exc:
        return None, str(exc)


@route("GET")
async def sleep_levels(request: HttpRequest, user: Any, body: dict[str, Any]) -> JsonResponse:
    """0.5: each model's effective level (null where its policy is none of the five)."""
    rows = await sync_to_async(engine_rows)()
    return JsonResponse(
        {
            "models": {
                name: {
                    "effective_level": row.configured.sleep_level,
                    "process_state": shapes.process_state(row.engine, levels=True),
                }
                for name, row in rows.items()
            }
        }
    )


@route("POST")
async def sleep_level(request: HttpRequest, user: Any, body: dict[str, Any]) -> JsonResponse:
    """0.5: a runtime override of a model's level (the eviction override)."""
    name = await _model(body)
    if isinstance(name, JsonResponse):
        return name
    level, problem = shapes.level_of(body)
    if problem is not None or level is None:
        return error(400, problem or f"Invalid sleep level: {body.get('level')}. Must be 1-5.")
    policy = EvictionPolicy.from_sleep_level(level)
    done = f"Sleep level for {name} set to {level} ({shapes.LEVEL_NAMES[level]})"
    return await _override(request, user, name, policy, done)


async def _override(
    request: HttpRequest, user: Any, name: str, policy: EvictionPolicy, done: str
) -> JsonResponse:
    """Set `name`'s runtime eviction override (audited); `done` on success."""
    acting = _acting(request, user)
    outcome = await _act(lambda: definitions.do_set_override(name, policy, acting=acting))
    return outcome if isinstance(outcome, JsonResponse) else message(done)


@route("GET", "POST")
async def eviction(request: HttpRequest, user: Any, body: dict[str, Any]) -> JsonResponse:
    """Later llmux: each model's eviction policy (GET), or a runtime override (POST)."""
    if request.method == "GET":
        rows = await sync_to_async(engine_rows)()
        return JsonResponse(
            {
                "models": {
                    name: {
                        "eviction": shapes.policy_json(row.configured),
                        "process_state": shapes.process_state(row.engine),
                    }
                    for name, row in rows.items()
                }
            }
        )
    name = await _model(body)
    if isinstance(name, JsonResponse):
        return name
    policy, problem = _eviction(body.get("eviction"))
    if policy is None:
        return error(400, problem or "give eviction")
    done = f"Eviction policy for {name} set to {shapes.policy_debug(policy)}"
    return await _override(request, user, name, policy, done)
