"""One llmux per engine kind, serving a generation model and an embedding model, and the
four targets the scenarios run against: {simulator, real vLLM} x {direct, gateway}.

Both models sit on GPU groups of their own (`gpu_ids` 0 and 1; the real engines run on
CPU, where the variable means nothing), so both stay up together. llmux cold-starts them
on the first requests; meanwhile a watcher records what each engine's socket answers to
`GET /health` until its first 200 (the /health-during-start scenario). Direct targets then
talk to the sockets of the engines llmux started.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conformance.client import Endpoint, Reply
from tests.integration.harness import Llmux
from tests.plugins.engines import free_port
from tests.plugins.real_vllm import RealVllm

CHAT, EMBED = "chat", "embed"
MAX_MODEL_LEN = 512  # tests/plugins/real_vllm.py's CPU_ARGS; the simulator is given the same
GENERATE_ARGS = ["--runner", "generate"]
POOLING_ARGS = ["--runner", "pooling", "--convert", "embed"]
# The simulator as vLLM's CPU build: no GPU memory to report, no sleep mode; a start long
# enough that its bound-but-not-listening phase is seen, as a real vLLM's is.
SIM_ARGS = [
    "--max-model-len",
    str(MAX_MODEL_LEN),
    "--sim-platform",
    "cpu",
    "--sim-weights-bytes",
    "1MiB",
    "--sim-startup-seconds",
    "1",
]
POLICY = {"min_active_secs": 0, "request_timeout_secs": 900}
FIRST_REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    CHAT: ("/v1/completions", {"model": CHAT, "prompt": "hello", "max_tokens": 1}),
    EMBED: ("/v1/embeddings", {"model": EMBED, "input": "hello"}),
}


def simulator_config(sockets: Mapping[str, str]) -> dict[str, Any]:
    def entry(name: str, gpu: int, runner: list[str]) -> dict[str, Any]:
        return {
            "model_path": "sim/conformance",
            "uds": sockets[name],
            "served_model_name": name,
            "gpu_ids": [gpu],
            "sleep_level": 5,
            "extra_args": [*runner, *SIM_ARGS],
        }

    models = {CHAT: entry(CHAT, 0, GENERATE_ARGS), EMBED: entry(EMBED, 1, POOLING_ARGS)}
    return {"vllm_command": "llmux-sim", "models": models, "policy": POLICY}


def vllm_config(real_vllm: RealVllm, sockets: Mapping[str, str]) -> dict[str, Any]:
    def entry(name: str, gpu: int, runner: list[str]) -> dict[str, Any]:
        return real_vllm.entry(
            0,
            uds=sockets[name],
            served_model_name=name,
            gpu_ids=[gpu],
            sleep_level=5,
            extra_args=runner,
        )

    models = {CHAT: entry(CHAT, 0, GENERATE_ARGS), EMBED: entry(EMBED, 1, POOLING_ARGS)}
    return real_vllm.config(models, policy=POLICY)


def health_state(path: str) -> str:
    """What a client of the engine's socket sees: `absent`, `refused` or the HTTP status."""
    if not os.path.lexists(path):
        return "absent"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(5)
    try:
        probe.connect(path)
        probe.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        status_line = probe.recv(64).split(b"\r\n")[0].decode(errors="replace")
        return status_line.split(" ")[1] if " " in status_line else status_line or "closed"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return type(exc).__name__
    finally:
        probe.close()


@dataclass
class HealthWatch:
    """Polls an engine socket's /health until its first 200, noting each change seen."""

    path: str
    states: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> HealthWatch:
        self._thread = threading.Thread(target=self._run, name=f"health {self.path}")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            state = health_state(self.path)
            if not self.states or self.states[-1] != state:
                self.states.append(state)
            if state == "200":
                return
            time.sleep(0.02)

    def stop(self) -> list[str]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.states


@dataclass(frozen=True)
class Target:
    """Where a scenario's requests go: an engine kind, directly or through llmux's gateway."""

    engine: str  # "simulator" or "vllm"
    via: str  # "direct" or "gateway"
    endpoints: Mapping[str, Endpoint]  # by model name

    def __str__(self) -> str:
        return f"{self.engine}-{self.via}"

    @property
    def direct(self) -> bool:
        return self.via == "direct"

    def post(self, path: str, body: dict[str, Any]) -> Reply:
        return self.endpoints[body["model"]].request("POST", path, body)

    def send(self, model: str, method: str, path: str, *, raw: bytes | None = None) -> Reply:
        return self.endpoints[model].request(method, path, raw=raw)


@dataclass
class Stack:
    """A running llmux with both models up, and what their sockets said while starting."""

    engine: str
    server: Llmux
    sockets: dict[str, str]
    start_states: dict[str, list[str]] = field(default_factory=dict)

    def target(self, via: str) -> Target:
        if via == "direct":
            endpoints = {name: Endpoint(uds=path) for name, path in self.sockets.items()}
        else:
            gateway = Endpoint(port=self.server.port)
            endpoints = {name: gateway for name in self.sockets}
        return Target(self.engine, via, endpoints)

    def bring_up(self, config: dict[str, Any]) -> None:
        """Start llmux, then both models through the gateway, watching their sockets."""
        self.server.start(config)
        watches = {name: HealthWatch(path).start() for name, path in self.sockets.items()}
        gateway = self.target("gateway")
        try:
            with ThreadPoolExecutor(len(FIRST_REQUESTS)) as pool:
                first = {
                    name: pool.submit(gateway.post, path, body)
                    for name, (path, body) in FIRST_REQUESTS.items()
                }
                replies = {name: future.result() for name, future in first.items()}
        finally:
            self.start_states = {name: watch.stop() for name, watch in watches.items()}
        for name, reply in replies.items():
            assert reply.status == 200, f"{self.engine} {name}: {reply}\n{self.server.log()}"


def new_stack(engine: str, root: Path, sockets_dir: Path) -> Stack:
    sockets = {name: str(sockets_dir / f"{name}.sock") for name in (CHAT, EMBED)}
    return Stack(engine, Llmux(data_dir=root / "llmux", port=free_port()), sockets)
