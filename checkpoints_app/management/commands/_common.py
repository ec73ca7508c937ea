"""What both checkpoint commands share: finding the model, turning errors into exits."""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser

from models_app.models import ModelDefinition


def add_common_arguments(parser: CommandParser) -> None:
    parser.add_argument("model", help="the model's name (as clients send it)")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds to wait for the worker"
    )


def model_named(name: str) -> ModelDefinition:
    try:
        return ModelDefinition.objects.get(name=name)
    except ModelDefinition.DoesNotExist:
        known = ", ".join(ModelDefinition.objects.values_list("name", flat=True)) or "none"
        raise CommandError(f"no model named {name!r} (known: {known})") from None
