"""The escrow invariants PostgreSQL enforces beyond the models' CHECK constraints.

Money follows tokens by one rule: the tokens drawn from a lot so far (delivered, credited,
unconsumed, moved) are worth ``floor(escrow × drawn / bought)``, and that is exactly what left
it as earned, credited and moved units. Computed in ``numeric``: escrow × tokens can pass the
range of bigint.
"""

from django.db import migrations

FORWARD = """
ALTER TABLE delivery_escrow_lot ADD CONSTRAINT lot_money_follows_tokens CHECK (
    earned_units + credited_units + moved_units = div(
        escrow_units::numeric
            * (delivered_tokens + credited_tokens + unconsumed_tokens + moved_tokens),
        bought_tokens
    )
);
"""

BACKWARD = "ALTER TABLE delivery_escrow_lot DROP CONSTRAINT lot_money_follows_tokens;"


class Migration(migrations.Migration):
    dependencies = [("delivery_escrow", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD, elidable=False)]
