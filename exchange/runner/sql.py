"""Set-based writes for the runner's batches.

Django's ``bulk_update`` builds one ``CASE WHEN`` per field and row, which costs more than the
matching itself. On PostgreSQL one ``UPDATE … FROM unnest(arrays)`` (and ``INSERT … SELECT
FROM unnest``) does the same work with one array parameter per column, so the statement stays
small whatever the batch size. Table and column names come from models and our own code, never
from input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connection
from django.db.models import Model

from exchange.db import array_param, server_bound_cursor


def rows_update(
    model: type[Model],
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    constants: Mapping[str, Any] | None = None,
) -> None:
    """Set ``columns`` (name, PostgreSQL type) of each row; ``rows`` are (id, *values).

    ``constants`` (name → value) are set to the same value on every row (one parameter).
    """
    if not rows:
        return
    constants = constants or {}
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    names = [name for name, _ in columns]
    types = ["bigint", *(sql_type for _, sql_type in columns)]
    params = [
        array_param(list(column), sql_type)
        for column, sql_type in zip(zip(*rows, strict=True), types, strict=True)
    ]
    arrays = ", ".join(placeholder for placeholder, _ in params)
    assignments = ", ".join(
        [f"{quote(name)} = v.{quote(name)}" for name in names]
        + [f"{quote(name)} = %s" for name in constants]
    )
    aliases = ", ".join(quote(name) for name in names)
    sql = (
        f"UPDATE {table} AS t SET {assignments} "  # noqa: S608  # nosec B608
        f"FROM unnest({arrays}) AS v(id, {aliases}) WHERE t.id = v.id"
    )
    with server_bound_cursor() as cursor:
        cursor.execute(sql, [*constants.values(), *(value for _, value in params)])


def rows_insert(
    model: type[Model], columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
) -> list[int]:
    """Insert ``rows`` (values in the order of ``columns``); returns their ids, in order."""
    if not rows:
        return []
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    names = ", ".join(quote(name) for name, _ in columns)
    params = [
        array_param(list(column), sql_type)
        for column, (_, sql_type) in zip(zip(*rows, strict=True), columns, strict=True)
    ]
    arrays = ", ".join(placeholder for placeholder, _ in params)
    # ORDER BY the ordinality keeps the returned ids in the order of the rows.
    sql = (
        f"INSERT INTO {table} ({names}) SELECT {names} FROM unnest({arrays}) "  # noqa: S608  # nosec B608
        f"WITH ORDINALITY AS v({names}, position) ORDER BY position RETURNING id"
    )
    with server_bound_cursor() as cursor:
        cursor.execute(sql, [value for _, value in params])
        return [row[0] for row in cursor.fetchall()]
