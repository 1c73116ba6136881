"""The base of every repository: one transaction's session and who it acts for.

Repositories read and write with SQLAlchemy and `flush()`; they never commit or
roll back. The service layer opens the transaction (`Database.tenant_transaction`
or `Database.system_transaction`) and hands its session to the repositories it
needs, so a use case commits all of its writes or none.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession


class TenantRepository:
    """A repository for one tenant's rows. Every query it writes filters on
    `self.tenant_id`; row-level security (PostgreSQL) enforces the same underneath."""

    def __init__(self, session: AsyncSession, tenant_id: str) -> None:
        if not tenant_id:
            raise ValueError(f"{type(self).__name__} needs a tenant")
        self.session = session
        self.tenant_id = tenant_id


class SystemRepository:
    """A repository for the few cross-tenant reads and writes (an API-key lookup before
    the tenant is known, the outbox relay), used only inside a system transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
