"""Agents data access: rows in, domain values out. Every query filters on the
repository's tenant (row-level security enforces the same on PostgreSQL). Never
commits: the service layer owns transactions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from vocalbridge_agents.domain import Agent, AgentConfig, AgentVersion, ModelParameters, VoiceSettings
from vocalbridge_agents.models import AgentConfigColumns, AgentRow, AgentVersionRow
from vocalbridge_common.repository import TenantRepository


def _config_values(config: AgentConfig) -> dict[str, Any]:
    """The configuration columns of `config` (the one domain → row mapping)."""
    return {
        "display_name": config.display_name,
        "system_prompt": config.system_prompt,
        "primary_provider": config.primary_provider,
        "fallback_provider": config.fallback_provider,
        "model": config.model,
        "temperature": config.parameters.temperature,
        "top_p": config.parameters.top_p,
        "max_output_tokens": config.parameters.max_output_tokens,
        "voice_name": config.voice.voice,
        "voice_words_per_minute": config.voice.words_per_minute,
    }


def _config_of(row: AgentConfigColumns) -> AgentConfig:
    """The configuration held by an agent row or a version row (the one row → domain mapping)."""
    return AgentConfig(
        display_name=row.display_name,
        system_prompt=row.system_prompt,
        primary_provider=row.primary_provider,
        fallback_provider=row.fallback_provider,
        model=row.model,
        parameters=ModelParameters(
            temperature=row.temperature, top_p=row.top_p, max_output_tokens=row.max_output_tokens
        ),
        voice=VoiceSettings(voice=row.voice_name, words_per_minute=row.voice_words_per_minute),
    )


def _agent_of(row: AgentRow) -> Agent:
    return Agent(
        id=row.id, version=row.version, config=_config_of(row), create_time=row.create_time, update_time=row.update_time
    )


def _version_of(row: AgentVersionRow) -> AgentVersion:
    return AgentVersion(agent_id=row.agent_id, version=row.version, config=_config_of(row), create_time=row.create_time)


class AgentRepository(TenantRepository):
    """One tenant's agents and their versions."""

    # -- agents -------------------------------------------------------------

    async def add_agent(self, agent: Agent) -> None:
        await self.session.execute(
            insert(AgentRow).values(
                id=agent.id,
                tenant_id=self.tenant_id,
                version=agent.version,
                create_time=agent.create_time,
                update_time=agent.update_time,
                **_config_values(agent.config),
            )
        )

    async def get_agent(self, agent_id: str) -> Agent | None:
        """The agent unless it is deleted."""
        query = select(AgentRow).where(
            AgentRow.tenant_id == self.tenant_id, AgentRow.id == agent_id, AgentRow.delete_time.is_(None)
        )
        row = (await self.session.scalars(query)).one_or_none()
        return _agent_of(row) if row else None

    async def agent_ever_existed(self, agent_id: str) -> bool:
        """Also true for a deleted agent, whose versions stay readable."""
        query = select(AgentRow.id).where(AgentRow.tenant_id == self.tenant_id, AgentRow.id == agent_id)
        return (await self.session.scalar(query)) is not None

    async def page_agents(self, after_id: str | None, limit: int) -> list[Agent]:
        """Live agents oldest first (ids sort by creation time), after `after_id`."""
        query = (
            select(AgentRow)
            .where(AgentRow.tenant_id == self.tenant_id, AgentRow.delete_time.is_(None))
            .order_by(AgentRow.id)
            .limit(limit)
        )
        if after_id is not None:
            query = query.where(AgentRow.id > after_id)
        return [_agent_of(row) for row in await self.session.scalars(query)]

    async def replace_config(self, agent_id: str, expected_version: int, config: AgentConfig, now: datetime) -> bool:
        """Moves the agent from `expected_version` to the next one. False when the agent
        is no longer at that version (a concurrent update won) or was deleted: the
        compare-and-set that keeps two updates from both succeeding."""
        changed = await self.session.scalar(
            update(AgentRow)
            .where(
                AgentRow.tenant_id == self.tenant_id,
                AgentRow.id == agent_id,
                AgentRow.version == expected_version,
                AgentRow.delete_time.is_(None),
            )
            .values(version=expected_version + 1, update_time=now, **_config_values(config))
            .returning(AgentRow.id)
            .execution_options(synchronize_session=False)
        )
        return changed is not None

    async def mark_deleted(self, agent_id: str, expected_version: int | None, now: datetime) -> bool:
        """Soft-deletes the live agent (at `expected_version`, if given). False if there was none."""
        query = update(AgentRow).where(
            AgentRow.tenant_id == self.tenant_id, AgentRow.id == agent_id, AgentRow.delete_time.is_(None)
        )
        if expected_version is not None:
            query = query.where(AgentRow.version == expected_version)
        deleted = await self.session.scalar(
            query.values(delete_time=now).returning(AgentRow.id).execution_options(synchronize_session=False)
        )
        return deleted is not None

    # -- versions -------------------------------------------------------------

    async def add_version(self, version: AgentVersion) -> None:
        await self.session.execute(
            insert(AgentVersionRow).values(
                agent_id=version.agent_id,
                version=version.version,
                tenant_id=self.tenant_id,
                create_time=version.create_time,
                **_config_values(version.config),
            )
        )

    async def get_version(self, agent_id: str, version: int) -> AgentVersion | None:
        query = select(AgentVersionRow).where(
            AgentVersionRow.tenant_id == self.tenant_id,
            AgentVersionRow.agent_id == agent_id,
            AgentVersionRow.version == version,
        )
        row = (await self.session.scalars(query)).one_or_none()
        return _version_of(row) if row else None

    async def page_versions(self, agent_id: str, before_version: int | None, limit: int) -> list[AgentVersion]:
        """An agent's versions newest first, older than `before_version`."""
        query = (
            select(AgentVersionRow)
            .where(AgentVersionRow.tenant_id == self.tenant_id, AgentVersionRow.agent_id == agent_id)
            .order_by(AgentVersionRow.version.desc())
            .limit(limit)
        )
        if before_version is not None:
            query = query.where(AgentVersionRow.version < before_version)
        return [_version_of(row) for row in await self.session.scalars(query)]
