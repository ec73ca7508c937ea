"""`python manage.py llmux_export [--format json|yaml] [--output FILE]`: write the registry."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from llmux_site.core.config import Format, dump_config
from models_app.management.base import LlmuxCommand
from models_app.services.registry import export_registry


class Command(LlmuxCommand):
    help = "Export the model registry as an llmux config file (JSON by default, to stdout)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--format",
            choices=["json", "yaml"],
            help="output format (default: from the --output extension, else json)",
        )
        parser.add_argument("--output", type=Path, help="write to this file instead of stdout")

    def handle(self, *args: Any, **options: Any) -> None:
        output: Path | None = options["output"]
        fmt: Format = options["format"] or _format_for(output)
        text = dump_config(export_registry(), fmt)
        if output is None:
            self.stdout.write(text, ending="")
            return
        try:
            _write_atomically(output, text)
        except OSError as exc:
            raise CommandError(f"{output}: cannot write: {exc.strerror or exc}") from None
        self.stderr.write(f"wrote {output}")


def _format_for(output: Path | None) -> Format:
    if output is not None and output.suffix.lower() in {".yaml", ".yml"}:
        return "yaml"
    return "json"


def _write_atomically(path: Path, text: str) -> None:
    # A half-written config is worse than none: write beside it, then rename over it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
