"""A payout worker process for the worker-death tests: runs the payout task for one withdrawal,
killing itself with SIGKILL at a named point (``before_call``, ``after_call``,
``after_commit``) or running to the end (``none``), as a Celery worker would die there.

Usage: python -m tests.funding.payout_worker WITHDRAWAL_ID STRIPE_API_BASE KILL_AT
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    withdrawal_id, api_base, kill_at = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import django

    django.setup()
    import stripe

    from accounts.funding import services
    from accounts.funding.tasks import withdrawal_payout_task

    stripe.api_base = api_base

    def checkpoint(name: str) -> None:
        if name == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    services._checkpoint = checkpoint
    result = withdrawal_payout_task.apply(args=[withdrawal_id])
    print(result.get())


if __name__ == "__main__":
    main()
