"""Driving one service's Alembic history step by step, for the migration tests."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from vocalbridge_common.db import sync_url


def alembic(url: str, directory: Path, schema: str, action: str, revision: str) -> None:
    """`action` ("upgrade" / "downgrade") the service's history at `directory` to `revision`."""
    config = Config()
    config.set_main_option("script_location", str(directory))
    config.attributes.update(database_url=url, schema=schema)
    getattr(command, action)(config, revision)


def connect(url: str, schema: str) -> sa.Engine:
    """A synchronous engine on the service's tables (its schema on PostgreSQL)."""
    engine = sa.create_engine(sync_url(url))
    if engine.dialect.name == "postgresql":
        sa.event.listen(engine, "connect", lambda dbapi, _: dbapi.execute(f"SET search_path TO {schema}"))
    return engine
