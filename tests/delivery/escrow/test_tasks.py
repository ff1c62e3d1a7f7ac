"""The beat schedule names real tasks, and the tasks run the escrow jobs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from exchange.celery import app
from exchange.delivery.escrow.models import Lot
from exchange.delivery.escrow.tasks import escrow_release_task, lots_expire_task
from tests.delivery.escrow.conftest import OUT, assert_audit_ok, balance, escrow_balance

pytestmark = pytest.mark.django_db(transaction=True)


def test_beat_schedules_the_escrow_tasks():
    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    for task in (escrow_release_task, lots_expire_task):
        assert task.name in scheduled
        assert task.name in app.tasks


def test_expiry_task_pays_the_provider_for_unconsumed_tokens(pair, provider, make_trader):
    buyer = make_trader(cny=100)
    assert buyer.order(market=OUT, side="buy", price="8.00", quantity="1")["status"] == "filled"
    before = balance(provider.user, "CNY")[0]
    assert lots_expire_task.apply().get() == 0  # nothing due yet
    Lot.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    assert lots_expire_task.apply().get() == 1
    assert escrow_release_task.apply().get() == 0  # the expiry run already paid it

    assert balance(provider.user, "CNY")[0] == before + 8 * 10**8 - 800_000  # less 0.1% maker
    assert balance(buyer.user, OUT) == (0, 0)
    assert escrow_balance() == 0
    assert_audit_ok()
