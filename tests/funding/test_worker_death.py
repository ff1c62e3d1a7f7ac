"""A payout worker killed before the Stripe call, after it, or after the commit: the
redelivered task (acks_late + reject_on_worker_lost) makes at most one transfer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from accounts.funding import tasks
from accounts.funding.models import Withdrawal
from accounts.funding.services import withdrawal_request
from exchange.ledger import services as ledger
from exchange.ledger.selectors import balance_get
from tests.funding.conftest import CNY, WEBHOOK_SECRET

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


def _worker(withdrawal_id: int, api_base: str, kill_at: str) -> subprocess.CompletedProcess[str]:
    db = connection.settings_dict
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{host}/{db['NAME']}",
        "STRIPE_SECRET_KEY": "sk_test_fake",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_TIMEOUT_SECONDS": "2",
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.funding.payout_worker",
            str(withdrawal_id),
            api_base,
            kill_at,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_killed_payout_worker_never_pays_twice(
    postgres: None, provider: Any, stripe_on: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The message stays queued: this test plays the worker (and its redelivery) itself.
    monkeypatch.setattr(tasks.withdrawal_payout_task, "delay", lambda *args: None)
    ledger.deposit_credit(
        user=provider, currency="CNY", amount=100 * CNY, reference="t", idempotency_key="t"
    )
    expected_calls = {"before_call": 1, "after_call": 2, "after_commit": 1}
    for kill_at, calls in expected_calls.items():
        withdrawal = withdrawal_request(user=provider, currency="CNY", amount="10")
        killed = _worker(withdrawal.pk, stripe_on.url, kill_at)
        assert killed.returncode == -9, killed.stderr[-2000:]
        redelivered = _worker(withdrawal.pk, stripe_on.url, "none")
        assert redelivered.returncode == 0, redelivered.stderr[-2000:]
        assert redelivered.stdout.strip() == "paid"

        withdrawal.refresh_from_db()
        assert withdrawal.status == "paid"
        made = [
            t for t in stripe_on.transfers if t["metadata"]["withdrawal_id"] == str(withdrawal.pk)
        ]
        assert len(made) == 1, kill_at
        assert withdrawal.stripe_transfer_id == made[0]["id"]
        attempts = [
            c
            for c in stripe_on.calls_to("/v1/transfers")
            if c.params["metadata[withdrawal_id]"] == str(withdrawal.pk)
        ]
        assert len(attempts) == calls, kill_at
        assert {c.idempotency_key for c in attempts} == {withdrawal.transfer_idempotency_key}
    assert Withdrawal.objects.filter(status="paid").count() == 3
    assert len(stripe_on.transfers) == 3
    assert balance_get(user=provider, asset="CNY") == (70 * CNY, 0)


def test_worker_tasks_are_acks_late_and_rejected_on_worker_loss() -> None:
    for task in (tasks.withdrawal_payout_task, tasks.stripe_event_process_task):
        assert task.acks_late is True
        assert task.reject_on_worker_lost is True
