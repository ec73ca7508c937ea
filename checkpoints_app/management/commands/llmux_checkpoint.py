"""`python manage.py llmux_checkpoint MODEL`: build a CRIU image of a model.

The model is brought up (cold start, or whatever its state allows) and probed, then
evicted by checkpoint; its later bring-ups restore the image instead of cold-starting.
A running worker carries it out (`llmux serve` or `llmux worker`).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from checkpoints_app.management.commands._common import add_common_arguments, model_named
from checkpoints_app.services.operations import build_image
from llmux_site.core.eviction_policy import WeightsAction
from models_app.management.base import LlmuxCommand
from models_app.services.waiting import OperationError


class Command(LlmuxCommand):
    help = "Bring a model up, probe it and checkpoint it with CRIU (an image to restore)."

    def add_arguments(self, parser: CommandParser) -> None:
        add_common_arguments(parser)
        parser.add_argument(
            "--weights",
            choices=[w.value for w in WeightsAction],
            help="what happens to the weights before the dump (default: the model's own "
            "eviction; discard makes the smallest image)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        model = model_named(options["model"])
        weights = WeightsAction(options["weights"]) if options["weights"] else None
        self.stderr.write(f"checkpointing {model.name} (the worker reports progress) ...")
        try:
            image = build_image(
                model,
                weights=weights,
                timeout=options["timeout"],
                actor="manage.py llmux_checkpoint",
            )
        except OperationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"image {image.pk} of {model.name}: {image.location}\n"
            f"  {image.bytes / 1024**2:.1f} MiB, weights {image.weights_state}, "
            f"dumped in {(image.dump_ms or 0) / 1000:.2f} s, criu {image.tool_version}"
        )
