"""Database helpers shared by the hot paths (engine runner, ledger journal)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.db import connection


@contextmanager
def server_bound_cursor() -> Iterator[psycopg.Cursor]:
    """A psycopg cursor with server-side parameter binding, on Django's connection.

    Django binds parameters client-side (literal SQL built in Python), which costs more than the
    statement itself when a parameter is an array of thousands of values; server-side binding
    sends them as typed parameters. Errors are translated to Django's exceptions as usual.
    PostgreSQL only.
    """
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield cursor
