"""ledger_audit, ledger_adjust, the audit task, and the read-only admin."""

from __future__ import annotations

import contextlib
import logging

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from exchange.ledger.models import LedgerTransaction
from exchange.ledger.selectors import audit_run, balance_get
from exchange.ledger.tasks import ledger_audit
from tests.ledger.conftest import CNY, SYMBOL, fund

pytestmark = pytest.mark.django_db


def corrupt_cached_balance(user) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE ledger_account SET available = available + 1 WHERE owner_id = %s", [user.pk]
        )


def test_audit_passes_on_a_sound_ledger(make_user, capsys) -> None:
    fund(make_user(), 100)
    call_command("ledger_audit")
    assert "ledger audit: 2 accounts, 1 transactions, 2 postings: OK" in capsys.readouterr().out


def test_audit_reports_a_cached_balance_that_differs_and_exits_non_zero(make_user) -> None:
    user = make_user()
    fund(user, 100)
    corrupt_cached_balance(user)
    with pytest.raises(CommandError) as error:
        call_command("ledger_audit")
    assert error.value.returncode == 2
    assert "cached available=101 held=0, postings say available=100 held=0" in str(error.value)
    assert "asset does not sum" not in str(error.value)


def test_audit_task_logs_an_error_on_mismatch(make_user, caplog) -> None:
    user = make_user()
    fund(user, 100)
    assert ledger_audit.apply().get()["ok"] is True
    corrupt_cached_balance(user)
    with caplog.at_level(logging.INFO, logger="exchange.ledger.tasks"):
        result = ledger_audit.apply().get()
    assert result == {"ok": False, "problems": 1, "postings": 2}
    records = [r for r in caplog.records if r.name == "exchange.ledger.tasks"]
    assert [r.levelname for r in records] == ["INFO", "ERROR"]  # the sound run, the mismatch
    assert "LEDGER AUDIT FAILED" in records[1].getMessage()


def test_audit_is_scheduled() -> None:
    from django.conf import settings

    assert settings.CELERY_BEAT_SCHEDULE["ledger-audit"]["task"] == ledger_audit.name


class _Undo(Exception):
    pass


def test_audit_finds_every_kind_of_problem_planted_past_the_database_rules(make_user) -> None:
    """Rows the database would refuse (see test_constraints), planted with its triggers and
    foreign keys switched off for this transaction: the audit still sees every problem, as it
    would after a restore from a bad backup."""
    user = make_user()
    fund(user, 100)
    with contextlib.suppress(_Undo), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute(
                "INSERT INTO ledger_transaction (kind, reference, idempotency_key, request_hash, memo, created_at) "
                "VALUES ('adjustment', 'raw', 'raw', '', '', '2026-01-01')"
            )
            account = user.ledger_accounts.get().pk
            cursor.execute(
                "INSERT INTO ledger_posting (transaction_id, account_id, asset_id, bucket, amount) "
                "SELECT id, %s, 'USD', 'held', 7 FROM ledger_transaction WHERE reference = 'test'",
                [account],
            )
            cursor.execute("SET LOCAL session_replication_role = origin")
        problems = "\n".join(audit_run().problems)
        # roll the planted rows back (with the balance checks PostgreSQL queued for them)
        raise _Undo
    assert "asset does not sum to zero over all postings: USD, 7" in problems
    assert "transaction does not sum to zero for an asset" in problems
    assert "cached balance differs" in problems
    assert "posting's asset differs from its account's" in problems
    assert "fewer than two postings" in problems


def test_adjust_funds_an_account_in_currency_units(make_user, capsys) -> None:
    make_user("demo@example.com")
    staff = make_user("ops@example.com")
    staff.is_staff = True
    staff.save()
    call_command(
        "ledger_adjust",
        "demo@example.com",
        "CNY",
        "100.50",
        reason="demo funding",
        staff="ops@example.com",
    )
    user = staff.__class__.objects.get(email="demo@example.com")
    assert balance_get(user=user, asset="CNY") == (100 * CNY + 50_000_000, 0)
    posted = LedgerTransaction.objects.get()
    assert (posted.kind, posted.memo, posted.staff_user_id) == (
        "adjustment",
        "demo funding",
        staff.pk,
    )
    assert "10050000000" not in capsys.readouterr().out  # shown in CNY, not ledger units


def test_adjust_tokens_in_whole_tokens_and_negative_amounts(make_user, market) -> None:
    user = make_user("p@example.com")
    call_command("ledger_adjust", "p@example.com", SYMBOL, "5000000", reason="test capacity")
    call_command("ledger_adjust", "p@example.com", SYMBOL, "-1000000", reason="too much")
    assert balance_get(user=user, asset=SYMBOL) == (4_000_000, 0)


def test_adjust_with_the_same_key_twice_posts_once(make_user) -> None:
    user = make_user("k@example.com")
    for _ in range(2):
        call_command(
            "ledger_adjust", "k@example.com", "USD", "1", reason="r", idempotency_key="once"
        )
    assert balance_get(user=user, asset="USD") == (CNY, 0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["nobody@example.com", "CNY", "1"], "No user"),
        (["a@example.com", "CNY", "0.000000001"], "finer than the ledger unit"),
        (["a@example.com", SYMBOL, "1.5"], "finer than the ledger unit"),
        (["a@example.com", "CNY", "abc"], "not a decimal"),
        (["a@example.com", "CNY", "-1"], "Insufficient available CNY"),
        (["a@example.com", "CNY", "0"], "non-zero"),
        (["a@example.com", "EUR", "1"], "Unknown asset"),
    ],
)
def test_adjust_refusals(make_user, market, arguments, message) -> None:
    make_user("a@example.com")
    with pytest.raises(CommandError, match=message):
        call_command("ledger_adjust", *arguments, reason="r")
    with pytest.raises(CommandError, match="Only staff"):
        call_command(
            "ledger_adjust", "a@example.com", "CNY", "1", reason="r", staff="a@example.com"
        )
    assert not LedgerTransaction.objects.exists()


def test_adjust_needs_a_reason(make_user) -> None:
    make_user("a@example.com")
    with pytest.raises(CommandError):
        call_command("ledger_adjust", "a@example.com", "CNY", "1")
    with pytest.raises(CommandError, match="reason"):
        call_command("ledger_adjust", "a@example.com", "CNY", "1", reason="   ")


def test_admin_is_read_only(make_user, client, admin_login) -> None:
    admin = make_user("admin@example.com")
    admin.is_staff = admin.is_superuser = True
    admin.save()
    fund(make_user(), 100)
    admin_login(client, admin)  # the admin needs a session verified by TOTP
    for model in ("asset", "account", "ledgertransaction", "posting"):
        listing = client.get(f"/admin/ledger/{model}/")
        assert listing.status_code == 200
        assert client.get(f"/admin/ledger/{model}/add/").status_code == 403
    posted = LedgerTransaction.objects.get()
    detail = client.get(f"/admin/ledger/ledgertransaction/{posted.pk}/change/")
    assert detail.status_code == 200
    assert b"Save" not in detail.content
    assert client.post(f"/admin/ledger/ledgertransaction/{posted.pk}/delete/").status_code == 403
    assert LedgerTransaction.objects.count() == 1
