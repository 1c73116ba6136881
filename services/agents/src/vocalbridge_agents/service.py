"""Agents use cases. Each opens one tenant transaction (the caller's tenant, from
the verified identity); repositories never commit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from vocalbridge_agents.domain import (
    ID_PREFIX,
    Agent,
    AgentConfig,
    AgentNotFound,
    AgentVersion,
    AgentVersionNotFound,
    ConcurrentModification,
    EtagMismatch,
    Page,
    agent_name,
    apply_mask,
    parse_agent_name,
    parse_version_name,
    resolve_update_mask,
    validate_config,
)
from vocalbridge_agents.repository import AgentRepository
from vocalbridge_common.context import current_tenant_id
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.errors import invalid_fields
from vocalbridge_common.ids import new_id
from vocalbridge_common.pagination import PageTokenCodec, clamp_page_size

# An update without an etag re-reads and re-applies its mask when a concurrent
# update wins the race. Each lost race means another writer succeeded, so up to
# this many simultaneous writers of one agent all get through.
UPDATE_ATTEMPTS = 5


class AgentService:
    def __init__(
        self,
        db: Database,
        page_tokens: PageTokenCodec,
        *,
        known_providers: tuple[str, ...],
        max_system_prompt_chars: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._page_tokens = page_tokens
        self._known_providers = tuple(known_providers)
        self._max_system_prompt_chars = max_system_prompt_chars
        self._clock = clock

    def _validate(self, config: AgentConfig) -> None:
        violations = validate_config(
            config, known_providers=self._known_providers, max_system_prompt_chars=self._max_system_prompt_chars
        )
        if violations:
            raise invalid_fields(violations)

    async def create_agent(self, config: AgentConfig) -> Agent:
        tenant_id = current_tenant_id()
        self._validate(config)
        now = self._clock()
        agent = Agent(id=new_id(ID_PREFIX), version=1, config=config, create_time=now, update_time=now)
        async with self._db.tenant_transaction(tenant_id) as session:
            repo = AgentRepository(session, tenant_id)
            await repo.add_agent(agent)
            await repo.add_version(AgentVersion(agent_id=agent.id, version=1, config=config, create_time=now))
        return agent

    async def get_agent(self, name: str) -> Agent:
        tenant_id = current_tenant_id()
        agent_id = parse_agent_name(name, "name")
        async with self._db.tenant_transaction(tenant_id) as session:
            agent = await AgentRepository(session, tenant_id).get_agent(agent_id)
        if agent is None:
            raise AgentNotFound(name)
        return agent

    async def list_agents(self, page_size: int, page_token: str) -> Page:
        tenant_id = current_tenant_id()
        limit = clamp_page_size(page_size)
        # The tenant is part of the query: a token is useless to another tenant.
        query = f"ListAgents/{tenant_id}"
        after_id = self._page_tokens.decode(page_token, query)
        async with self._db.tenant_transaction(tenant_id) as session:
            agents = await AgentRepository(session, tenant_id).page_agents(after_id, limit + 1)
        if len(agents) > limit:
            return Page(agents[:limit], self._page_tokens.encode(query, agents[limit - 1].id))
        return Page(agents, "")

    async def update_agent(
        self,
        name: str,
        patch: AgentConfig,
        *,
        mask_paths: Sequence[str],
        populated_paths: frozenset[str],
        etag: str,
    ) -> Agent:
        """Applies `patch` to the fields the mask names (AIP-134).

        An explicit mask may name leaves (`parameters.temperature`) or whole messages
        (`parameters`, `voice`: absent subfields are cleared). An empty mask means the
        fields populated in the request, leaf by leaf: `{"parameters": {"topP": 0.9}}`
        changes top_p and keeps the temperature.

        An update that leaves the configuration as it is returns the agent unchanged,
        with no new version and the same etag: versions record changes, and a retried
        request must not grow the history. A stale etag is refused even then.

        The whole resulting configuration is validated, not only the masked fields,
        so every stored version is one a session can run (e.g. a new primary must
        still differ from the unchanged fallback).
        """
        tenant_id = current_tenant_id()
        agent_id = parse_agent_name(name, "agent.name")
        leaves = resolve_update_mask(mask_paths) if mask_paths else populated_paths
        for _ in range(UPDATE_ATTEMPTS):
            try:
                async with self._db.tenant_transaction(tenant_id) as session:
                    repo = AgentRepository(session, tenant_id)
                    current = await repo.get_agent(agent_id)
                    if current is None:
                        raise AgentNotFound(name)
                    if etag and etag != current.etag:
                        raise EtagMismatch(name)
                    config = apply_mask(current.config, patch, leaves)
                    if config == current.config:
                        return current
                    self._validate(config)
                    now = self._clock()
                    if await repo.replace_config(agent_id, current.version, config, now):
                        updated = Agent(
                            id=agent_id,
                            version=current.version + 1,
                            config=config,
                            create_time=current.create_time,
                            update_time=now,
                        )
                        await repo.add_version(
                            AgentVersion(agent_id=agent_id, version=updated.version, config=config, create_time=now)
                        )
                        return updated
            except IntegrityError:
                pass  # the version already exists: a concurrent update won
            # A concurrent update (or delete) won the race. With an etag the client
            # asked to refuse exactly that; without one, apply the mask to the new state.
            if etag:
                raise EtagMismatch(name)
        raise ConcurrentModification(name)

    async def delete_agent(self, name: str, etag: str) -> None:
        tenant_id = current_tenant_id()
        agent_id = parse_agent_name(name, "name")
        async with self._db.tenant_transaction(tenant_id) as session:
            repo = AgentRepository(session, tenant_id)
            current = await repo.get_agent(agent_id)
            if current is None:
                raise AgentNotFound(name)
            if etag and etag != current.etag:
                raise EtagMismatch(name)
            if not await repo.mark_deleted(agent_id, current.version if etag else None, self._clock()):
                # Changed or deleted since we read it.
                raise EtagMismatch(name) if etag else AgentNotFound(name)

    async def get_agent_version(self, name: str) -> AgentVersion:
        """Also for a deleted agent: sessions pinned to a version keep working."""
        tenant_id = current_tenant_id()
        agent_id, version = parse_version_name(name)
        async with self._db.tenant_transaction(tenant_id) as session:
            repo = AgentRepository(session, tenant_id)
            found = await repo.get_version(agent_id, version) if version is not None else None
            if found is None:
                if await repo.agent_ever_existed(agent_id):
                    raise AgentVersionNotFound(name)
                raise AgentNotFound(agent_name(agent_id))
        return found

    async def list_agent_versions(self, parent: str, page_size: int, page_token: str) -> Page:
        tenant_id = current_tenant_id()
        agent_id = parse_agent_name(parent, "parent")
        limit = clamp_page_size(page_size)
        query = f"ListAgentVersions/{tenant_id}/{agent_id}"
        before_version = self._page_tokens.decode(page_token, query)
        async with self._db.tenant_transaction(tenant_id) as session:
            repo = AgentRepository(session, tenant_id)
            versions = await repo.page_versions(agent_id, before_version, limit + 1)
            # Every agent has version 1, so an empty first page means no such agent here.
            if not versions and not await repo.agent_ever_existed(agent_id):
                raise AgentNotFound(parent)
        if len(versions) > limit:
            return Page(versions[:limit], self._page_tokens.encode(query, versions[limit - 1].version))
        return Page(versions, "")
