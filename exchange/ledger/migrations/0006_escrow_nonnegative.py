"""ESCROW never negative, in the database (issue #13): it holds what buyers paid for their lots,
so a release or credit beyond it would pay out money no one paid in. The other system accounts
mirror the outside world and may go negative."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0005_delivery_accounts"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="account",
            name="ledger_account_user_nonnegative",
        ),
        migrations.AddConstraint(
            model_name="account",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("owner__isnull", True), models.Q(("system", "escrow"), _negated=True)
                    ),
                    models.Q(("available__gte", 0), ("held__gte", 0)),
                    _connector="OR",
                ),
                name="ledger_account_nonnegative",
            ),
        ),
    ]
