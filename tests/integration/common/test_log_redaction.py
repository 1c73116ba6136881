"""Database errors reach the logs without the values they were given (message contents, key
digests), on real PostgreSQL and SQLite, through SQLAlchemy and through the asyncpg driver."""

from __future__ import annotations

import json
import logging

import psycopg
import pytest
from sqlalchemy import text

from vocalbridge_common.db import APP_ROLE, Database
from vocalbridge_common.logging import JsonFormatter

SECRET = "poem\u0000please-4f1c9e2b"
DIGEST = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def _logged(error: BaseException) -> str:
    """The JSON line the interceptor's `log.error(..., exc_info=error)` writes, and one with the
    error as an argument of the message."""
    formatter = JsonFormatter("probe")
    lines = []
    for msg, args, exc_info in (
        ("unexpected error in %s", ("/x.Y/Z",), (type(error), error, error.__traceback__)),
        ("write failed: %s", (error,), None),
    ):
        record = logging.LogRecord("vocalbridge.request", logging.ERROR, __file__, 1, msg, args, exc_info)
        lines.append(JsonFormatter.format(formatter, record))
    return "\n".join(lines)


async def _failure(coroutine) -> BaseException:
    try:
        await coroutine
    except Exception as error:  # noqa: BLE001 - the error is what the test looks at
        return error
    raise AssertionError("the statement was expected to fail")


@pytest.fixture(scope="module")
def tables(pg_url):
    """The test's tables, made by the owner; the service's role writes them."""
    with psycopg.connect(pg_url, autocommit=True) as owner:
        owner.execute("CREATE TABLE notes (digest text PRIMARY KEY, body text)")
        owner.execute("CREATE TABLE driver_notes (id int PRIMARY KEY, body text)")
        owner.execute(f"GRANT ALL ON notes, driver_notes TO {APP_ROLE}")
        owner.execute(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}")
    return pg_url


async def test_sqlalchemy_errors_log_no_bound_values(tables):
    database = Database(tables, "public")
    try:
        async with database.engine.begin() as connection:
            await connection.execute(text("INSERT INTO notes VALUES (:d, 'first')"), {"d": DIGEST})

        async def nul():
            async with database.engine.begin() as connection:
                await connection.execute(text("INSERT INTO notes VALUES ('k2', :b)"), {"b": SECRET})

        async def duplicate():
            async with database.engine.begin() as connection:
                await connection.execute(text("INSERT INTO notes VALUES (:d, 'again')"), {"d": DIGEST})

        async def wrong_type():
            async with database.engine.begin() as connection:
                await connection.execute(text("SELECT CAST(:v AS integer)"), {"v": "not-a-number-" + DIGEST})

        quoted = []
        for attempt in (nul, duplicate, wrong_type):
            error = await _failure(attempt())
            if DIGEST[7:20] in _unredacted(error):
                quoted.append(attempt.__name__)
            logged = _logged(error)
            assert "please" not in logged and DIGEST not in logged and DIGEST[7:20] not in logged, logged
            entry = json.loads(logged.splitlines()[0])
            assert "Traceback" in entry["exception"] and "withheld" in entry["exception"]
        # The positive control: a plain stack trace would have quoted the value.
        assert "wrong_type" in quoted
    finally:
        await database.dispose()


def _unredacted(error: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(error))


async def test_driver_errors_log_no_bound_values(tables):
    database = Database(tables, "public")
    try:

        async def nul():
            async with database.driver_connection() as connection:
                await connection.execute("INSERT INTO driver_notes VALUES (1, $1)", SECRET)

        async def wrong_type():
            async with database.driver_connection() as connection:
                await connection.execute("INSERT INTO driver_notes VALUES ($1, 'x')", DIGEST)

        for attempt in (nul, wrong_type):
            error = await _failure(attempt())
            logged = _logged(error)
            assert "please" not in logged and DIGEST[7:20] not in logged, logged
        # The positive control: asyncpg's own text quotes the value.
        assert DIGEST[:30] in str(await _failure(wrong_type()))
    finally:
        await database.dispose()


def test_other_errors_keep_their_text():
    error = ValueError("not a tenant id: 'x'")
    assert "not a tenant id" in _logged(error)
