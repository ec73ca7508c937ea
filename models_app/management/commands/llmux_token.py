"""`python manage.py llmux_token USER [--name NAME]`: a management API token, shown once."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser

from models_app.management.base import LlmuxCommand
from models_app.services import api_tokens


class Command(LlmuxCommand):
    help = (
        "Create a token for USER to call the management API with "
        "(`Authorization: Token KEY`). It is printed this once: only its hash is stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what will use it (shown in the admin)")

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        try:
            user = user_model.objects.get(**{user_model.USERNAME_FIELD: options["username"]})
        except user_model.DoesNotExist:
            raise CommandError(f"no user named {options['username']!r}") from None
        made = api_tokens.create_token(user, name=options["name"][:128])
        self.stderr.write(f"token {made.token.prefix}… for {user}; copy it now, it is not kept:")
        self.stdout.write(made.plaintext)
