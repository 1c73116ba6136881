"""JSON logs to stdout, one object per line, with the request context attached.

Database errors are logged without their text: a driver's message can quote the values
it was given (asyncpg's "invalid input for query argument $1: 'the user's message'",
PostgreSQL's "invalid input syntax ...: \"value\""), and those are message contents, key
digests or secrets. Such an exception is written as its type, SQLSTATE, constraint and
statement (code, not data), wherever it appears: in a stack trace's chain or as an argument
of the message.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback

from opentelemetry import trace

from vocalbridge_common.context import identity_var, request_id_var

# The modules whose exceptions may quote bound values (SQLAlchemy's StatementError prints
# its parameters unless the engine hides them; the engines here do, see db.Database).
_DATABASE_MODULES = ("asyncpg", "sqlalchemy", "sqlite3", "aiosqlite", "psycopg")
# What a redacted database error keeps: names from the schema, never values.
_SCHEMA_ATTRIBUTES = ("sqlstate", "schema_name", "table_name", "column_name", "constraint_name")
_MAX_STATEMENT = 500


def _is_database_error(error: BaseException) -> bool:
    return type(error).__module__.startswith(_DATABASE_MODULES)


def describe_error(error: BaseException) -> str:
    """`error` as a log may show it: a database error by its type, SQLSTATE, schema names and
    statement only; anything else as itself."""
    kind = f"{type(error).__module__}.{type(error).__qualname__}"
    if not _is_database_error(error):
        return f"{kind}: {error}"
    parts = [f"{name}={value}" for name in _SCHEMA_ATTRIBUTES if (value := getattr(error, name, None))]
    statement = getattr(error, "statement", None)
    if isinstance(statement, str):
        parts.append(f"statement={statement[:_MAX_STATEMENT]!r}")
    orig = getattr(error, "orig", None)
    if isinstance(orig, BaseException) and orig is not error:
        parts.append(f"cause={describe_error(orig)}")
    return f"{kind}: (text withheld: it may quote bound values) {' '.join(parts)}".rstrip()


def format_exception(error: BaseException) -> str:
    """A stack trace like traceback's, each exception of the chain described by `describe_error`."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = error
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            link, current = (
                "\nThe above exception was the direct cause of the following exception:\n\n",
                current.__cause__,
            )
        elif current.__context__ is not None and not current.__suppress_context__:
            link, current = (
                "\nDuring handling of the above exception, another exception occurred:\n\n",
                current.__context__,
            )
        else:
            current = None
    lines: list[str] = []
    for exception, link_after in reversed(chain):
        if exception.__traceback__ is not None:
            lines.append("Traceback (most recent call last):\n")
            lines.extend(traceback.format_tb(exception.__traceback__))
        lines.append(describe_error(exception) + "\n")
        lines.append(link_after)
    return "".join(lines)


def _message(record: logging.LogRecord) -> str:
    args = record.args
    if isinstance(args, tuple) and any(isinstance(arg, BaseException) and _is_database_error(arg) for arg in args):
        safe = tuple(
            describe_error(arg) if isinstance(arg, BaseException) and _is_database_error(arg) else arg for arg in args
        )
        return str(record.msg) % safe
    return record.getMessage()


_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service
        self._second = -1
        self._second_text = ""

    def _time(self, record: logging.LogRecord) -> str:
        # One strftime per second of log lines, not one per line.
        second = int(record.created)
        if second != self._second:
            self._second, self._second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self._time(record),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": _message(record),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        identity = identity_var.get()
        if identity is not None and identity.tenant_id:
            entry["tenant"] = identity.tenant_id
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            entry["exception"] = format_exception(record.exc_info[1])
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    # The logging HOWTO's "Optimization": the lines name no source file, thread or process,
    # so skip finding them (finding the caller walks the stack on every line).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
