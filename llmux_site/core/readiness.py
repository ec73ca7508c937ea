"""Readiness that follows the model: which request proves an engine serves, and sending it.

/health does not see a decode stall, so after it a model is asked for real work: a chat or
completion model for one token, an embedding (pooling) model for one embedding. vLLM's
pooling runner serves no completions at all (404), so the probe must follow the model:
its own `probe` setting, else its engine's flags. A generic engine may name its own probe
(a path, and a JSON body to POST, or none to GET) or rely on /health alone. Pure core.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from llmux_site.core.engine_client import EngineClient, error_message, open_session

__all__ = [
    "ONE_TOKEN",
    "PROBE_KINDS",
    "ProbeFailed",
    "ProbeKind",
    "ReadinessProbe",
    "probe_setting_error",
    "readiness_probe",
    "run_probe",
    "runs_pooling",
]

PROBE_PROMPT = "ping"
_PATH_MAX = 256


class ProbeKind(enum.StrEnum):
    """What the readiness probe asks of an engine after /health."""

    COMPLETION = "completion"  # one token from /v1/completions
    CHAT = "chat"  # one token from /v1/chat/completions
    EMBEDDING = "embedding"  # one embedding of one input from /v1/embeddings
    HEALTH = "health"  # nothing more than /health
    CUSTOM = "custom"  # a generic engine's own path (and body)


PROBE_KINDS = tuple(kind.value for kind in ProbeKind if kind is not ProbeKind.CUSTOM)


class ProbeFailed(Exception):
    """The engine answered its readiness probe, but not with what it was asked for."""


@dataclass(frozen=True, slots=True)
class ReadinessProbe:
    """The probe of one model; `path` and `body` only for a custom one (body None: GET)."""

    kind: ProbeKind = ProbeKind.COMPLETION
    path: str = ""
    body: Mapping[str, Any] | None = None

    def __str__(self) -> str:
        if self.kind is not ProbeKind.CUSTOM:
            return self.kind.value
        return f"{'POST' if self.body is not None else 'GET'} {self.path}"


# The probe a model gets when it names none and runs no pooling runner.
ONE_TOKEN = ReadinessProbe()


def runs_pooling(extra_args: Sequence[str]) -> bool:
    """Whether vLLM runs the model with its pooling runner: `--runner pooling`, or a
    `--convert` to a pooling model, or (before vLLM 0.11) a pooling `--task`."""
    pooling = {
        "--runner": {"pooling"},
        "--convert": {"embed", "classify"},
        "--task": {"embed", "embedding", "classify", "score", "reward"},
    }
    for arg, following in itertools.pairwise([*extra_args, ""]):
        flag, has_value, value = arg.partition("=")
        if flag in pooling and (value if has_value else following) in pooling[flag]:
            return True
    return False


def probe_setting_error(value: object, *, generic: bool) -> str | None:
    """Why a model's `probe` setting is not valid, or None."""
    if isinstance(value, str):
        if value not in PROBE_KINDS:
            return f"unknown probe {value!r}; expected one of {', '.join(PROBE_KINDS)}"
        return None
    if not isinstance(value, dict):
        return "expected a probe name or an object {path, body}"
    if not generic:
        return "a probe of its own ({path, body}) is for generic engines; name one instead"
    unknown = sorted(set(value) - {"path", "body"})
    if unknown:
        return f"unknown field {unknown[0]!r}; a probe has path and body"
    path = value.get("path")
    if not isinstance(path, str) or not path.startswith("/") or len(path) > _PATH_MAX:
        return f"path must be a string starting with / (at most {_PATH_MAX} characters)"
    if any(c.isspace() or c in "#\x00" for c in path):
        return "path must not contain spaces, # or NUL"
    if "body" in value and not isinstance(value["body"], dict):
        return "body must be a JSON object (leave it out to GET the path)"
    return None


def readiness_probe(
    setting: str | Mapping[str, Any] | None, *, engine: str, extra_args: Sequence[str]
) -> ReadinessProbe:
    """The probe a model gets: its own setting (already valid), else by its engine: one
    embedding for vLLM's pooling runner, one completion token otherwise."""
    if isinstance(setting, Mapping):
        body = setting.get("body")
        return ReadinessProbe(ProbeKind.CUSTOM, str(setting["path"]), body)
    if setting:
        return ReadinessProbe(ProbeKind(setting))
    if engine != "generic" and runs_pooling(extra_args):
        return ReadinessProbe(ProbeKind.EMBEDDING)
    return ONE_TOKEN


async def _embedding(client: EngineClient, served_name: str) -> None:
    answer = await client.embeddings({"model": served_name, "input": PROBE_PROMPT})
    data = answer.get("data")
    first = data[0] if isinstance(data, list) and data else {}
    vector = first.get("embedding") if isinstance(first, dict) else None
    if not isinstance(vector, list | str) or not vector:
        raise ProbeFailed(f"/v1/embeddings answered without an embedding: {answer!r:.200}")


async def _custom(client: EngineClient, probe: ReadinessProbe) -> None:
    timeout = aiohttp.ClientTimeout(total=client.timeouts.probe)
    url = client.address.base_url() + probe.path
    method = "GET" if probe.body is None else "POST"
    async with (
        open_session(client.address) as session,
        session.request(method, url, json=probe.body, timeout=timeout) as reply,
    ):
        body = await reply.read()
    if reply.status >= 300:
        message = error_message(body, f"HTTP {reply.status}")
        raise ProbeFailed(f"{method} {probe.path} answered {reply.status}: {message}")


async def run_probe(client: EngineClient, probe: ReadinessProbe, served_name: str) -> None:
    """Ask the engine for the work `probe` names; raise if it does not do it."""
    if probe.kind is ProbeKind.COMPLETION:
        await client.probe(served_name)
    elif probe.kind is ProbeKind.CHAT:
        messages = [{"role": "user", "content": PROBE_PROMPT}]
        body = {"model": served_name, "messages": messages, "max_tokens": 1, "temperature": 0}
        await client.chat(body)
    elif probe.kind is ProbeKind.EMBEDDING:
        await _embedding(client, served_name)
    elif probe.kind is ProbeKind.CUSTOM:
        await _custom(client, probe)
