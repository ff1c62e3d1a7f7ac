"""Vacuum the order and command tables early: the runner updates every row it processes within
a second of its insert, and dead versions slow the pending-command and order lookups until
VACUUM removes them (the default waits for 20% of the table to be dead)."""

from django.db import migrations

TABLES = ("orders_ordercommand", "orders_order")


def _alter(reset: bool):
    def run(apps, schema_editor):
        with schema_editor.connection.cursor() as cursor:
            for table in TABLES:
                if reset:
                    cursor.execute(
                        f"ALTER TABLE {table} RESET (autovacuum_vacuum_scale_factor, "
                        "autovacuum_vacuum_threshold, autovacuum_analyze_scale_factor)"
                    )
                else:
                    cursor.execute(
                        f"ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0.01, "
                        "autovacuum_vacuum_threshold = 2000, "
                        "autovacuum_analyze_scale_factor = 0.02)"
                    )

    return run


class Migration(migrations.Migration):
    dependencies = [("orders", "0004_fewer_indexes")]

    operations = [migrations.RunPython(_alter(False), _alter(True), elidable=False)]
