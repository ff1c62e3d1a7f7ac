"""Fast multi-row UPDATE for the runner's batch writes (PostgreSQL).

Django's ``bulk_update`` builds one ``CASE WHEN`` per field and row, which costs more than the
matching itself. Here one ``UPDATE … FROM unnest(arrays)`` does the same work with one array
parameter per column, so the statement stays small whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection
from django.db.models import Model


def rows_update(
    model: type[Model], columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
) -> None:
    """Set ``columns`` (name, PostgreSQL type) of each row; ``rows`` are (id, *values).

    Table and column names come from the model and our own code, never from input.
    """
    if not rows:
        return
    quote = connection.ops.quote_name
    names = [name for name, _ in columns]
    arrays = ", ".join(["%s::bigint[]"] + [f"%s::{sql_type}[]" for _, sql_type in columns])
    assignments = ", ".join(f"{quote(name)} = v.{quote(name)}" for name in names)
    aliases = ", ".join(quote(name) for name in names)
    sql = (
        f"UPDATE {quote(model._meta.db_table)} AS t SET {assignments} "  # noqa: S608
        f"FROM unnest({arrays}) AS v(id, {aliases}) WHERE t.id = v.id"
    )
    params = [list(column) for column in zip(*rows, strict=True)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
