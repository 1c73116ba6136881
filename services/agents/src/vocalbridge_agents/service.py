"""Agents use cases. Each takes the tenant it acts for and opens one transaction
of that tenant; repositories never commit. Domain values in and out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from vocalbridge_agents.domain import (
    ID_PREFIX,
    Agent,
    AgentConfig,
    AgentVersion,
    AgentVersionNotFound,
    ConcurrentModification,
    EtagMismatch,
    agent_name,
    apply_mask,
    parse_agent_name,
    parse_version_name,
    resolve_update_mask,
    validate_config,
)
from vocalbridge_agents.repository import AgentRepository
from vocalbridge_agents.voices_client import InstalledVoices
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.errors import AgentNotFound, invalid_fields
from vocalbridge_common.ids import new_id
from vocalbridge_common.pagination import Page, Paginator
from vocalbridge_common.voices import VoiceCatalogue

# An update without an etag re-reads and re-applies its mask when a concurrent
# update wins the race. Each lost race means another writer succeeded, so up to
# this many simultaneous writers of one agent all get through.
UPDATE_ATTEMPTS = 5


class AgentService:
    def __init__(
        self,
        db: Database,
        paginator: Paginator,
        *,
        known_providers: tuple[str, ...],
        max_system_prompt_chars: int,
        voices: InstalledVoices | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._paginator = paginator
        self._known_providers = tuple(known_providers)
        self._max_system_prompt_chars = max_system_prompt_chars
        # None: voice names are checked for their form only (no voice service configured).
        self._voices = voices or InstalledVoices(None)
        self._clock = clock

    def _validate(self, config: AgentConfig, voices: VoiceCatalogue | None) -> None:
        violations = validate_config(
            config,
            known_providers=self._known_providers,
            max_system_prompt_chars=self._max_system_prompt_chars,
            voices=voices,
        )
        if violations:
            raise invalid_fields(violations)

    async def create_agent(self, tenant_id: str, config: AgentConfig) -> Agent:
        self._validate(config, await self._voices.catalogue())
        now = self._clock()
        agent = Agent(id=new_id(ID_PREFIX), version=1, config=config, create_time=now, update_time=now)
        async with self._db.tenant_transaction(tenant_id) as session:
            repo = AgentRepository(session, tenant_id)
            await repo.add_agent(agent)
            await repo.add_version(AgentVersion(agent_id=agent.id, version=1, config=config, create_time=now))
        return agent

    async def get_agent(self, tenant_id: str, name: str) -> Agent:
        agent_id = parse_agent_name(name, "name")
        async with self._db.tenant_transaction(tenant_id) as session:
            agent = await AgentRepository(session, tenant_id).get_agent(agent_id)
        if agent is None:
            raise AgentNotFound(name)
        return agent

    async def list_agents(self, tenant_id: str, page_size: int, page_token: str) -> Page[Agent]:
        # The tenant is part of the query: a token is useless to another tenant.
        request = self._paginator.request(f"ListAgents/{tenant_id}", page_size, page_token)
        async with self._db.tenant_transaction(tenant_id) as session:
            agents = await AgentRepository(session, tenant_id).page_agents(request.after_str(), request.fetch)
        return self._paginator.page(request, agents, key=lambda agent: agent.id)

    async def update_agent(
        self,
        tenant_id: str,
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
        agent_id = parse_agent_name(name, "agent.name")
        leaves = resolve_update_mask(mask_paths) if mask_paths else populated_paths
        # Fetched before the transaction: no call to another service while it holds a row.
        voices = await self._voices.catalogue()
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
                    self._validate(config, voices)
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

    async def delete_agent(self, tenant_id: str, name: str, etag: str) -> None:
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

    async def get_agent_version(self, tenant_id: str, name: str) -> AgentVersion:
        """Also for a deleted agent: sessions pinned to a version keep working."""
        agent_id, version = parse_version_name(name)
        async with self._db.tenant_transaction(tenant_id) as session:
            repo = AgentRepository(session, tenant_id)
            found = await repo.get_version(agent_id, version) if version is not None else None
            if found is None:
                if await repo.agent_ever_existed(agent_id):
                    raise AgentVersionNotFound(name)
                raise AgentNotFound(agent_name(agent_id))
        return found

    async def list_agent_versions(
        self, tenant_id: str, parent: str, page_size: int, page_token: str
    ) -> Page[AgentVersion]:
        agent_id = parse_agent_name(parent, "parent")
        request = self._paginator.request(f"ListAgentVersions/{tenant_id}/{agent_id}", page_size, page_token)
        async with self._db.tenant_transaction(tenant_id) as session:
            repo = AgentRepository(session, tenant_id)
            versions = await repo.page_versions(agent_id, request.after_int(), request.fetch)
            # Every agent has version 1, so an empty first page means no such agent here.
            if not versions and not await repo.agent_ever_existed(agent_id):
                raise AgentNotFound(parent)
        return self._paginator.page(request, versions, key=lambda version: version.version)
