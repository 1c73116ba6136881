"""The database layer: one async engine per process, tenant-scoped transactions.

SQLite (aiosqlite) is the embedded default, one file per service. On
PostgreSQL (asyncpg; Alembic migrates with psycopg) each service owns one schema,
and row-level security enforces tenant isolation under the code's own `tenant_id`
filters:

- every connection switches to the non-owner role APP_ROLE, whose rows are
  filtered by the policy `tenant_id = current_setting('app.tenant_id', true)`;
- a tenant transaction starts with `set_config('app.tenant_id', :t, true)`
  (transaction-local), so a query that forgets its filter sees nothing;
- the few cross-tenant reads (an API-key lookup before the tenant is known,
  an outbox relay) run in a system transaction, `SET LOCAL ROLE SYSTEM_ROLE`,
  a role with BYPASSRLS, visible as such at the call site.

A hot path may skip the ORM on PostgreSQL: `tenant_connection` / `system_connection`
give a driver connection (asyncpg, from a pool of its own) inside the same kind of
transaction, for a few hand-written statements (prepared once per connection by the
driver). BEGIN and the tenant's `set_config` then travel to the server together, in one
round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import asyncpg
from sqlalchemy import DateTime, Table, event, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:  # asyncpg's classes are generic in its type stubs only
    from asyncpg.pool import PoolConnectionProxy

    # A connection of the driver's own pool, for hand-written statements (asyncpg's API).
    DriverConnection: TypeAlias = PoolConnectionProxy[asyncpg.Record]

APP_ROLE = "vocalbridge_app"
SYSTEM_ROLE = "vocalbridge_system"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


# What a tenant id may be when it is written into a statement as a literal (the ids this
# gateway issues are `ten_` and 26 base32 characters).
_TENANT_LITERAL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def tenant_begin(tenant_id: str) -> str:
    """BEGIN of a transaction that can see and write only `tenant_id`'s rows, with its
    set_config in the same simple query (one round trip; the tenant as a checked literal)."""
    if not tenant_id:
        raise ValueError("tenant transaction without a tenant")
    if not _TENANT_LITERAL.match(tenant_id):
        raise ValueError(f"not a tenant id: {tenant_id!r}")
    return f"BEGIN; SELECT set_config('app.tenant_id', '{tenant_id}', true)"


def async_url(url: str) -> str:
    """Accepts `postgresql://…` / `sqlite:///…` and picks the async driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+asyncpg"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    if parsed.drivername in ("sqlite", "sqlite+aiosqlite"):
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r} (use postgresql:// or sqlite:///)")


def sync_url(url: str) -> str:
    """The same database through a synchronous driver (for Alembic)."""
    parsed = make_url(async_url(url))
    driver = "postgresql+psycopg" if parsed.drivername.startswith("postgresql") else "sqlite"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def is_postgres(url: str) -> bool:
    return make_url(async_url(url)).drivername.startswith("postgresql")


async def insert_or_ignore(
    session: AsyncSession, model: type[DeclarativeBase], rows: list[dict[str, Any]], conflict_columns: list[str]
) -> int:
    """Inserts the rows whose unique key is new; returns how many were inserted.

    The database's unique constraint decides, not a lock in memory, so this
    holds across replicas and restarts (idempotency keys, usage event ids).
    """
    if not rows:
        return 0
    table = cast(Table, model.__table__)
    if session.get_bind().dialect.name == "postgresql":
        statement: Any = postgresql_insert(table)
    else:
        statement = sqlite_insert(table)
    columns = [table.c[name] for name in conflict_columns]
    # RETURNING counts what was inserted: rowcount is not reliable for multi-row inserts on every driver.
    statement = statement.values(rows).on_conflict_do_nothing(index_elements=conflict_columns).returning(*columns)
    result = await session.execute(statement)
    return len(result.all())


class Database:
    """A service's engine and its transaction scopes. Built at start-up, never at import."""

    def __init__(self, url: str, schema: str, *, pool_size: int = 5) -> None:
        self.url = async_url(url)
        self.schema = schema
        self.postgres = is_postgres(self.url)
        if self.postgres:
            # A fixed pool: connections are opened once and kept. Overflow connections would be
            # opened and closed under every burst (a PostgreSQL backend forked each time), and
            # on two cores a few connections per process keep the server busy. No pre-ping: it
            # is a round trip on every checkout; a connection the server dropped fails one
            # transaction, and SQLAlchemy then replaces every connection of the pool.
            self.engine: AsyncEngine = create_async_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=0,
                pool_timeout=30,
                pool_pre_ping=False,
                hide_parameters=True,
            )
            event.listen(self.engine.sync_engine, "connect", self._on_postgres_connect)
        else:
            database = make_url(self.url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_async_engine(self.url, connect_args={"timeout": 30}, hide_parameters=True)
            event.listen(self.engine.sync_engine, "connect", self._on_sqlite_connect)
        # hide_parameters: an error's text never carries the bound values (message contents,
        # key digests); vocalbridge_common.logging withholds the drivers' own texts too.
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._pool_size = pool_size
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._pool_lock = asyncio.Lock()

    def _on_postgres_connect(self, dbapi_connection: Any, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f'SET search_path TO "{self.schema}"')
        cursor.execute(f"SET ROLE {APP_ROLE}")
        cursor.close()
        # Committed so the pool's reset-on-return rollback cannot undo the role switch.
        dbapi_connection.commit()

    @staticmethod
    def _on_sqlite_connect(dbapi_connection: Any, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @asynccontextmanager
    async def tenant_transaction(self, tenant_id: str) -> AsyncIterator[AsyncSession]:
        """A transaction that can see and write only `tenant_id`'s rows."""
        if not tenant_id:
            raise ValueError("tenant transaction without a tenant")
        async with self._sessions.begin() as session:
            if self.postgres:
                await session.execute(text("SELECT set_config('app.tenant_id', :tenant, true)"), {"tenant": tenant_id})
            yield session

    @asynccontextmanager
    async def system_transaction(self) -> AsyncIterator[AsyncSession]:
        """A cross-tenant transaction, for the few reads that must precede knowing the tenant."""
        async with self._sessions.begin() as session:
            if self.postgres:
                await session.execute(text(f"SET LOCAL ROLE {SYSTEM_ROLE}"))
            yield session

    @asynccontextmanager
    async def tenant_connection(self, tenant_id: str) -> AsyncIterator[DriverConnection]:
        """PostgreSQL only: the driver's connection (an asyncpg.Connection) in a transaction that
        can see and write only `tenant_id`'s rows, for a hot path's hand-written statements.
        Committed when the block ends, rolled back when it raises."""
        async with self._driver_transaction(tenant_begin(tenant_id)) as connection:
            yield connection

    @asynccontextmanager
    async def system_connection(self) -> AsyncIterator[DriverConnection]:
        """PostgreSQL only: the driver's connection in a cross-tenant (system) transaction."""
        async with self._driver_transaction(f"BEGIN; SET LOCAL ROLE {SYSTEM_ROLE}") as connection:
            yield connection

    @asynccontextmanager
    async def driver_connection(self) -> AsyncIterator[DriverConnection]:
        """PostgreSQL only: a driver connection outside any transaction (each statement is one),
        for statements that set the tenant themselves (server-side functions that begin with
        set_config) or that begin a transaction with `tenant_begin`. Rolled back if a block that
        raises left a transaction open."""
        pool = await self._driver_pool()
        async with pool.acquire() as connection:
            try:
                yield connection
            except BaseException:
                await self._roll_back(connection)
                raise

    @asynccontextmanager
    async def _driver_transaction(self, begin: str) -> AsyncIterator[DriverConnection]:
        async with self.driver_connection() as connection:
            await connection.execute(begin)
            yield connection
            await connection.execute("COMMIT")

    @staticmethod
    async def _roll_back(connection: DriverConnection) -> None:
        """Leaves no transaction open on a connection going back to the pool. When the rollback
        cannot be sent (a statement was cancelled midway), the pool's release rolls back or
        closes the connection."""
        with contextlib.suppress(Exception):
            if not connection.is_closed() and connection.is_in_transaction():
                await connection.execute("ROLLBACK")

    async def _driver_pool(self) -> asyncpg.Pool[asyncpg.Record]:
        """The pool of driver connections, opened on first use (only services with a hot path
        on the driver use one); as big as the SQLAlchemy pool, its connections kept."""
        if not self.postgres:
            raise RuntimeError("driver transactions are for PostgreSQL")
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    dsn = make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)
                    self._pool = await asyncpg.create_pool(
                        dsn,
                        min_size=0,
                        max_size=self._pool_size,
                        max_inactive_connection_lifetime=0,
                        init=self._on_driver_connect,
                        reset=self._keep_session,
                    )
        return self._pool

    async def _on_driver_connect(self, connection: asyncpg.Connection[asyncpg.Record]) -> None:
        await connection.execute(f'SET search_path TO "{self.schema}"; SET ROLE {APP_ROLE}')

    @staticmethod
    async def _keep_session(connection: asyncpg.Connection[asyncpg.Record]) -> None:
        """On release: nothing beyond the pool's own rollback of an open transaction. (Its default
        reset runs RESET ALL, which would drop the role the connection switched to.)"""

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await self.engine.dispose()
