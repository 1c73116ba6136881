"""Voice migration 0002 moves the stored responses of standalone speech requests into the
common idempotency table as completed keys, for every tenant (row-level security forced) on
PostgreSQL and on SQLite, so a repeat after the upgrade still replays; and back on downgrade."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests import migration_support
from tests.conftest import temporary_database
from vocalbridge_common.db import Database, UtcDateTime
from vocalbridge_common.idempotency import Replay, claim
from vocalbridge_voice.repository import IdempotencyRepository
from vocalbridge_voice.server import MIGRATIONS_DIR, SCHEMA

TENANTS = ("ten_01m87srx2qrnbdce06p98dr0wk", "ten_01m87srx2qrnbdce06p98dr0wm")
CREATED = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SPEECH_REQUESTS_V1 = sa.table(
    "speech_requests",
    *(sa.column(name) for name in ("tenant_id", "idempotency_key", "fingerprint")),
    sa.column("response", sa.LargeBinary),
    sa.column("create_time", UtcDateTime),
    sa.column("expire_time", UtcDateTime),
)


def alembic(url: str, action: str, revision: str) -> None:
    migration_support.alembic(url, MIGRATIONS_DIR, SCHEMA, action, revision)


def connect(url: str) -> sa.Engine:
    return migration_support.connect(url, SCHEMA)


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'voice.db'}"
        return
    with temporary_database() as pg:
        yield pg


async def test_stored_speech_responses_replay_after_the_upgrade(url):
    alembic(url, "upgrade", "0001")
    engine = connect(url)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(SPEECH_REQUESTS_V1),
            [
                {
                    "tenant_id": tenant,
                    "idempotency_key": "same-key",
                    "fingerprint": f"digest-{tenant}",
                    "response": tenant.encode(),
                    "create_time": CREATED,
                    "expire_time": CREATED + timedelta(hours=24),
                }
                for tenant in TENANTS
            ],
        )
    alembic(url, "upgrade", "head")

    db = Database(url, SCHEMA)
    try:
        for tenant in TENANTS:
            async with db.tenant_transaction(tenant) as tx:
                store = IdempotencyRepository(tx, tenant)
                replay = await claim(
                    store,
                    "same-key",
                    f"digest-{tenant}",
                    CREATED + timedelta(hours=1),
                    timedelta(minutes=2),
                    timedelta(hours=24),
                )
            assert replay == Replay(tenant.encode())
    finally:
        await db.dispose()

    alembic(url, "downgrade", "0001")
    with engine.begin() as connection:
        rows = connection.execute(sa.select(SPEECH_REQUESTS_V1.c.tenant_id, SPEECH_REQUESTS_V1.c.response)).all()
    engine.dispose()
    assert sorted(rows) == sorted((tenant, tenant.encode()) for tenant in TENANTS)
