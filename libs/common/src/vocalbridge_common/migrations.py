"""Alembic, once for every service: each service keeps its own migration history
(in its own schema on PostgreSQL, in its own file on SQLite); its env.py calls
`run_alembic_env()` and its migrations call `enable_tenant_rls()`.

A new migration is a file in the service's migrations/versions/, written like
0001 (revision, down_revision, upgrade, downgrade); `python -m vocalbridge_<svc>
migrate` applies it on both backends."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.operations import Operations
from sqlalchemy import MetaData, create_engine, text

from vocalbridge_common.db import APP_ROLE, SYSTEM_ROLE, is_postgres, sync_url

_CREATE_ROLES = f"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
    CREATE ROLE {APP_ROLE} NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{SYSTEM_ROLE}') THEN
    CREATE ROLE {SYSTEM_ROLE} NOLOGIN BYPASSRLS;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL;  -- another service's migration created it concurrently
END
$$;
"""


def migrate(database_url: str, schema: str, script_location: Path) -> None:
    """Upgrades one service's database to its newest migration."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["database_url"] = database_url
    config.attributes["schema"] = schema
    command.upgrade(config, "head")


def run_alembic_env(target_metadata: MetaData) -> None:
    """The body of every service's migrations/env.py (online mode only)."""
    from alembic import context

    config = context.config
    url = config.attributes["database_url"]
    schema = config.attributes["schema"]
    postgres = is_postgres(url)
    engine = create_engine(sync_url(url))
    if not postgres:
        path = engine.url.database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    with engine.connect() as connection:
        if postgres:
            # Replicas starting together (init containers) migrate one at a time.
            connection.execute(text("SELECT pg_advisory_lock(hashtext(:name))"), {"name": f"vocalbridge:{schema}"})
            connection.commit()
            connection.execute(text(_CREATE_ROLES))
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            connection.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO {APP_ROLE}, {SYSTEM_ROLE}'))
            connection.execute(text(f'SET search_path TO "{schema}"'))
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table_schema=schema if postgres else None,
            render_as_batch=not postgres,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def grant_table(op: Operations, table: str) -> None:
    """Lets the service roles use a new table (PostgreSQL only)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP_ROLE}, {SYSTEM_ROLE}")


def enable_tenant_rls(op: Operations, table: str) -> None:
    """Row-level security on a tenant-owned table: rows of the transaction's tenant only."""
    grant_table(op, table)
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON {table} "
        "USING (tenant_id = current_setting('app.tenant_id', true)) "
        "WITH CHECK (tenant_id = current_setting('app.tenant_id', true))"
    )
