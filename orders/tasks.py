from celery import shared_task

from orders.capacity import capacity_expire_due


@shared_task(acks_late=True)
def capacity_expire_due_task() -> int:
    """Runs every minute (CELERY_BEAT_SCHEDULE): expire due capacity listings."""
    return capacity_expire_due()
