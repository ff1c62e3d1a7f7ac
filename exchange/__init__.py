"""The token exchange: Django project package and the exchange domain.

The Celery app lives in ``exchange.celery``; nothing here imports Django so that
``exchange.engine`` stays importable on its own.
"""
