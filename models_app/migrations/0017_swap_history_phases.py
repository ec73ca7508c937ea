"""Swap history that adds up (issue 16, item 8): every phase of a switch has its column
(check and settle were timed but not kept), the wait in the queue before the switch, and
the operation (switch or evict) the swap carried out. Swaps recorded before have none of
the new durations; an eviction among them is told by its blank target."""

from django.apps.registry import Apps
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def mark_evictions(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """An operator's eviction was recorded with no target: it is an `evict` operation."""
    swap = apps.get_model("models_app", "SwapEvent")
    swap.objects.filter(to_name="").update(operation="evict")


class Migration(migrations.Migration):
    dependencies = [
        ("models_app", "0016_activity"),
    ]

    operations = [
        migrations.AddField(
            model_name="swapevent",
            name="operation",
            field=models.CharField(
                choices=[("switch", "Make active"), ("evict", "Evict")],
                default="switch",
                max_length=8,
            ),
        ),
        migrations.AddField(
            model_name="swapevent",
            name="queue_ms",
            field=models.FloatField(
                blank=True,
                help_text="from the request being queued to the switch starting",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="swapevent",
            name="check_ms",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="swapevent",
            name="settle_ms",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="swapevent",
            name="total_ms",
            field=models.FloatField(
                blank=True,
                help_text="the switch's own time: every phase, not the queue",
                null=True,
            ),
        ),
        migrations.AddIndex(
            model_name="swapevent",
            index=models.Index(fields=["gpu_group", "-started_at"], name="swap_group_started"),
        ),
        migrations.RunPython(mark_evictions, migrations.RunPython.noop),
    ]
