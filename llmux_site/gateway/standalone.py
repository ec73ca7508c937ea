"""A gateway over a fixed set of engines, configured by one environment variable.

``daphne llmux_site.gateway.standalone:application`` with ``LLMUX_GATEWAY_CONFIG`` holding
``StaticBackend.from_config`` JSON: what the gateway tests and ``scripts/bench_gateway.py``
run, and a way to put the gateway in front of engines that someone else manages.
``LLMUX_GATEWAY_ALLOWED_HOSTS`` (comma-separated, Django's patterns) are the Host names it
answers: loopback's unless set.
"""

from __future__ import annotations

import json
import os

from llmux_site.gateway.app import DEFAULT_MAX_BODY_BYTES, GatewayApp
from llmux_site.gateway.backend import StaticBackend
from llmux_site.gateway.tuning import tune_web_process

CONFIG_VARIABLE = "LLMUX_GATEWAY_CONFIG"
MAX_BODY_VARIABLE = "LLMUX_GATEWAY_MAX_BODY_BYTES"
HOSTS_VARIABLE = "LLMUX_GATEWAY_ALLOWED_HOSTS"
LOOPBACK_HOSTS = "127.0.0.1,localhost,[::1]"


def from_environment() -> GatewayApp:
    """The gateway described by ``LLMUX_GATEWAY_CONFIG`` (and the optional body limit)."""
    raw = os.environ.get(CONFIG_VARIABLE)
    if not raw:
        raise RuntimeError(f"{CONFIG_VARIABLE} must hold the gateway's JSON configuration")
    max_body = int(os.environ.get(MAX_BODY_VARIABLE, DEFAULT_MAX_BODY_BYTES))
    hosts = [h.strip() for h in os.environ.get(HOSTS_VARIABLE, LOOPBACK_HOSTS).split(",")]
    return GatewayApp(
        StaticBackend.from_config(json.loads(raw)), max_body_bytes=max_body, allowed_hosts=hosts
    )


tune_web_process()
application = from_environment()
