"""django-q2 tasks: thin wrappers that call services with ids and names only."""

from __future__ import annotations

from models_app.services import switch_queue


def process_group(group: str) -> int:
    """Run the queued switches of one GPU group (safe to run twice: a lease decides)."""
    return switch_queue.process_group(group)


def sweep() -> int:
    """Reconcile engines with the database for most of a minute (one at a time)."""
    from models_app.services import sweeper

    return sweeper.sweep()


def warm_up(group: str, model_ids: list[int]) -> int:
    """Warm the given models of one GPU group (cold start, probe, evict)."""
    from models_app.services import warmup

    return warmup.warm_up(group, model_ids)
