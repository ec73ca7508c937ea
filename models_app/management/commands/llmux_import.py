"""`python manage.py llmux_import FILE [--dry-run] [--prune] [--strict]`: load an llmux config
file. An administrator's act: its paths need not lie under LLMUX_PATH_ROOTS (docs/CONFIG.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from llmux_site.core.config import ConfigError, load_config_file
from models_app.management.base import LlmuxCommand
from models_app.services.registry import apply_registry


class Command(LlmuxCommand):
    help = (
        "Import an llmux config file (JSON or YAML) into the model registry. Models are "
        "updated in place; models absent from the file are kept unless --prune is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="llmux config file (.json, .yaml or .yml)")
        parser.add_argument(
            "--dry-run", action="store_true", help="report what would change; write nothing"
        )
        parser.add_argument(
            "--prune", action="store_true", help="delete models that are not in the file"
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="refuse what llmux ignores or reads leniently (unknown keys, a sleep_level "
            "outside 1-5, an unknown policy_type) instead of keeping it with a warning",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        try:
            spec = load_config_file(path, strict=options["strict"])
            report = apply_registry(
                spec, dry_run=options["dry_run"], prune=options["prune"], confine_paths=False
            )
        except OSError as exc:
            raise CommandError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except ConfigError as exc:
            raise CommandError(f"{path}: {exc}\nnothing was written") from None
        self.stdout.write(str(report))
