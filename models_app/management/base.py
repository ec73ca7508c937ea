"""The base of llmux's `manage.py` commands: the database is ready before one runs.

Run from the command line on a fresh data directory, a command would otherwise end in
`no such table`. The embedded profile migrates its own database, as `llmux serve` does;
the production profile's database is migrated once by its operator, so there a command
stops with one line saying what to run (several processes must not race to migrate).
Commands called from code (`call_command`, the tests) skip this, as they skip Django's
system checks: their caller has set the database up.
"""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def prepare_database() -> None:
    """Apply pending migrations (embedded profile); CommandError when production lacks some."""
    executor = MigrationExecutor(connection)
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if not pending:
        return
    if settings.PROFILE == "production":
        raise CommandError(
            f"{len(pending)} database migrations are not applied; run "
            "`python manage.py migrate` once before starting llmux"
        )
    call_command("migrate", interactive=False, verbosity=0)
    # stderr: a command's stdout may be its output (llmux_export writes the registry there).
    print(f"database ready ({len(pending)} migrations applied)", file=sys.stderr)


class LlmuxCommand(BaseCommand):
    """A command whose database is migrated (or refused, in production) before it runs."""

    def execute(self, *args: Any, **options: Any) -> Any:
        if not options.get("skip_checks"):  # the command line; call_command skips
            prepare_database()
        return super().execute(*args, **options)
