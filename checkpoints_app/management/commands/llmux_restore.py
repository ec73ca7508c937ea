"""`python manage.py llmux_restore MODEL`: restore a model's newest image, leave it running.

A running worker carries it out (`llmux serve` or `llmux worker`); the model's GPU group
switches to it like any other operation.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from checkpoints_app.management.commands._common import add_common_arguments, model_named
from checkpoints_app.services.operations import restore
from models_app.management.base import LlmuxCommand
from models_app.services.waiting import OperationError


class Command(LlmuxCommand):
    help = "Restore a model from its newest usable checkpoint image and leave it running."

    def add_arguments(self, parser: CommandParser) -> None:
        add_common_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        model = model_named(options["model"])
        try:
            finished = restore(model, timeout=options["timeout"], actor="manage.py llmux_restore")
        except OperationError as exc:
            raise CommandError(str(exc)) from None
        took = finished.swap.total_ms if finished.swap and finished.swap.total_ms else 0.0
        self.stdout.write(f"{model.name} restored and running ({took / 1000:.2f} s)")
