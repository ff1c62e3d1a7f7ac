"""Schemathesis against a live served exchange: the document and the code are one.

Every operation of ``/api/schema/``, every check, the examples, coverage, fuzzing and stateful
phases, authenticated with an API key holding every scope of a user with funds and tokens in
every market. ``schemathesis.toml`` beside this file lists the few statuses that are documented
answers the generic checks do not expect (Stripe off: 503; market rules the schema states in
words: 400), and ``schemathesis_hooks.py`` what the document cannot say (opaque cursors,
windows that run forwards). Bounded: a few examples per operation, one worker, ~1-2 minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from accounts.models import SCOPE_CODES
from accounts.services import api_key_create
from exchange.ledger import services as ledger
from exchange.markets.models import Market
from tests.asgi_server import ROOT, asgi_server

pytestmark = pytest.mark.django_db(transaction=True)

HERE = Path(__file__).resolve().parent
MAX_EXAMPLES = 10


@pytest.fixture
def api_key(make_user, postgres, redis_url) -> str:
    call_command("load_demo_markets", verbosity=0)
    user = make_user(role="both")
    for currency in sorted(set(Market.objects.values_list("quote_currency", flat=True))):
        ledger.deposit_credit(
            user=user,
            currency=currency,
            amount=10**6 * 10**8,
            reference="schemathesis",
            idempotency_key=f"schemathesis-{currency}",
        )
    for market in Market.objects.all():
        ledger.capacity_issue(
            user=user,
            market=market,
            tokens=10**9,
            reference="schemathesis",
            idempotency_key=f"schemathesis-{market.symbol}",
        )
    return api_key_create(user=user, name="schemathesis", scopes=list(SCOPE_CODES)).secret


# ~2 minutes alone on 2 cores; more beside the rest of the suite (the default limit is 180 s)
@pytest.mark.timeout(600)
def test_schemathesis_finds_no_failure(api_key, tmp_path) -> None:
    with asgi_server() as (base, _):
        command = [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file", str(HERE / "schemathesis.toml"),
            "run", f"{base}/api/schema/?format=json",
            "--header", f"Authorization: Bearer {api_key}",
            "--phases", "examples,coverage,fuzzing,stateful",
            "--max-examples", str(MAX_EXAMPLES),
            "--seed", "15",
            "--workers", "1",
            "--request-timeout", "30",
            "--no-color",
            "--report", "junit", "--report-dir", str(tmp_path),
        ]  # fmt: skip
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.contract.schemathesis_hooks",
            "PYTHONPATH": str(ROOT),
        }
        # cwd: Schemathesis keeps a cache folder where it runs
        result = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540, check=False
        )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-20000:]
    assert "Tested: " in report
    selected = report.split("Selected: ")[1].split("\n")[0]  # "40/40": every operation
    total = selected.split("/")[1]
    assert selected == f"{total}/{total}", selected
    assert f"Tested: {total}" in report
    assert "Stateful" in report
    assert "Stateful (not applicable)" not in report
