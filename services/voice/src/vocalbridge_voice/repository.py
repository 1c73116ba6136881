"""Voice data access: the common library's idempotency store and billing outbox on this
schema's tables. Every tenant query filters on the repository's tenant (row-level security
enforces the same on PostgreSQL); the relay's reads run in system transactions. Never
commits: the use cases own transactions."""

from __future__ import annotations

from datetime import datetime

from vocalbridge_common.idempotency import SqlIdempotencyStore
from vocalbridge_common.outbox import OutboxRepository
from vocalbridge_common.repository import TenantRepository
from vocalbridge_voice.models import IdempotencyRow, UsageOutboxRow


class IdempotencyRepository(SqlIdempotencyStore):
    """One tenant's idempotent Transcribe and Synthesize requests (an IdempotencyStore)."""

    table = IdempotencyRow


class UsageOutboxRepository(TenantRepository):
    """One tenant's usage events for billing, written with the response they bill."""

    async def add(self, event_id: str, payload: bytes, now: datetime) -> None:
        await OutboxRepository(self.session, self.tenant_id, UsageOutboxRow).add(event_id, payload, now)
