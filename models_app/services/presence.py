"""Web processes report waiting demand and drain acknowledgements; workers aggregate them."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from datetime import timedelta
from typing import NamedTuple

from django.utils import timezone

from models_app import protocol
from models_app.models import WebInstance

# A web process heartbeats every second; three missed beats and it counts as gone (its
# in-flight requests died with it, so it must not hold up a drain).
STALE_AFTER = timedelta(seconds=3)


def report(
    instance_id: str,
    *,
    pid: int,
    waiting: Mapping[str, tuple[int, float]],
    drained: Mapping[str, int],
    in_flight: Mapping[str, int] | None = None,
) -> None:
    """Upsert this web process's row with its current waiting demand and drain acks."""
    fields = {
        "host": socket.gethostname(),
        "pid": pid,
        "heartbeat_at": timezone.now(),
        "waiting": {name: [count, since] for name, (count, since) in waiting.items()},
        "drained": dict(drained),
        "in_flight": dict(in_flight or {}),
    }
    # One UPDATE in the usual case (the row exists after the first report).
    if not WebInstance.objects.filter(id=instance_id).update(**fields):
        WebInstance.objects.update_or_create(id=instance_id, defaults=fields)
    protocol.after_commit(protocol.PresenceReported())


def forget(instance_id: str) -> None:
    WebInstance.objects.filter(id=instance_id).delete()


class LiveInstance(NamedTuple):
    """What workers read of a live web process (no model instance: read on hot paths)."""

    id: str
    waiting: dict[str, list[float]]
    drained: dict[str, int]
    in_flight: dict[str, int]


def live_instances() -> list[LiveInstance]:
    rows = WebInstance.objects.filter(heartbeat_at__gte=timezone.now() - STALE_AFTER)
    return [LiveInstance(*row) for row in rows.values_list("id", "waiting", "drained", "in_flight")]


def total_waiting(model_name: str, instances: list[LiveInstance] | None = None) -> int:
    """Requests waiting for `model_name` (across `instances`, when already read)."""
    return group_demand([model_name], instances)[model_name].waiting


def all_drained(model_name: str, token: int) -> bool:
    """True when every live web process acknowledged `token` for `model_name`."""
    return all(int(instance.drained.get(model_name, -1)) >= token for instance in live_instances())


class Demand(NamedTuple):
    """One model's demand, summed over the live web processes."""

    waiting: int  # requests waiting for it
    oldest: float | None  # when the oldest of them started waiting (Unix seconds)
    in_flight: int


def group_demand(
    model_names: list[str], instances: list[LiveInstance] | None = None
) -> dict[str, Demand]:
    """Per model: its Demand summed over live web processes."""
    demand = dict.fromkeys(model_names, Demand(0, None, 0))
    for instance in live_instances() if instances is None else instances:
        for name in model_names:
            waiting, since, busy = demand[name]
            entry = instance.waiting.get(name)
            if entry and int(entry[0]) > 0:
                waiting += int(entry[0])
                since = float(entry[1]) if since is None else min(since, float(entry[1]))
            busy += int(instance.in_flight.get(name, 0))
            demand[name] = Demand(waiting, since, busy)
    return demand
