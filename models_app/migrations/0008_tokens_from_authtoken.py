"""DRF authtoken's tokens, stored in clear, become hashed ApiTokens; its table is dropped.

Runs whether or not rest_framework.authtoken was ever installed (it no longer is): the
table is read with plain SQL when it exists. Each token keeps working: the new row holds
its first characters and its SHA-256. On SQLite the rows are deleted with secure_delete
on, so their pages are zeroed rather than left readable in the file.
"""

import hashlib

from django.db import migrations

LEGACY_TABLE = "authtoken_token"
PREFIX_LENGTH = 8  # models_app.services.api_tokens.PREFIX_LENGTH when this was written


def convert(apps, schema_editor):
    connection = schema_editor.connection
    if LEGACY_TABLE not in connection.introspection.table_names():
        return
    api_token = apps.get_model("models_app", "ApiToken")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id FROM {LEGACY_TABLE}")  # noqa: S608
        for key, user_id in cursor.fetchall():
            api_token.objects.create(
                user_id=user_id,
                name="converted from authtoken",
                prefix=key[:PREFIX_LENGTH],
                token_hash=hashlib.sha256(key.encode()).hexdigest(),
            )
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA secure_delete = ON")
        cursor.execute(f"DELETE FROM {LEGACY_TABLE}")  # noqa: S608
    schema_editor.execute(f"DROP TABLE {LEGACY_TABLE}")
    schema_editor.execute("DELETE FROM django_migrations WHERE app = 'authtoken'")


class Migration(migrations.Migration):
    dependencies = [("models_app", "0007_api_tokens")]

    # Backwards there is nothing to restore: the tokens in clear are gone by design.
    operations = [migrations.RunPython(convert, migrations.RunPython.noop)]
