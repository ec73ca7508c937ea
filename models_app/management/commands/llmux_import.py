"""`python manage.py llmux_import FILE [--dry-run] [--prune]`: load an llmux config file."""

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

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        try:
            spec = load_config_file(path)
            report = apply_registry(spec, dry_run=options["dry_run"], prune=options["prune"])
        except OSError as exc:
            raise CommandError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except ConfigError as exc:
            raise CommandError(f"{path}: {exc}\nnothing was written") from None
        self.stdout.write(str(report))
