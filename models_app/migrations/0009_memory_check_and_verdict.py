"""How a swap's eviction freed GPU memory, and llmux_validate's four verdicts.

A validation run that passed before says `pass`; one refused because the host lacked the
process action says `refused`; every other says `fail`, as it did.
"""

from django.db import migrations, models

REFUSED_SUFFIX = "is not available on this host"


def verdicts(apps, schema_editor):
    run = apps.get_model("models_app", "ValidationRun")
    run.objects.filter(passed=True).update(verdict="pass")
    run.objects.filter(passed=False, error__endswith=REFUSED_SUFFIX).update(verdict="refused")


class Migration(migrations.Migration):
    dependencies = [
        ("models_app", "0008_tokens_from_authtoken"),
    ]

    operations = [
        migrations.AddField(
            model_name="swapevent",
            name="memory_check",
            field=models.CharField(
                blank=True,
                choices=[
                    ("", "Nothing evicted"),
                    ("freed", "Freed (GPU probe)"),
                    ("exited", "Engine processes gone"),
                    ("unknown", "Not verified (no GPU probe)"),
                ],
                help_text="how the eviction was seen to free GPU memory",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="validationrun",
            name="verdict",
            field=models.CharField(
                choices=[
                    ("pass", "Pass"),
                    ("fail", "Fail"),
                    ("unverified", "Unverified"),
                    ("refused", "Refused"),
                ],
                default="fail",
                max_length=16,
            ),
        ),
        migrations.RunPython(verdicts, migrations.RunPython.noop),
    ]
