"""A model's readiness probe (null: chosen by its engine, as before for every model)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("models_app", "0009_memory_check_and_verdict"),
    ]

    operations = [
        migrations.AddField(
            model_name="modeldefinition",
            name="probe",
            field=models.JSONField(blank=True, default=None, null=True),
        ),
    ]
